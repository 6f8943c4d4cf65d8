//! The relay's health at a glance: backlog, throughput, failing endpoints.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{AdminAccess, Result};
use crate::metrics::Backlog;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub undispatched_events: i64,
    pub oldest_undispatched_age_seconds: f64,
    pub pending_deliveries: i64,
    pub due_deliveries: i64,
    /// How far past due the most overdue delivery is.
    pub delivery_lag_seconds: f64,
    pub last_minute: Throughput,
    pub endpoints: i64,
    pub failing_endpoints: Vec<EndpointTrouble>,
    pub disabled_endpoints: Vec<EndpointTrouble>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    pub attempts: i64,
    /// Attempts that succeeded (their deliveries did).
    pub succeeded: i64,
    /// Attempts that failed: `retrying` of them will be attempted again,
    /// `deliveries_failed` ended their delivery as `failed`.
    pub failed: i64,
    pub retrying: i64,
    pub deliveries_failed: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointTrouble {
    pub id: Uuid,
    pub url: String,
    /// Why it is disabled, or since when it has been failing.
    pub detail: String,
}

const BACKLOG: &str = "select
    (select count(*) from postbox.outbox where dispatched_at is null) as undispatched,
    coalesce((select extract(epoch from now() - occurred_at)::float8 from postbox.outbox
              where dispatched_at is null order by id limit 1), 0) as oldest_undispatched,
    (select count(*) from postbox.deliveries where status = 'pending') as pending,
    (select count(*) from postbox.deliveries where status = 'pending' and next_attempt_at <= now()) as due,
    coalesce((select extract(epoch from now() - min(next_attempt_at))::float8 from postbox.deliveries
              where status = 'pending' and next_attempt_at <= now()), 0) as lag,
    (select count(*) from postbox.endpoints where not enabled) as disabled";

/// The gauges `/metrics` shows.
pub async fn backlog(client: &Client) -> Result<Backlog> {
    let row = client.query_one(BACKLOG, &[]).await?;
    Ok(Backlog {
        undispatched_events: row.try_get("undispatched")?,
        pending_deliveries: row.try_get("pending")?,
        oldest_undispatched_age: row.try_get("oldest_undispatched")?,
        delivery_lag: row.try_get("lag")?,
        disabled_endpoints: row.try_get("disabled")?,
    })
}

pub async fn status(client: &Client, _: AdminAccess) -> Result<Status> {
    let backlog = client.query_one(BACKLOG, &[]).await?;
    let minute = client
        .query_one(
            "select count(*) as attempts,
                    count(*) filter (where a.response_status between 200 and 299) as succeeded,
                    count(*) filter (where not coalesce(a.response_status between 200 and 299, false)
                                       and d.status = 'failed' and d.attempt_count = a.attempt_number)
                        as deliveries_failed
             from postbox.attempts a left join postbox.deliveries d on d.id = a.delivery_id
             where a.started_at > now() - interval '1 minute'",
            &[],
        )
        .await?;
    let endpoints: i64 = client.query_one("select count(*) from postbox.endpoints", &[]).await?.get(0);
    let troubles = client
        .query(
            "select id, url, enabled,
                    coalesce(disabled_reason, 'failing since ' || postbox.rfc3339(failing_since), 'disabled') as detail
             from postbox.endpoints
             where not enabled or failing_since is not null
             order by enabled, failing_since nulls last, url
             limit 50",
            &[],
        )
        .await?;
    let (mut disabled, mut failing) = (Vec::new(), Vec::new());
    for row in &troubles {
        let trouble = EndpointTrouble {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            detail: row.try_get("detail")?,
        };
        if row.try_get::<_, bool>("enabled")? {
            failing.push(trouble)
        } else {
            disabled.push(trouble)
        }
    }
    let attempts: i64 = minute.try_get("attempts")?;
    let succeeded: i64 = minute.try_get("succeeded")?;
    let deliveries_failed: i64 = minute.try_get("deliveries_failed")?;
    Ok(Status {
        undispatched_events: backlog.try_get("undispatched")?,
        oldest_undispatched_age_seconds: backlog.try_get("oldest_undispatched")?,
        pending_deliveries: backlog.try_get("pending")?,
        due_deliveries: backlog.try_get("due")?,
        delivery_lag_seconds: backlog.try_get("lag")?,
        last_minute: Throughput {
            attempts,
            succeeded,
            failed: attempts - succeeded,
            retrying: attempts - succeeded - deliveries_failed,
            deliveries_failed,
        },
        endpoints,
        failing_endpoints: failing,
        disabled_endpoints: disabled,
    })
}

/// One bucket of [`history`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryPoint {
    /// Start of the bucket, RFC 3339.
    pub at: String,
    /// Attempts started in the bucket that succeeded, and that failed.
    pub succeeded: i64,
    pub failed: i64,
    /// Deliveries pending at the end of the bucket: those created in the
    /// window and not yet finished then, plus older ones still pending now.
    pub backlog: i64,
}

/// The last hour (per minute) or day (per 15 minutes) from the database, so
/// that whoever opens the page after an incident sees the incident.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub window: String,
    pub bucket_seconds: i64,
    pub points: Vec<HistoryPoint>,
}

pub async fn history(client: &Client, _: AdminAccess, window: &str) -> Result<History> {
    let (window_seconds, bucket_seconds): (f64, i64) = match window {
        "1h" => (3600.0, 60),
        "24h" => (86400.0, 900),
        other => return Err(super::Error::Invalid(format!("window {other:?}: expected 1h or 24h"))),
    };
    let rows = client
        .query(
            "with bounds as (
                 select date_bin(make_interval(secs => $2), now() - make_interval(secs => $1), 'epoch') as start,
                        make_interval(secs => $2) as step
             ),
             buckets as (
                 select generate_series(b.start, now(), b.step) as at from bounds b
             ),
             attempts as (
                 select date_bin(b.step, a.started_at, b.start) as at,
                        count(*) filter (where a.response_status between 200 and 299) as succeeded,
                        count(*) filter (where a.response_status is null or a.response_status not between 200 and 299)
                            as failed
                 from postbox.attempts a, bounds b
                 where a.started_at >= b.start
                 group by 1
             ),
             recent as (
                 select date_bin(b.step, d.created_at, b.start) as created,
                        case when d.status <> 'pending' then date_bin(b.step, d.updated_at, b.start) end as finished
                 from postbox.deliveries d, bounds b
                 where d.created_at >= b.start
             ),
             moves as (
                 select created as at, 1 as delta from recent
                 union all
                 select finished, -1 from recent where finished is not null
             ),
             per_bucket as (select at, sum(delta) as delta from moves group by at),
             older as (
                 select count(*) as pending
                 from postbox.deliveries d, bounds b
                 where d.status = 'pending' and d.created_at < b.start
             )
             select postbox.rfc3339(k.at) as at,
                    coalesce(a.succeeded, 0) as succeeded,
                    coalesce(a.failed, 0) as failed,
                    (select pending from older)
                        + coalesce(sum(p.delta) over (order by k.at), 0)::int8 as backlog
             from buckets k
             left join attempts a on a.at = k.at
             left join per_bucket p on p.at = k.at
             order by k.at",
            &[&window_seconds, &(bucket_seconds as f64)],
        )
        .await?;
    let points = rows
        .iter()
        .map(|row| {
            Ok(HistoryPoint {
                at: row.try_get("at")?,
                succeeded: row.try_get("succeeded")?,
                failed: row.try_get("failed")?,
                backlog: row.try_get("backlog")?,
            })
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
    Ok(History { window: window.to_owned(), bucket_seconds, points })
}
