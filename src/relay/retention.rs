//! History maintenance: attempts live in one partition per day, made a few
//! days ahead; with `retention.period` set, days of attempts older than the
//! period are dropped whole and finished events older than it are deleted
//! with their deliveries. One relay does a round at a time (an advisory
//! lock); the others skip it.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{db, metrics::Metrics};

/// Key for `pg_try_advisory_lock`: "pbprune" in ASCII.
const PRUNE_LOCK: i64 = 0x0070_6270_7275_6e65;
/// Outbox rows looked at per delete statement: short transactions.
const BATCH: i64 = 1000;
/// Days of attempt partitions kept ready beyond today.
const DAYS_AHEAD: i32 = 3;

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Zero keeps everything.
    pub period: Duration,
    pub interval: Duration,
}

/// Every `interval` until `shutdown`: keeps attempt partitions ahead and,
/// unless the period is zero, drops and deletes what it has outlived.
pub async fn run(pool: Pool, config: RetentionConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let round = async {
            let client = pool.get().await.map_err(|err| err.to_string())?;
            round_if_leader(&client, config.period, &shutdown).await.map_err(|err| err.to_string())
        };
        match round.await {
            Ok(Some(done)) => {
                metrics.pruned(done.events);
                if done.events > 0 || done.partitions_dropped > 0 {
                    info!(
                        events = done.events,
                        attempt_days = done.partitions_dropped,
                        period = %humantime::format_duration(config.period),
                        "pruned history"
                    );
                }
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "history maintenance failed; trying again next round"),
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub events: u64,
    pub partitions_dropped: i32,
}

/// One round when no other relay is running one; `None` when another holds the lock.
async fn round_if_leader(
    client: &Client,
    period: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Round>, tokio_postgres::Error> {
    let locked: bool = client.query_one("select pg_try_advisory_lock($1)", &[&PRUNE_LOCK]).await?.get(0);
    if !locked {
        return Ok(None);
    }
    let done = round(client, period, shutdown).await;
    client.execute("select pg_advisory_unlock($1)", &[&PRUNE_LOCK]).await?;
    done.map(Some)
}

/// Adds attempt partitions for the next days and deletes tenant tokens a day
/// after they expired (until then, one still in use is refused as expired,
/// not unknown); with a non-zero `period`, drops the days of attempts it has
/// outlived (whole partitions, before the row deletes, which then find nothing
/// there) and prunes finished events.
pub async fn round(
    client: &Client,
    period: Duration,
    shutdown: &CancellationToken,
) -> Result<Round, tokio_postgres::Error> {
    client.execute("select postbox.add_attempt_partitions($1)", &[&DAYS_AHEAD]).await?;
    client
        .execute("delete from postbox.tenant_tokens where expires_at < now() - interval '1 day'", &[])
        .await?;
    // The safety net for ordered queues: a head left held by a change made
    // under an older snapshot (see 0010_per_key_order.sql) goes now.
    client.execute("select postbox.advance_stranded_queues()", &[]).await?;
    if period.is_zero() {
        return Ok(Round::default());
    }
    let seconds = period.as_secs_f64();
    let partitions_dropped = client
        .query_one("select postbox.drop_attempt_partitions(now() - make_interval(secs => $1))", &[&seconds])
        .await?
        .get(0);
    let events = prune(client, period, BATCH, shutdown).await?;
    Ok(Round { events, partitions_dropped })
}

/// Deletes finished events older than `period`, `batch` outbox rows looked
/// at per statement, oldest first; stops at the first newer row. Returns how
/// many events it deleted.
pub async fn prune(
    client: &Client,
    period: Duration,
    batch: i64,
    shutdown: &CancellationToken,
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare(db::sql::OUTBOX_PRUNE).await?;
    let seconds = period.as_secs_f64();
    let (mut after, mut total) = (0_i64, 0_u64);
    while !shutdown.is_cancelled() {
        let row = client.query_one(&statement, &[&after, &seconds, &batch]).await?;
        let Some(last_id) = row.try_get::<_, Option<i64>>("last_id")? else { break };
        total += row.try_get::<_, i64>("pruned")? as u64;
        if row.try_get("reached_recent")? {
            break;
        }
        after = last_id;
    }
    Ok(total)
}
