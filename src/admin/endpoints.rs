//! Endpoints: list, show, create, update, enable/disable, delete, rotate, ping, replay.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{types::ToSql, Client, Row};
use uuid::Uuid;

use super::{Access, Error, Result};
use crate::delivery::redact;

const COLUMNS: &str =
    "e.id, e.url, e.event_types, e.tenant, e.filter, e.headers, e.enabled, e.disabled_reason,
    e.description, e.rate_limit, postbox.rfc3339(e.failing_since) as failing_since,
    postbox.rfc3339(e.previous_secret_expires_at) as previous_secret_expires_at,
    postbox.rfc3339(e.created_at) as created_at, postbox.rfc3339(e.updated_at) as updated_at,
    postbox.patterns_matching_nothing(e.event_types) as unmatched_patterns";

/// An endpoint as operators see it: never with its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub tenant: Option<String>,
    pub filter: Option<Value>,
    pub headers: Value,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    /// Requests per second to this endpoint across all relays; `None`: no limit.
    pub rate_limit: Option<i32>,
    /// Start of the current run of failed attempts.
    pub failing_since: Option<String>,
    /// While set, a rotated-out secret still signs alongside the current one.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Patterns (`ordr.*`) that match no registered event type: a typo
    /// subscribes to nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_patterns: Vec<String>,
    /// Recent attempts at a glance; filled by `list` and `get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Attempts for deliveries created in the last 24 hours.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub attempts_24h: i64,
    pub succeeded_24h: i64,
    pub last_failure_at: Option<String>,
    /// The error, or `HTTP <status>`, of the most recent failed attempt.
    pub last_failure: Option<String>,
}

impl TryFrom<&Row> for Endpoint {
    type Error = tokio_postgres::Error;

    fn try_from(row: &Row) -> std::result::Result<Self, Self::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            event_types: row.try_get("event_types")?,
            tenant: row.try_get("tenant")?,
            filter: row.try_get("filter")?,
            // Credentials are written, never read back (the relay reads them itself).
            headers: redact::mask_credentials(row.try_get("headers")?),
            enabled: row.try_get("enabled")?,
            disabled_reason: row.try_get("disabled_reason")?,
            description: row.try_get("description")?,
            rate_limit: row.try_get("rate_limit")?,
            failing_since: row.try_get("failing_since")?,
            previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            unmatched_patterns: row.try_get("unmatched_patterns")?,
            health: None,
        })
    }
}

/// What creating an endpoint takes. Unset fields get the SQL defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default)]
    pub headers: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    /// Requests per second across all relays; absent: no limit.
    #[serde(default)]
    pub rate_limit: Option<i32>,
    /// `whsec_…`; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A change to an endpoint: only the fields given change. `tenant`, `filter`,
/// `description` and `rate_limit` take JSON `null` to clear them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default, with = "double_option")]
    pub tenant: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub filter: Option<Option<Value>>,
    #[serde(default)]
    pub headers: Option<Value>,
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub rate_limit: Option<Option<i32>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A new endpoint and its secret, which is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub secret: String,
}

/// The endpoints `access` may see: a tenant's own, never the global ones.
pub async fn list(client: &Client, access: &Access) -> Result<Vec<Endpoint>> {
    let rows = client
        .query(
            &format!(
                "select {COLUMNS} from postbox.endpoints e where ($1::text is null or e.tenant = $1)
                 order by e.created_at, e.id"
            ),
            &[&access.tenant()],
        )
        .await?;
    let endpoints = rows.iter().map(Endpoint::try_from).collect::<std::result::Result<_, _>>()?;
    with_health(client, endpoints).await
}

/// One endpoint; one out of `access`'s scope is missing, as far as the caller can tell.
pub async fn get(client: &Client, access: &Access, id: Uuid) -> Result<Endpoint> {
    let row = client
        .query_opt(
            &format!("select {COLUMNS} from postbox.endpoints e where e.id = $1 and ($2::text is null or e.tenant = $2)"),
            &[&id, &access.tenant()],
        )
        .await?;
    let endpoint = row.as_ref().map(Endpoint::try_from).transpose()?.ok_or_else(|| not_found(id))?;
    one_with_health(client, endpoint).await
}

