//! Deliveries and their attempts: list with filters, show, redeliver.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{types::ToSql, Client, Row};
use uuid::Uuid;

use super::{Access, Error, Result};
use crate::delivery::{redact, webhook};

const COLUMNS: &str =
    "d.id, d.event_id, d.endpoint_id, e.url as endpoint_url, o.event_type, o.tenant, d.status,
    d.attempt_count, postbox.rfc3339(d.next_attempt_at) as next_attempt_at, d.last_error,
    postbox.rfc3339(d.created_at) as created_at, postbox.rfc3339(d.updated_at) as updated_at,
    case when d.status <> 'pending' then null
         when d.held then 'waiting: behind an earlier delivery of ordering key ' || d.ordering_key
                          || '; sent once that one succeeds, fails or is cancelled'
         when not e.enabled then 'waiting: endpoint disabled (' || coalesce(e.disabled_reason, 'paused by hand')
                                 || '); enable it to send'
         when d.leased_until > now() then 'in flight: attempt ' || d.attempt_count || ' is being sent'
         when d.next_attempt_at > now() then 'waiting: attempt ' || (d.attempt_count + 1) || ' at '
                                             || postbox.rfc3339(d.next_attempt_at)
                                             || coalesce(' after ' || d.last_error, '')
         when e.rate_limit is not null then 'due now: waiting for a relay with a free request slot, within the endpoint''s rate limit of '
                                             || e.rate_limit || ' requests/s'
         else 'due now: waiting for a relay with a free request slot' end as waiting";

const FROM: &str = "from postbox.deliveries d
    join postbox.endpoints e on e.id = d.endpoint_id
    join postbox.outbox o on o.event_id = d.event_id";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub endpoint_url: String,
    pub event_type: String,
    pub tenant: Option<String>,
    pub status: String,
    pub attempt_count: i32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Why a pending delivery is not being sent right now, in words; `None`
    /// once it has ended.
    pub waiting: Option<String>,
}

impl TryFrom<&Row> for Delivery {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            endpoint_id: row.try_get("endpoint_id")?,
            endpoint_url: row.try_get("endpoint_url")?,
            event_type: row.try_get("event_type")?,
            tenant: row.try_get("tenant")?,
            status: row.try_get("status")?,
            attempt_count: row.try_get("attempt_count")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            waiting: row.try_get("waiting")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub attempt_number: i32,
    pub started_at: String,
    pub duration_ms: i32,
    pub request_headers: Option<Value>,
    pub response_status: Option<i32>,
    pub response_headers: Option<Value>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// A delivery with the event it carries and every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    /// `null` when nested too deeply to parse here (more than 128 levels);
    /// `request_body` holds it either way.
    pub payload: Value,
    /// The request body every attempt sent (its headers are on each attempt).
    pub request_body: String,
    pub attempts: Vec<Attempt>,
}

/// Filters for [`list`]; all optional. Newest first; `before` (the id of the
/// last delivery of a page) continues with the ones after it in that order.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub endpoint_id: Option<Uuid>,
    /// The event's id: what a receiver saw as `webhook-id`.
    pub event_id: Option<Uuid>,
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub tenant: Option<String>,
    pub since: Option<String>,
    pub before: Option<Uuid>,
    pub limit: Option<i64>,
}

pub const MAX_LIMIT: i64 = 1000;

/// Deliveries `access` may see (a tenant's: those of its own endpoints), newest first.
pub async fn list(client: &Client, access: &Access, filter: &Filter) -> Result<Vec<Delivery>> {
    if let Some(status) = &filter.status {
        if !["pending", "succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown status {status:?}: expected pending, succeeded, failed or cancelled"
            )));
        }
    }
    let since = match &filter.since {
        Some(since) => Some(super::since::resolve(client, since).await?),
        None => None,
    };
    let limit = filter.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::Invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let tenant = access.tenant();
    let candidates: [(&str, Option<&(dyn ToSql + Sync)>); 8] = [
        ("e.tenant = $", tenant.as_ref().map(|v| v as _)),
        ("d.endpoint_id = $", filter.endpoint_id.as_ref().map(|v| v as _)),
        ("d.event_id = $", filter.event_id.as_ref().map(|v| v as _)),
        ("d.status = $", filter.status.as_ref().map(|v| v as _)),
        ("o.event_type = $", filter.event_type.as_ref().map(|v| v as _)),
        ("o.tenant = $", filter.tenant.as_ref().map(|v| v as _)),
        ("d.created_at >= $::text::timestamptz", since.as_ref().map(|v| v as _)),
        // Keyset paging: deliveries of one dispatch batch share created_at.
        (
            "(d.created_at, d.id) < (select c.created_at, c.id from postbox.deliveries c where c.id = $)",
            filter.before.as_ref().map(|v| v as _),
        ),
    ];
    if let Some(before) = filter.before {
        // Another tenant's delivery as the cursor would tell when it was
        // made: out of scope, it is as unknown as a missing id (no rows).
        if !in_scope(client, access, before).await? {
            return Ok(Vec::new());
        }
    }
    let mut conditions = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for (template, value) in candidates {
        if let Some(value) = value {
            params.push(value);
            conditions.push(template.replace('$', &format!("${}", params.len())));
        }
    }
    params.push(&limit);
    let where_clause =
        if conditions.is_empty() { String::new() } else { format!("where {}", conditions.join(" and ")) };
    let query = format!(
        "select {COLUMNS} {FROM} {where_clause} order by d.created_at desc, d.id desc limit ${}",
        params.len()
    );
    let rows = client.query(&query, &params).await?;
    Ok(rows.iter().map(Delivery::try_from).collect::<std::result::Result<_, _>>()?)
}

