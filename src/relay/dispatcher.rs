//! Outbox to deliveries: claims a batch of undispatched events, fans each out
//! to the endpoints that match it (event type pattern, tenant, payload filter)
//! and marks the batch dispatched, all in one statement.
//!
//! Given this relay's deliverer ([`Dispatcher::lease_to`]), the same
//! statement leases the new deliveries that the deliverer has room for and
//! returns their requests, which go straight to it: a first attempt needs no
//! claim. Everything else waits in the database for any relay to claim.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::{
    db::{sql, QueryError},
    metrics::Metrics,
    relay::{
        backoff::{backoff, sleep_or_cancel},
        deliverer::{self, Deliverer},
        supervisor::Liveness,
    },
};

pub type Result<T = ()> = std::result::Result<T, QueryError>;

/// How long a busy mark keeps apps from notifying; refreshed while busy.
const BUSY_MARK: Duration = Duration::from_secs(5);
const BUSY_MARK_REFRESH: Duration = Duration::from_secs(1);
/// Events per second above which NOTIFY per app transaction costs more than
/// polling: the relay polls every `BUSY_POLL` instead.
const BUSY_RATE: i64 = 1000;
const BUSY_POLL: Duration = Duration::from_millis(5);
/// Quiet time after which a busy relay goes back to waiting for NOTIFY.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the dispatcher does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Claim again at once (a full batch: there is a backlog).
    Again,
    /// Claim again after this pause (sustained traffic: NOTIFY is off).
    Poll(Duration),
    /// Wait for a wake-up or the poll interval.
    Wait,
}

/// Pure pacing state: the event rate over the last second decides between
/// NOTIFY-driven waiting (idle: lowest latency) and fast polling (busy: apps
/// skip NOTIFY, which would otherwise cap their commit rate).
#[derive(Debug, Clone)]
pub struct Pace {
    busy: bool,
    window_start: Instant,
    window_events: i64,
    last_event: Instant,
}

impl Pace {
    pub fn new(now: Instant) -> Self {
        Self { busy: false, window_start: now, window_events: 0, last_event: now }
    }

    pub fn busy(&self) -> bool {
        self.busy
    }

    /// `limit`: the most events the pass could take; a pass that took that
    /// many left more behind.
    pub fn after_pass(&mut self, events: i64, limit: i64, now: Instant) -> Next {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            // Hysteresis: a busy relay goes back to NOTIFY once a whole second
            // ran at less than three quarters of the busy rate.
            if self.busy && self.window_events < BUSY_RATE * 3 / 4 {
                self.busy = false;
            }
            self.window_start = now;
            self.window_events = 0;
        }
        self.window_events += events;
        if events > 0 {
            self.last_event = now;
        }
        if events >= limit || self.window_events >= BUSY_RATE {
            self.busy = true;
        } else if self.busy && now.duration_since(self.last_event) >= IDLE_AFTER {
            self.busy = false;
        }
        match (events >= limit, self.busy) {
            (true, _) => Next::Again,
            (false, true) => Next::Poll(BUSY_POLL),
            (false, false) => Next::Wait,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub batch_size: u32,
    pub poll_interval: Duration,
    /// Delay before the first attempt of a new delivery.
    pub first_delay: Duration,
    /// Whether apps' inserts NOTIFY (false in poll-only mode).
    pub notify: bool,
    /// Requests bigger than this are not loaded (see the deliverer's).
    pub max_request_body: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    pub events: i64,
    pub deliveries: i64,
    /// Deliveries left for a claim (the rest went to this relay's deliverer).
    pub unleased: i64,
    /// Events left for a later pass because another relay was dispatching an
    /// earlier event of their ordering key.
    pub deferred: i64,
    /// The most events this pass could take: a pass that took this many
    /// leaves more behind.
    pub limit: i64,
}

pub struct Dispatcher {
    pool: Pool,
    config: DispatcherConfig,
    metrics: Arc<Metrics>,
    deliverer: Option<Arc<Deliverer>>,
    liveness: Option<Arc<Liveness>>,
}

impl Dispatcher {
    pub fn new(pool: Pool, config: DispatcherConfig, metrics: Arc<Metrics>) -> Self {
        Self { pool, config, metrics, deliverer: None, liveness: None }
    }

