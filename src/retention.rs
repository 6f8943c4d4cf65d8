//! Retention: finished events older than `retention.period` are deleted with
//! their deliveries and attempts, so history tables stop growing. One relay
//! prunes at a time (an advisory lock); the others skip the round.

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

#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Zero keeps everything.
    pub period: Duration,
    pub interval: Duration,
}

/// Prunes every `interval` until `shutdown`.
pub async fn run(pool: Pool, config: RetentionConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    if config.period.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let round = async {
            let client = pool.get().await.map_err(|err| err.to_string())?;
            prune_if_leader(&client, config.period, &shutdown).await.map_err(|err| err.to_string())
        };
        match round.await {
            Ok(Some(pruned)) if pruned > 0 => {
                metrics.pruned(pruned);
                info!(events = pruned, period = %humantime::format_duration(config.period), "pruned finished events");
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "pruning failed; trying again next round"),
        }
    }
}

/// Prunes when no other relay is; `None` when another one holds the lock.
async fn prune_if_leader(
    client: &Client,
    period: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let locked: bool = client.query_one("select pg_try_advisory_lock($1)", &[&PRUNE_LOCK]).await?.get(0);
    if !locked {
        return Ok(None);
    }
    let pruned = prune(client, period, BATCH, shutdown).await;
    client.execute("select pg_advisory_unlock($1)", &[&PRUNE_LOCK]).await?;
    pruned.map(Some)
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
        let Some(last_id) = row.get::<_, Option<i64>>("last_id") else { break };
        total += row.get::<_, i64>("pruned") as u64;
        if row.get("reached_recent") {
            break;
        }
        after = last_id;
    }
    Ok(total)
}
