//! Outbox to deliveries: claims a batch of undispatched events, fans each out
//! to the endpoints that match it (event type pattern, tenant, payload filter)
//! and marks the batch dispatched, all in one statement.
//!
//! The dispatcher and the deliverer meet only in the database.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::{
    db::{sql, QueryError},
    deliverer::{backoff, sleep_or_cancel},
    metrics::Metrics,
};

pub type Result<T = ()> = std::result::Result<T, QueryError>;

/// How long a busy mark keeps apps from notifying; refreshed while busy.
const BUSY_MARK: Duration = Duration::from_secs(5);
const BUSY_MARK_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub batch_size: u32,
    pub poll_interval: Duration,
    /// Delay before the first attempt of a new delivery.
    pub first_delay: Duration,
    /// Whether apps' inserts NOTIFY (false in poll-only mode).
    pub notify: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    pub events: i64,
    pub deliveries: i64,
}

pub struct Dispatcher {
    pool: Pool,
    config: DispatcherConfig,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(pool: Pool, config: DispatcherConfig, metrics: Arc<Metrics>) -> Self {
        Self { pool, config, metrics }
    }

    /// Dispatches one batch of at most `batch_size` events.
    pub async fn run_once(&self) -> Result<Dispatched> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::OUTBOX_DISPATCH_BATCH).await?;
        let row = client
            .query_one(
                &statement,
                &[&i64::from(self.config.batch_size), &self.config.first_delay.as_secs_f64()],
            )
            .await?;
        let dispatched = Dispatched { events: row.get("events"), deliveries: row.get("deliveries") };
        self.metrics.dispatched(dispatched.events, dispatched.deliveries);
        if dispatched.events > 0 {
            debug!(events = dispatched.events, deliveries = dispatched.deliveries, "dispatched");
        }
        Ok(dispatched)
    }

    /// Runs until `shutdown`. While batches come back full there is a backlog:
    /// it claims again at once and marks itself busy, so apps skip NOTIFY.
    /// Otherwise it waits for `wake` or the poll interval.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut busy_marked_at: Option<Instant> = None;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.run_once().await {
                Ok(dispatched) if dispatched.events >= i64::from(self.config.batch_size) => {
                    failures = 0;
                    if busy_marked_at.is_none_or(|at| at.elapsed() >= BUSY_MARK_REFRESH) {
                        self.mark(sql::WAKEUP_MARK_BUSY, true).await;
                        busy_marked_at = Some(Instant::now());
                    }
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    if busy_marked_at.take().is_some() {
                        // Look once more after clearing the mark: an insert that
                        // saw the mark did not notify.
                        self.mark(sql::WAKEUP_MARK_IDLE, false).await;
                        continue;
                    }
                }
                Err(err) => {
                    failures += 1;
                    error!(error = %err, "dispatching failed");
                    sleep_or_cancel(backoff(failures), &shutdown).await;
                    continue;
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        if busy_marked_at.is_some() {
            self.mark(sql::WAKEUP_MARK_IDLE, false).await;
        }
        info!("dispatcher stopped");
    }

    async fn mark(&self, query: &str, busy: bool) {
        if !self.config.notify {
            return;
        }
        let result = async {
            let client = self.pool.get().await?;
            if busy {
                client.execute(query, &[&BUSY_MARK.as_secs_f64()]).await?;
            } else {
                client.execute(query, &[]).await?;
            }
            Ok::<_, QueryError>(())
        }
        .await;
        if let Err(err) = result {
            error!(error = %err, busy, "updating the wake-up mark failed");
        }
    }
}