    /// Beats `liveness.dispatcher` after every pass that worked.
    pub fn watched_by(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Leases first attempts to `deliverer` while it has room, and hands
    /// them over.
    pub fn lease_to(mut self, deliverer: Arc<Deliverer>) -> Self {
        self.deliverer = Some(deliverer);
        self
    }

    /// The deliverer that new deliveries are leased to, unless first
    /// attempts wait (`first_delay`).
    fn leasing(&self) -> Option<&Arc<Deliverer>> {
        self.deliverer.as_ref().filter(|_| self.config.first_delay.is_zero())
    }

    /// Room worth a pass while the deliverer is busy: a quarter of a batch
    /// (or of its request slots), so that a busy relay dispatches in batches
    /// rather than an event per finished request.
    fn least_room(&self) -> usize {
        let slots = self.deliverer.as_ref().map_or(usize::MAX, |d| d.capacity().concurrency());
        (self.config.batch_size as usize).min(slots).div_ceil(4).max(1)
    }

    /// Dispatches one batch of at most `batch_size` events; while leasing,
    /// only as many as the deliverer has room for, but at least
    /// [`Self::least_room`], so that events no endpoint wants move on too.
    pub async fn run_once(&self) -> Result<Dispatched> {
        self.pass(false).await
    }

    /// One pass; `full`: a whole batch whatever the room.
    async fn pass(&self, full: bool) -> Result<Dispatched> {
        let batch_size = self.config.batch_size as usize;
        let room = match self.leasing() {
            Some(deliverer) => Some(deliverer.capacity().room(batch_size).await),
            None => None,
        };
        let limit = match &room {
            Some(room) if !full => room.size().max(self.least_room()).min(batch_size),
            _ => batch_size,
        };
        let (lease, lease_token) = self.deliverer.as_ref().map_or((0.0, Uuid::nil()), |d| d.new_lease());
        let no_room = (Vec::new(), Vec::new());
        let (busy, free) = room.as_ref().map_or((&no_room.0, &no_room.1), |r| (&r.busy, &r.free));
        let (endpoint_cap, size) = room.as_ref().map_or((0, 0), |r| (r.endpoint_cap, r.size() as i32));

        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::OUTBOX_DISPATCH_BATCH).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &(limit as i64),
                    &self.config.first_delay.as_secs_f64(),
                    &lease,
                    &lease_token,
                    busy,
                    free,
                    &endpoint_cap,
                    &size,
                    &(self.config.max_request_body as i64),
                ],
            )
            .await?;
        drop(client);
        let counts = rows.first().expect("the dispatch statement returns its counts");
        let dispatched = Dispatched {
            events: counts.try_get("events")?,
            deliveries: counts.try_get("deliveries")?,
            unleased: counts.try_get("unleased")?,
            deferred: counts.try_get("deferred")?,
            limit: limit as i64,
        };
        if let (Some(deliverer), Some(room)) = (&self.deliverer, room) {
            let mut leased = Vec::new();
            for row in &rows {
                if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
                    let mut first_attempt = deliverer::claimed_from_row(row, lease_token)?;
                    first_attempt.from_outbox = Some(row.try_get("outbox_id")?);
                    leased.push(first_attempt);
                }
            }
            deliverer.hand_over(deliverer.capacity().take(room, leased));
        }
        self.metrics.dispatched(dispatched.events, dispatched.deliveries);
        if dispatched.events > 0 {
            debug!(
                events = dispatched.events,
                deliveries = dispatched.deliveries,
                unleased = dispatched.unleased,
                "dispatched"
            );
        }
        Ok(dispatched)
    }

    /// Dispatches again the events of first attempts whose dispatch batch ran
    /// out of lease (their relay died, or released them at shutdown) and
    /// returns how many; a pass then sends what of them was not recorded.
    pub async fn recover_expired_batches(&self) -> Result<i64> {
        let client = self.pool.get().await?;
        let events: i64 = client.query_one(sql::DISPATCH_BATCHES_RECOVER, &[]).await?.try_get("events")?;
        if events > 0 {
            warn!(events, "first attempts whose lease ran out unrecorded: dispatching their events again");
        }
        Ok(events)
    }

    /// Runs until `shutdown`, pacing itself with [`Pace`]: a full batch means
    /// claim again at once; sustained traffic means poll every few ms with the
    /// busy mark set, so apps' inserts skip NOTIFY; otherwise wait for `wake`
    /// or the poll interval.
    ///
    /// After a pass that left deliveries to be claimed it rings
    /// `deliveries_made`, this relay's deliverer bell: they travel through
    /// the database as always, but the local deliverer need not wait for the
    /// NOTIFY round trip (or, in poll-only mode, for its next poll).
    pub async fn run(self, wake: Arc<Notify>, deliveries_made: Arc<Notify>, shutdown: CancellationToken) {
        let mut pace = Pace::new(Instant::now());
        let mut marked_at: Option<Instant> = None;
        let mut failures = 0u32;
        let mut recovered_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            // Once a poll interval, from start-up on: a dead relay's first
            // attempts are sent again within a lease and a poll.
            if recovered_at.is_none_or(|at| at.elapsed() >= self.config.poll_interval) {
                recovered_at = Some(Instant::now());
                if let Err(err) = self.recover_expired_batches().await {
                    error!(error = %err, "looking for expired dispatch batches failed");
                }
            }
            let mut full = false;
            if let Some(deliverer) = self.leasing() {
                // Events wait in the outbox, not as unleased deliveries,
                // while this relay has no room to send them. After a poll
                // interval a whole batch goes anyway: for other relays, and
                // for events that no endpoint wants.
                tokio::select! {
                    _ = deliverer.capacity().wait_for(self.least_room()) => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => full = true,
                    _ = shutdown.cancelled() => break,
                }
            }
            let (events, limit, deferred) = match self.pass(full).await {
                Ok(dispatched) => {
                    failures = 0;
                    if let Some(liveness) = &self.liveness {
                        liveness.dispatcher.beat();
                    }
                    if dispatched.unleased > 0 {
                        deliveries_made.notify_one();
                    }
                    (dispatched.events, dispatched.limit, dispatched.deferred)
                }
                Err(err) => {
                    failures += 1;
                    error!(error = %err, "dispatching failed");
                    sleep_or_cancel(backoff(failures), &shutdown).await;
                    continue;
                }
            };
            let next = pace.after_pass(events, limit, Instant::now());
            if pace.busy() {
                if marked_at.is_none_or(|at| at.elapsed() >= BUSY_MARK_REFRESH) {
                    self.mark(true).await;
                    marked_at = Some(Instant::now());
                }
            } else if marked_at.take().is_some() {
                // Look once more after clearing the mark: an insert that saw
                // the mark did not notify.
                self.mark(false).await;
                continue;
            }
            if deferred > 0 && next == Next::Wait {
                // The other relay commits within milliseconds; no wake-up
                // comes for events that are already in the outbox.
                sleep_or_cancel(BUSY_POLL, &shutdown).await;
                continue;
            }
            match next {
                Next::Again => continue,
                Next::Poll(after) => sleep_or_cancel(after, &shutdown).await,
                Next::Wait => {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        if marked_at.is_some() {
            self.mark(false).await;
        }
        info!("dispatcher stopped");
    }

    /// Sets or clears this relay's busy mark in `postbox.wakeup` (nothing to
    /// do in poll-only mode, where apps never notify).
    async fn mark(&self, busy: bool) {
        if !self.config.notify {
            return;
        }
        let result = async {
            let client = self.pool.get().await?;
            if busy {
                client.execute(sql::WAKEUP_MARK_BUSY, &[&BUSY_MARK.as_secs_f64()]).await?;
            } else {
                client.execute(sql::WAKEUP_MARK_IDLE, &[]).await?;
            }
            Ok::<_, QueryError>(())
        }
        .await;
        if let Err(err) = result {
            error!(error = %err, busy, "updating the wake-up mark failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_claims_again_at_once_and_marks_busy() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        assert_eq!(pace.after_pass(500, 500, start), Next::Again);
        assert!(pace.busy());
    }

    #[test]
    fn light_traffic_waits_for_notify() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        for ms in 0..100 {
            assert_eq!(pace.after_pass(5, 500, start + Duration::from_millis(ms * 10)), Next::Wait);
        }
        assert!(!pace.busy(), "500 events/s stays on NOTIFY");
    }

    #[test]
    fn sustained_traffic_polls_then_quiet_goes_back_to_notify() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        let mut now = start;
        let mut next = Next::Wait;
        for _ in 0..300 {
            now += Duration::from_millis(2);
            next = pace.after_pass(5, 500, now); // 2500 events/s
        }
        assert_eq!(next, Next::Poll(BUSY_POLL));
        assert!(pace.busy());
        assert_eq!(pace.after_pass(0, 500, now + Duration::from_millis(500)), Next::Poll(BUSY_POLL));
        assert_eq!(pace.after_pass(0, 500, now + Duration::from_millis(1500)), Next::Wait);
        assert!(!pace.busy());
    }

    #[test]
    fn a_busy_relay_returns_to_notify_when_traffic_slows_but_does_not_stop() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        assert_eq!(pace.after_pass(500, 500, start), Next::Again);
        let mut now = start;
        let mut next = Next::Again;
        for _ in 0..1000 {
            now += Duration::from_micros(2500);
            next = pace.after_pass(1, 500, now); // 400 events/s, never quiet
        }
        assert_eq!(next, Next::Wait);
        assert!(!pace.busy());
    }
}