/// Fills in each endpoint's [`Health`] (deliveries_endpoint_idx, then attempts_delivery_idx).
async fn with_health(client: &Client, mut endpoints: Vec<Endpoint>) -> Result<Vec<Endpoint>> {
    let ids: Vec<Uuid> = endpoints.iter().map(|e| e.id).collect();
    let rows = client
        .query(
            "select ep.id, recent.attempts, recent.succeeded,
                    postbox.rfc3339(failure.started_at) as last_failure_at, failure.error as last_failure
             from unnest($1::uuid[]) as ep (id)
             cross join lateral (
                 select count(a.id) as attempts,
                        count(a.id) filter (where a.response_status between 200 and 299) as succeeded
                 from postbox.deliveries d join postbox.attempts a on a.delivery_id = d.id
                 where d.endpoint_id = ep.id and d.created_at > now() - interval '24 hours'
                   -- implied (an attempt starts after its delivery is made); it
                   -- lets the planner skip older days of attempts
                   and a.started_at > now() - interval '24 hours') recent
             left join lateral (
                 select a.started_at, coalesce(a.error, 'HTTP ' || a.response_status) as error
                 from postbox.deliveries d join postbox.attempts a on a.delivery_id = d.id
                 where d.endpoint_id = ep.id and d.created_at > now() - interval '24 hours'
                   and a.started_at > now() - interval '24 hours'
                   and (a.response_status is null or a.response_status not between 200 and 299)
                 order by a.started_at desc limit 1) failure on true",
            &[&ids],
        )
        .await?;
    let mut health: HashMap<Uuid, Health> = rows
        .iter()
        .map(|row| {
            let health = Health {
                attempts_24h: row.try_get("attempts")?,
                succeeded_24h: row.try_get("succeeded")?,
                last_failure_at: row.try_get("last_failure_at")?,
                last_failure: row.try_get("last_failure")?,
            };
            Ok((row.try_get("id")?, health))
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
    for endpoint in &mut endpoints {
        endpoint.health = health.remove(&endpoint.id);
    }
    Ok(endpoints)
}

/// Creates an endpoint; a tenant's is always its own (another tenant is refused).
pub async fn create(client: &Client, access: &Access, new: &NewEndpoint) -> Result<Created> {
    let tenant = new.tenant.as_deref().or(access.tenant());
    access.check_tenant(tenant)?;
    let event_types = new.event_types.clone().unwrap_or_else(|| vec!["*".to_owned()]);
    let headers = new.headers.clone().unwrap_or_else(|| Value::Object(Default::default()));
    let row = client
        .query_one(
            &format!(
                "insert into postbox.endpoints as e
                     (url, event_types, tenant, filter, headers, description, secret, rate_limit)
                 values ($1, $2, $3, $4, $5, $6, coalesce($7, postbox.generate_secret()), $8)
                 returning {COLUMNS}, e.secret"
            ),
            &[
                &new.url,
                &event_types,
                &tenant,
                &new.filter,
                &headers,
                &new.description,
                &new.secret,
                &new.rate_limit,
            ],
        )
        .await?;
    let endpoint = one_with_health(client, Endpoint::try_from(&row)?).await?;
    Ok(Created { endpoint, secret: row.try_get("secret")? })
}

pub async fn update(client: &Client, access: &Access, id: Uuid, change: &EndpointUpdate) -> Result<Endpoint> {
    if let Some(tenant) = &change.tenant {
        access.check_tenant(tenant.as_deref())?;
    }
    if let (Access::Tenant { .. }, Some(_), None) = (access, &change.url, &change.headers) {
        refuse_moving_hidden_credentials(client, access, id).await?;
    }
    let disabled_by = match access {
        Access::Admin => "disabled by an operator",
        Access::Tenant { .. } => "disabled from the tenant portal",
    };
    // Each nullable column gets a "given" flag, so that null can clear it.
    let row = client
        .query_opt(
            &format!(
                "update postbox.endpoints as e set
                    url = coalesce($2, e.url),
                    event_types = coalesce($3, e.event_types),
                    tenant = case when $4 then $5 else e.tenant end,
                    filter = case when $6 then $7 else e.filter end,
                    headers = coalesce($8, e.headers),
                    description = case when $9 then $10 else e.description end,
                    enabled = coalesce($11, e.enabled),
                    disabled_reason = case when $11 = false then $12 else e.disabled_reason end,
                    rate_limit = case when $14 then $15 else e.rate_limit end
                 where e.id = $1 and ($13::text is null or e.tenant = $13)
                 returning {COLUMNS}"
            ),
            &[
                &id,
                &change.url,
                &change.event_types,
                &change.tenant.is_some(),
                &change.tenant.clone().flatten(),
                &change.filter.is_some(),
                &change.filter.clone().flatten(),
                &change.headers,
                &change.description.is_some(),
                &change.description.clone().flatten(),
                &change.enabled,
                &disabled_by,
                &access.tenant(),
                &change.rate_limit.is_some(),
                &change.rate_limit.flatten(),
            ],
        )
        .await?;
    let endpoint = row.as_ref().map(Endpoint::try_from).transpose()?.ok_or_else(|| not_found(id))?;
    one_with_health(client, endpoint).await
}

/// A tenant sees credential headers masked (an operator may have set them,
/// for a gateway in front of the tenant's receiver): it may not point them at
/// another URL without giving the headers anew.
async fn refuse_moving_hidden_credentials(client: &Client, access: &Access, id: Uuid) -> Result<()> {
    let row = client
        .query_opt(
            "select e.headers from postbox.endpoints e where e.id = $1 and ($2::text is null or e.tenant = $2)",
            &[&id, &access.tenant()],
        )
        .await?;
    let headers: Value = match row {
        Some(row) => row.try_get("headers")?,
        None => return Err(not_found(id)),
    };
    let hidden: Vec<&String> = headers
        .as_object()
        .map(|map| map.keys().filter(|name| redact::is_credential(name)).collect())
        .unwrap_or_default();
    if hidden.is_empty() {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "this endpoint sends credentials you cannot see ({}); to change its URL, give its headers anew in the same request",
        hidden.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", ")
    )))
}

