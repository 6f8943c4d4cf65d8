//! Deliveries to HTTP: claim due deliveries under a lease, POST them with no
//! transaction or pooled connection held, and record every attempt in batches.
//!
//! Deliveries reach the requests two ways, both leased in the database: this
//! relay's claims, and its dispatcher, which leases the first attempts it
//! creates while there is room ([`crate::relay::capacity`]) and hands them over in
//! memory. Either way a relay that dies leaves nothing but leases that run
//! out.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use tokio::{
    sync::{mpsc, Notify},
    task::JoinSet,
};
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::{
    db::{self, sql, QueryError},
    delivery::{
        redact,
        retry::{self, Decision, RetryPolicy},
        sender::{Response, Sender},
        webhook::{self, Claimed, WebhookRequest},
    },
    metrics::Metrics,
    relay::{
        backoff::{backoff, sleep_or_cancel},
        capacity::{Capacity, Leased, Room},
        supervisor::Liveness,
    },
};

pub type Result<T = ()> = std::result::Result<T, QueryError>;

#[derive(Debug, Clone)]
pub struct DelivererConfig {
    pub batch_size: usize,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub shutdown_grace: Duration,
    /// Requests in flight to one endpoint from this relay.
    pub endpoint_concurrency: usize,
    /// Disable an endpoint after failing this long (zero: never).
    pub disable_endpoint_after: Duration,
    pub retry: RetryPolicy,
    /// The largest request body sent; a bigger one ends its delivery.
    pub max_request_body: usize,
}

/// One finished attempt, ready to be written.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: Uuid,
    pub lease_token: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// A first attempt sent straight from the outbox: writes its delivery.
    pub from_outbox: Option<i64>,
    pub attempt_number: i32,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub request_headers: Value,
    pub response_status: Option<u16>,
    pub response_headers: Option<Value>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub decision: Decision,
    /// It carried one of postbox's own events: its outcome emits none.
    pub operational: bool,
}

pub struct Deliverer {
    pool: Pool,
    sender: Sender,
    config: DelivererConfig,
    metrics: Arc<Metrics>,
    capacity: Capacity,
    /// Deliveries leased by the dispatcher, on their way to the request loop.
    handed_over: mpsc::UnboundedSender<Leased>,
    hand_over_inbox: Mutex<Option<mpsc::UnboundedReceiver<Leased>>>,
    liveness: Option<Arc<Liveness>>,
    /// The dispatcher's bell, rung when recorded outcomes emitted
    /// operational events (the relay's own inserts notify no relay).
    dispatcher_bell: Option<Arc<Notify>>,
}

/// What one batch write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub attempts: usize,
    /// Keyed deliveries that ended: the next delivery of each key is due.
    pub queues_moved: usize,
    /// Operational events this batch wrote to the outbox.
    pub operational_events: usize,
    /// Endpoints this batch disabled, with the reason.
    pub disabled: Vec<(Uuid, String)>,
}

impl Deliverer {
    pub fn new(pool: Pool, sender: Sender, config: DelivererConfig, metrics: Arc<Metrics>) -> Self {
        let (handed_over, hand_over_inbox) = mpsc::unbounded_channel();
        Self {
            capacity: Capacity::new(config.concurrency, config.endpoint_concurrency),
            pool,
            sender,
            config,
            metrics,
            handed_over,
            hand_over_inbox: Mutex::new(Some(hand_over_inbox)),
            liveness: None,
            dispatcher_bell: None,
        }
    }

    /// Rings `bell` (the dispatcher's) when recorded outcomes emitted
    /// operational events.
    pub fn rings_on_events(mut self, bell: Arc<Notify>) -> Self {
        self.dispatcher_bell = Some(bell);
        self
    }