/// Whether delivery `id` exists and `access` may see it.
async fn in_scope(client: &Client, access: &Access, id: Uuid) -> Result<bool> {
    let row = client
        .query_opt(
            "select 1 from postbox.deliveries d join postbox.endpoints e on e.id = d.endpoint_id
             where d.id = $1 and ($2::text is null or e.tenant = $2)",
            &[&id, &access.tenant()],
        )
        .await?;
    Ok(row.is_some())
}

/// A delivery with its event and attempts; one out of `access`'s scope is
/// missing, as far as the caller can tell.
pub async fn get(client: &Client, access: &Access, id: Uuid) -> Result<DeliveryDetail> {
    let row = client
        .query_opt(
            &format!(
                "select {COLUMNS}, o.payload::text as payload_text, o.previous::text as previous,
                        o.actor::text as actor, coalesce(postbox.rfc3339(o.occurred_at), o.occurred_at::text) as occurred_at
                 {FROM} where d.id = $1 and ($2::text is null or e.tenant = $2)"
            ),
            &[&id, &access.tenant()],
        )
        .await?
        .ok_or_else(|| Error::NotFound(format!("no delivery with id {id}")))?;
    let attempts = client
        .query(
            "select attempt_number, postbox.rfc3339(started_at) as started_at, duration_ms, request_headers,
                    floor(extract(epoch from started_at))::int8 as started_unix,
                    response_status, response_headers, response_body, error
             from postbox.attempts where delivery_id = $1 order by attempt_number, id",
            &[&id],
        )
        .await?;
    let delivery = Delivery::try_from(&row)?;
    let attempts = attempts
        .iter()
        .map(|r| {
            let attempt_number = r.try_get("attempt_number")?;
            let sent = webhook::SentWith {
                delivery_id: delivery.id,
                event_id: delivery.event_id,
                event_type: &delivery.event_type,
                attempt_number,
                started_unix: r.try_get("started_unix")?,
            };
            Ok(Attempt {
                attempt_number,
                started_at: r.try_get("started_at")?,
                duration_ms: r.try_get("duration_ms")?,
                // Masked again for rows from before credentials were masked
                // when recorded.
                request_headers: r
                    .try_get::<_, Option<Value>>("request_headers")?
                    .map(|stored| redact::mask_credentials(webhook::sent_headers(stored, &sent))),
                response_status: r.try_get("response_status")?,
                response_headers: r.try_get("response_headers")?,
                response_body: r.try_get("response_body")?,
                error: r.try_get("error")?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
    let payload_text: &str = row.try_get("payload_text")?;
    // Parsed here as text: a payload deeper than serde_json's recursion limit
    // must not make its delivery impossible to inspect.
    let payload = serde_json::from_str(payload_text).unwrap_or(Value::Null);
    let request_body = webhook::envelope(
        &delivery.event_type,
        row.try_get("occurred_at")?,
        payload_text,
        row.try_get("previous")?,
        row.try_get("actor")?,
    );
    Ok(DeliveryDetail { delivery, payload, request_body, attempts })
}

/// One more attempt now, for a delivery in `access`'s scope (checked in the
/// same statement; one out of scope is missing, with the same answer).
pub async fn redeliver(client: &Client, access: &Access, id: Uuid) -> Result<()> {
    client
        .query_opt(
            "select postbox.redeliver(d.id) from postbox.deliveries d join postbox.endpoints e on e.id = d.endpoint_id
             where d.id = $1 and ($2::text is null or e.tenant = $2)",
            &[&id, &access.tenant()],
        )
        .await?
        .ok_or_else(|| Error::NotFound(format!("no delivery with id {id}")))?;
    Ok(())
}
