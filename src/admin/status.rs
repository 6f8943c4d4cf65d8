//! The relay's health at a glance: backlog, throughput, failing endpoints.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use uuid::Uuid;

use super::Result;
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

pub async fn status(client: &Client) -> Result<Status> {
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