    /// Beats `liveness.deliverer` on every turn of the loop that found the
    /// database answering.
    pub fn watched_by(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// This relay's request slots, per-endpoint load and held leases.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// The lease duration and a fresh claim token, for a statement that
    /// leases deliveries.
    pub fn new_lease(&self) -> (f64, Uuid) {
        (self.config.lease.as_secs_f64(), Uuid::new_v4())
    }

    /// Passes deliveries leased elsewhere in this relay (by its dispatcher)
    /// to the request loop.
    pub fn hand_over(&self, leased: Leased) {
        if !leased.is_empty() {
            // The loop stops taking them only after no room is given out
            // any more; whatever it left unsent is released at shutdown.
            let _ = self.handed_over.send(leased);
        }
    }

    /// Claims up to `limit` due deliveries in one short statement.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Claimed>> {
        let room = self.capacity.room(limit).await;
        let (leased, _) = self.claim_into(room).await?;
        Ok(leased.into_iter().map(|(delivery, _)| delivery).collect())
    }

    /// Claims as many due deliveries as `room` holds. Also returns, when a
    /// rate-limited endpoint has more due than its limit let go, how long
    /// until it may send again.
    async fn claim_into(&self, room: Room) -> Result<(Leased, Option<Duration>)> {
        if room.size() == 0 {
            return Ok((self.capacity.take(room, Vec::new()), None));
        }
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::DELIVERY_CLAIM_DUE).await?;
        let (lease, lease_token) = self.new_lease();
        let rows = client
            .query(
                &statement,
                &[
                    &(room.size() as i64),
                    &lease,
                    &lease_token,
                    &room.busy,
                    &room.free,
                    &room.endpoint_cap,
                    &(self.config.max_request_body as i64),
                ],
            )
            .await?;
        let rate_wait = match rows.first() {
            Some(row) => row.try_get::<_, Option<f64>>("rate_wait")?,
            None => None,
        };
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            // A row without a delivery carries only the rate-limit wait.
            if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
                claimed.push(claimed_from_row(row, lease_token)?);
            }
        }
        // Never wait less than a millisecond (no spinning) or longer than a
        // poll (a clock step cannot stall an endpoint).
        let rate_wait = rate_wait.map(|secs| Duration::from_secs_f64(secs.clamp(0.001, 1.0)));
        Ok((self.capacity.take(room, claimed), rate_wait))
    }

    /// Makes one attempt and decides what follows. Never fails: whatever goes
    /// wrong with the endpoint is in the record.
    #[tracing::instrument(skip_all, fields(
        delivery.id = %delivery.id,
        endpoint.id = %delivery.endpoint_id,
        endpoint.host = %delivery.host(),
        attempt = delivery.attempt_number,
    ))]
    pub async fn attempt(&self, delivery: Claimed) -> AttemptRecord {
        self.metrics.request_started();
        let started_at = SystemTime::now();
        let timestamp = started_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let clock = Instant::now();
        let request = match &delivery.defect {
            Some(defect) => Err(defect.clone()),
            None => webhook::build(&delivery, timestamp).and_then(|request| self.within_size_limit(request)),
        };
        // A request that cannot be built will not become sendable by waiting:
        // it ends the delivery at once, with the reason.
        let unsendable = request.is_err();
        let (request_headers, result) = match request {
            Ok(request) => {
                let recorded = webhook::recorded_headers(&request.headers);
                let sent_headers = redact::mask_credentials(redact::headers_json(recorded, usize::MAX));
                let result = match self.time_left(&delivery) {
                    Some(limit) => self.sender.send_within(request, limit).await,
                    None => Err("the lease ran out before the request could start: raise relay.lease, \
                                 or lower relay.concurrency"
                        .to_owned()),
                };
                (sent_headers, result)
            }
            Err(reason) => (Value::Object(Map::new()), Err(reason)),
        };
        let duration = clock.elapsed();
        self.capacity.request_finished(delivery.endpoint_id);

        let attempt_number = delivery.attempt_number as u32;
        let operational = delivery.event_type.starts_with("postbox.");
        let record = move |decision, status, headers, body, error| AttemptRecord {
            delivery_id: delivery.id,
            lease_token: delivery.lease_token,
            endpoint_id: delivery.endpoint_id,
            event_id: delivery.event_id,
            from_outbox: delivery.from_outbox,
            attempt_number: delivery.attempt_number,
            started_at,
            duration,
            request_headers,
            response_status: status,
            response_headers: headers,
            response_body: body,
            error,
            decision,
            operational,
        };
        let record = match result {
            Ok(Response { status, headers, body }) => {
                let retry_after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                let decision = self.config.retry.decide(attempt_number, Some(status), retry_after);
                match decision {
                    Decision::Succeeded => debug!(status, "delivered"),
                    Decision::Retry { after } => {
                        warn!(status, retry_in = ?after, "delivery failed")
                    }
                    Decision::Failed => warn!(status, "delivery failed for the last time"),
                    Decision::Gone => warn!(status, "receiver is gone; disabling the endpoint"),
                }
                let headers = redact::headers_json(
                    headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("<binary>"))),
                    redact::MAX_RESPONSE_HEADER_BYTES,
                );
                record(decision, Some(status), Some(headers), Some(body), None)
            }
            Err(error) => {
                let decision = if unsendable {
                    Decision::Failed
                } else {
                    self.config.retry.decide(attempt_number, None, None)
                };
                warn!(%error, ?decision, "delivery failed");
                record(decision, None, None, None, Some(error))
            }
        };
        self.metrics.request_finished(&record.decision, duration);
        record
    }

    /// How long this delivery's request may take: `delivery.timeout`, or
    /// less when its lease has less left than that and the time to record
    /// the outcome (a fifth of the lease). `None` once nothing is left: an
    /// outcome recorded after the lease would be dropped, and the delivery
    /// sent again by whoever claims it next.
    fn time_left(&self, delivery: &Claimed) -> Option<Duration> {
        let lease = self.config.lease;
        let left = lease.saturating_sub(delivery.leased_at.elapsed()).saturating_sub(lease / 5);
        (!left.is_zero()).then(|| left.min(self.sender.timeout()))
    }

    /// Refuses a body over `delivery.max_request_body`: the database's
    /// estimate let it through, the exact size did not.
    fn within_size_limit(&self, request: WebhookRequest) -> std::result::Result<WebhookRequest, String> {
        let max = self.config.max_request_body;
        if request.body.len() > max {
            return Err(format!(
                "the request would be {} bytes, more than delivery.max_request_body ({max} bytes): \
                 raise it, or send a reference to the data instead",
                request.body.len()
            ));
        }
        Ok(request)
    }

    /// Writes a batch of attempts in one round trip, with the endpoints'
    /// health. An attempt whose claim token is stale is dropped.
    pub async fn record(&self, records: &[AttemptRecord]) -> Result<Recorded> {
        if records.is_empty() {
            return Ok(Recorded::default());
        }
        let ids: Vec<Uuid> = records.iter().map(|r| r.delivery_id).collect();
        let tokens: Vec<Uuid> = records.iter().map(|r| r.lease_token).collect();
        let numbers: Vec<i32> = records.iter().map(|r| r.attempt_number).collect();
        let started: Vec<f64> = records.iter().map(|r| unix_micros(r.started_at)).collect();
        let durations: Vec<i32> =
            records.iter().map(|r| r.duration.as_millis().min(i32::MAX as u128) as i32).collect();
        let request_headers: Vec<String> = records.iter().map(|r| r.request_headers.to_string()).collect();
        let statuses: Vec<Option<i32>> = records.iter().map(|r| r.response_status.map(i32::from)).collect();
        let response_headers: Vec<Option<String>> =
            records.iter().map(|r| r.response_headers.as_ref().map(Value::to_string)).collect();
        let bodies: Vec<Option<&str>> = records.iter().map(|r| r.response_body.as_deref()).collect();
        let errors: Vec<Option<&str>> = records.iter().map(|r| r.error.as_deref()).collect();
        let next_status: Vec<&str> = records.iter().map(|r| r.decision.status()).collect();
        let retry_in: Vec<f64> = records
            .iter()
            .map(|r| match r.decision {
                Decision::Retry { after } => after.as_secs_f64(),
                _ => 0.0,
            })
            .collect();
        let gone: Vec<bool> = records.iter().map(|r| r.decision == Decision::Gone).collect();
        let operational: Vec<bool> = records.iter().map(|r| r.operational).collect();
        let events: Vec<Uuid> = records.iter().map(|r| r.event_id).collect();
        let endpoints: Vec<Uuid> = records.iter().map(|r| r.endpoint_id).collect();
        let outbox_ids: Vec<Option<i64>> = records.iter().map(|r| r.from_outbox).collect();
        let disable_after = self.config.disable_endpoint_after.as_secs_f64();

        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::DELIVERY_RECORD_ATTEMPTS).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 18] = [
            &ids,
            &tokens,
            &numbers,
            &started,
            &durations,
            &request_headers,
            &statuses,
            &response_headers,
            &bodies,
            &errors,
            &next_status,
            &retry_in,
            &gone,
            &disable_after,
            &operational,
            &events,
            &endpoints,
            &outbox_ids,
        ];
        // First attempts from the outbox only: then this statement, and the
        // triggers it fires, reach every table by key, and a generic plan
        // saves planning it at every write. Claimed deliveries may be keyed:
        // the queue triggers' lookups then need custom plans (a generic one
        // made on empty tables scans every active queue per key).
        let row = if records.iter().all(|r| r.from_outbox.is_some()) {
            db::query_one_generic(&client, &statement, &params).await?
        } else {
            client.query_one(&statement, &params).await?
        };
        let attempts = row.try_get::<_, i64>("recorded")? as usize;
        if attempts < records.len() {
            warn!(
                stale = records.len() - attempts,
                "attempts arrived after their lease ran out; not recorded"
            );
        }
        let disabled: Vec<(Uuid, String)> = row
            .get::<_, Vec<Uuid>>("disabled")
            .into_iter()
            .zip(row.get::<_, Vec<String>>("reasons"))
            .collect();
        for (endpoint, reason) in &disabled {
            warn!(endpoint.id = %endpoint, %reason, "endpoint disabled");
        }
        let queues_moved = row.try_get::<_, i64>("queues_moved")? as usize;
        let operational_events = row.try_get::<_, i64>("operational_events")? as usize;
        Ok(Recorded { attempts, queues_moved, operational_events, disabled })
    }

    /// One step without the loop: claims a batch, attempts every delivery in
    /// it concurrently and records the outcomes. Returns how many were attempted.
    pub async fn run_once(&self) -> Result<usize> {
        let claimed = self.claim(self.config.batch_size).await?;
        let records = futures_util::future::join_all(claimed.into_iter().map(|d| self.attempt(d))).await;
        self.record(&records).await?;
        self.capacity.recorded(records.iter().map(|r| r.delivery_id));
        Ok(records.len())
    }

    /// Hands everything claimed but unrecorded back to the queue, due now,
    /// first attempts from the outbox as new deliveries.
    async fn release_in_flight(&self) -> Result<usize> {
        let held = self.capacity.take_held();
        if held.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = held.iter().map(|h| h.delivery_id).collect();
        let tokens: Vec<Uuid> = held.iter().map(|h| h.lease_token).collect();
        let events: Vec<Uuid> = held.iter().map(|h| h.event_id).collect();
        let endpoints: Vec<Uuid> = held.iter().map(|h| h.endpoint_id).collect();
        let outbox_ids: Vec<Option<i64>> = held.iter().map(|h| h.from_outbox).collect();
        let client = self.pool.get().await?;
        let row = client
            .query_one(sql::DELIVERY_RELEASE, &[&ids, &tokens, &events, &endpoints, &outbox_ids])
            .await?;
        Ok(row.try_get::<_, i64>("released")? as usize)
    }

    /// Runs until `shutdown`: keeps up to `concurrency` requests in flight,
    /// from its own claims and from deliveries the dispatcher handed over.
    /// Claims when woken (`wake`), every poll interval, and after a request
    /// finishes while the last claim may have left due deliveries behind.
    /// On shutdown, stops taking work, lets in-flight requests finish within
    /// the grace period, records them, and releases whatever is left.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut handed_over = self
            .hand_over_inbox
            .lock()
            .expect("hand-over lock is never poisoned")
            .take()
            .expect("a deliverer runs once");
        let (results, outcomes) = mpsc::channel(self.config.concurrency.max(1));
        let recorder = tokio::spawn(Arc::clone(&self).record_loop(outcomes, Arc::clone(&wake)));
        let mut requests = JoinSet::new();
        let mut failures = 0u32;
        let mut claim_now = true;
        // Whether the last claim may have left deliveries behind for want of
        // a free slot: then a finished request is a reason to claim again.
        let mut left_behind = false;
        // When a rate-limited endpoint that has more due may send again.
        let mut rate_wake: Option<tokio::time::Instant> = None;
        // A steady tick, not a timeout per wait: handed-over work keeps the
        // loop busy, and retries that fall due must still be claimed.
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        while !shutdown.is_cancelled() {
            while requests.try_join_next().is_some() {}
            if failures == 0 {
                if let Some(liveness) = &self.liveness {
                    liveness.deliverer.beat();
                }
            }
            // Even with no slot free: the claim waits for the lease turn (a
            // dispatch pass holds every free slot while it runs), and one that
            // gets no room marks work as left behind for a finished request.
            if claim_now {
                claim_now = false;
                let room = self.capacity.room(self.config.batch_size).await;
                let (asked, endpoint_full) = (room.size(), room.endpoint_full());
                match self.claim_into(room).await {
                    Ok((leased, rate_wait)) => {
                        rate_wake = rate_wait.map(|wait| tokio::time::Instant::now() + wait);
                        failures = 0;
                        // This claim may have left due deliveries behind if it
                        // got no room, found some (there may be more, or an
                        // endpoint's cap held some back), or an endpoint was
                        // at its cap already. An empty claim with room means
                        // nothing is due for now.
                        left_behind = asked == 0 || !leased.is_empty() || endpoint_full;
                        self.start(leased, &mut requests, &results);
                    }
                    Err(err) => {
                        failures += 1;
                        error!(error = %err, "claiming deliveries failed");
                        sleep_or_cancel(backoff(failures), &shutdown).await;
                        claim_now = true;
                        continue;
                    }
                }
            }
            tokio::select! {
                Some(leased) = handed_over.recv() => self.start(leased, &mut requests, &results),
                _ = wake.notified() => claim_now = true,
                _ = poll.tick() => claim_now = true,
                _ = sleep_until_some(rate_wake) => {
                    rate_wake = None;
                    claim_now = true;
                }
                Some(_) = requests.join_next(), if !requests.is_empty() => claim_now |= left_behind,
                _ = shutdown.cancelled() => {}
            }
        }

        // No room is given out from here on, so nothing more is handed over;
        // what was handed over but not started is released below.
        self.capacity.close().await;
        handed_over.close();
        drop(handed_over);
        info!(in_flight = requests.len(), "deliverer stopping");
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while requests.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(remaining = requests.len(), "shutdown grace ran out; abandoning in-flight requests");
            requests.shutdown().await;
        }
        drop(results);
        let _ = recorder.await;
        match self.release_in_flight().await {
            Ok(0) => {}
            Ok(released) => info!(released, "released unfinished deliveries"),
            Err(err) => {
                warn!(error = %err, "could not release deliveries; their leases will expire")
            }
        }
        info!(attempts = self.metrics.attempts_total(), "deliverer stopped");
    }

    /// Starts one request per leased delivery; each holds its slot until its
    /// outcome is queued for recording.
    fn start(
        self: &Arc<Self>,
        leased: Leased,
        requests: &mut JoinSet<()>,
        results: &mpsc::Sender<AttemptRecord>,
    ) {
        for (delivery, permit) in leased {
            let this = Arc::clone(self);
            let results = results.clone();
            requests.spawn(async move {
                let record = this.attempt(delivery).await;
                let _ = results.send(record).await;
                drop(permit);
            });
        }
    }

    /// Writes outcomes as they arrive, as many per round trip as are waiting.
    /// Rings `wake` (this deliverer's bell) when a keyed delivery ended, for
    /// the next of its key is due now, and the dispatcher's bell when
    /// operational events were written: neither waits for a NOTIFY.
    async fn record_loop(self: Arc<Self>, mut outcomes: mpsc::Receiver<AttemptRecord>, wake: Arc<Notify>) {
        let mut batch = Vec::with_capacity(self.config.batch_size);
        while outcomes.recv_many(&mut batch, self.config.batch_size).await > 0 {
            let (mut failures, first_try) = (0, Instant::now());
            loop {
                let err = match self.record(&batch).await {
                    Ok(recorded) => {
                        if recorded.queues_moved > 0 {
                            wake.notify_one();
                        }
                        if let (true, Some(bell)) = (recorded.operational_events > 0, &self.dispatcher_bell) {
                            bell.notify_one();
                        }
                        break;
                    }
                    Err(err) => err,
                };
                failures += 1;
                error!(error = %err, attempts = batch.len(), "recording attempts failed");
                // Worth trying while the leases last (a database restarting
                // comes back in seconds); after that the outcome is stale,
                // and the deliveries are attempted again.
                if first_try.elapsed() >= self.config.lease {
                    error!(
                        attempts = batch.len(),
                        "giving up on recording these attempts: their leases ran out"
                    );
                    break;
                }
                tokio::time::sleep(backoff(failures)).await;
            }
            self.capacity.recorded(batch.iter().map(|r| r.delivery_id));
            batch.clear();
        }
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `at` in unix seconds, whole microseconds as Postgres keeps them, cut
/// rather than rounded: the second of the stored start stays the
/// `webhook-timestamp` that was sent (an attempt rebuilds that header from
/// it, see `webhook::sent_headers`).
fn unix_micros(at: SystemTime) -> f64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_secs() as f64 + f64::from(since.subsec_micros()) / 1e6
}