/// `endpoint` with its recent attempts, as `list` and `get` show it.
async fn one_with_health(client: &Client, endpoint: Endpoint) -> Result<Endpoint> {
    let id = endpoint.id;
    with_health(client, vec![endpoint]).await?.pop().ok_or_else(|| not_found(id))
}

pub async fn set_enabled(client: &Client, access: &Access, id: Uuid, enabled: bool) -> Result<Endpoint> {
    update(client, access, id, &EndpointUpdate { enabled: Some(enabled), ..Default::default() }).await
}

pub async fn delete(client: &Client, access: &Access, id: Uuid) -> Result<()> {
    call_in_scope(client, access, id, "postbox.unsubscribe(e.id)", &[]).await?;
    Ok(())
}

/// The new secret; the old one signs alongside it for 24 hours.
pub async fn rotate_secret(client: &Client, access: &Access, id: Uuid) -> Result<String> {
    Ok(call_in_scope(client, access, id, "postbox.rotate_secret(e.id)", &[]).await?.try_get(0)?)
}

/// Sends a `postbox.ping` event to this endpoint only; returns its event id.
pub async fn ping(client: &Client, access: &Access, id: Uuid) -> Result<Uuid> {
    Ok(call_in_scope(client, access, id, "postbox.ping(e.id)", &[]).await?.try_get(0)?)
}

/// Re-sends every matching event since `since`: a duration back from now
/// (`24h`, `30m`) or a timestamp (`2026-11-20T00:00:00Z`). Returns how many.
pub async fn replay(client: &Client, access: &Access, id: Uuid, since: &str) -> Result<i64> {
    let since = super::since::resolve(client, since).await?;
    let call = "postbox.replay(e.id, $3::text::timestamptz)";
    Ok(call_in_scope(client, access, id, call, &[&since]).await?.try_get(0)?)
}

/// Re-sends this endpoint's failed deliveries created since `since` (as
/// [`super::since::resolve`] reads it), one more attempt each. Returns how many.
pub async fn recover(client: &Client, access: &Access, id: Uuid, since: &str) -> Result<i32> {
    let since = super::since::resolve(client, since).await?;
    let call = "postbox.recover(e.id, $3::text::timestamptz)";
    Ok(call_in_scope(client, access, id, call, &[&since]).await?.try_get(0)?)
}

/// Runs `call`, an SQL function of the endpoint's `e.id` (and `$3`… from
/// `extra`), on one endpoint in `access`'s scope: checked in the same
/// statement, so that the scope cannot change in between. An endpoint out of
/// scope is missing, with the same answer.
async fn call_in_scope(
    client: &Client,
    access: &Access,
    id: Uuid,
    call: &str,
    extra: &[&(dyn ToSql + Sync)],
) -> Result<Row> {
    let tenant = access.tenant();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &tenant];
    params.extend_from_slice(extra);
    client
        .query_opt(
            &format!(
                "select {call} from postbox.endpoints e where e.id = $1 and ($2::text is null or e.tenant = $2)"
            ),
            &params,
        )
        .await?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound(format!("no endpoint with id {id}"))
}

/// `Option<Option<T>>` that tells an absent field from an explicit `null`.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(de).map(Some)
    }

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(ser),
            None => ser.serialize_none(),
        }
    }
}