/// A leased delivery's request, from a row of a statement that leased it
/// under `lease_token` (a claim, or a dispatch pass).
///
/// `Err` only when the relay's own columns (ids, attempt number) cannot be
/// read. A value a writer or operator stored that cannot be sent (a time RFC
/// 3339 cannot express, JSON nested too deeply to parse) becomes the
/// delivery's [`Claimed::defect`], which ends that one delivery.
pub fn claimed_from_row(row: &Row, lease_token: Uuid) -> std::result::Result<Claimed, tokio_postgres::Error> {
    // Later than the database's own lease start: what is left is measured short.
    let leased_at = Instant::now();
    let mut defects = Vec::new();
    let outside = |name: &str, defects: &mut Vec<String>| -> Option<String> {
        row.try_get::<_, Option<String>>(name).unwrap_or_else(|err| {
            defects.push(format!("{name} cannot be read: {err}"));
            None
        })
    };
    let event_type = outside("event_type", &mut defects).unwrap_or_default();
    let occurred_at = outside("occurred_at", &mut defects).unwrap_or_else(|| {
        defects
            .push("occurred_at cannot be sent: webhook timestamps are RFC 3339, years 0001 to 9999".into());
        String::new()
    });
    let payload = outside("payload", &mut defects).unwrap_or_default();
    let previous = outside("previous", &mut defects);
    let actor = outside("actor", &mut defects);
    let url = outside("url", &mut defects).unwrap_or_default();
    let secrets = row.try_get::<_, Option<Vec<Option<String>>>>("secrets").unwrap_or_else(|err| {
        defects.push(format!("the endpoint's secrets cannot be read: {err}"));
        None
    });
    let headers = row.try_get::<_, Option<Value>>("headers").unwrap_or_else(|err| {
        defects.push(format!("the endpoint's headers cannot be read: {err}"));
        None
    });
    if let Some(reason) = row.try_get::<_, Option<String>>("unsendable").ok().flatten() {
        defects.push(reason);
    }
    Ok(Claimed {
        id: row.try_get("id")?,
        lease_token,
        endpoint_id: row.try_get("endpoint_id")?,
        attempt_number: row.try_get("attempt_number")?,
        event_id: row.try_get("event_id")?,
        event_type,
        occurred_at,
        payload,
        previous,
        actor,
        url,
        secrets: secrets.unwrap_or_default().into_iter().flatten().collect(),
        headers: headers.unwrap_or(Value::Null),
        defect: (!defects.is_empty()).then(|| defects.join("; ")),
        leased_at,
        from_outbox: None,
    })
}
