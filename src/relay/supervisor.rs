//! Keeps the relay honest about its loops: each one beats a [`Heartbeat`]
//! when it makes progress, `/readyz` reports a loop whose heartbeat went
//! quiet, and [`supervise`] stops the whole relay (non-zero exit, so that its
//! supervisor restarts it) when a loop ends or panics while it should run.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// When a loop last made progress.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last: AtomicU64,
}

impl Heartbeat {
    fn new(origin: Instant) -> Self {
        Self { origin, last: AtomicU64::new(0) }
    }

    pub fn beat(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// The heartbeats of the loops `/readyz` watches.
#[derive(Debug)]
pub struct Liveness {
    pub dispatcher: Heartbeat,
    pub deliverer: Heartbeat,
    /// Quiet for longer than this, a loop is stalled.
    pub stall_after: Duration,
    /// Whether the loops have started: until then the relay is still checking
    /// the database (schema, sessions) and is not ready.
    started: std::sync::atomic::AtomicBool,
}

impl Liveness {
    /// A loop passes at least once per poll interval when it is well: a few
    /// intervals of silence (and never less than 5 s, for slow passes) mean
    /// it is stuck, or waiting on a database that does not answer.
    pub fn new(poll_interval: Duration) -> Self {
        Self::since(Instant::now(), poll_interval)
    }

    fn since(origin: Instant, poll_interval: Duration) -> Self {
        Self {
            dispatcher: Heartbeat::new(origin),
            deliverer: Heartbeat::new(origin),
            stall_after: (poll_interval * 10).max(Duration::from_secs(5)),
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The loops start now: their silence counts from here.
    pub fn start(&self) {
        self.dispatcher.beat();
        self.deliverer.beat();
        self.started.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Why the relay is not ready: still starting, or a loop has stalled.
    pub fn stalled(&self) -> Option<String> {
        if !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return Some(
                "starting: checking the database's schema and that the relay's connections are sessions"
                    .into(),
            );
        }
        [("dispatcher", &self.dispatcher), ("deliverer", &self.deliverer)].into_iter().find_map(
            |(name, beat)| {
                let quiet = beat.quiet_for();
                (quiet > self.stall_after).then(|| {
                    format!(
                        "the {name} loop has made no progress for {} s (limit {} s)",
                        quiet.as_secs(),
                        self.stall_after.as_secs()
                    )
                })
            },
        )
    }
}

/// A relay loop that ended while it should have run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {task} task {cause}; the relay stops so that its supervisor can restart it")]
pub struct TaskFailed {
    pub task: &'static str,
    pub cause: String,
}

/// Waits for every task. The first that ends before `shutdown` is cancelled
/// (it panicked, or returned on its own) cancels it, so that the others stop
/// too, and is the error returned.
pub async fn supervise(
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    shutdown: &CancellationToken,
) -> Result<(), TaskFailed> {
    let mut running: FuturesUnordered<_> =
        tasks.into_iter().map(|(task, handle)| async move { (task, handle.await) }).collect();
    let mut failed = None;
    while let Some((task, outcome)) = running.next().await {
        if shutdown.is_cancelled() || failed.is_some() {
            continue;
        }
        let cause = match outcome {
            Ok(()) => "stopped on its own".to_owned(),
            Err(err) => format!("failed: {}", join_error(err)),
        };
        error!(task, %cause, "relay task ended; stopping the relay");
        failed = Some(TaskFailed { task, cause });
        shutdown.cancel();
    }
    failed.map_or(Ok(()), Err)
}

fn join_error(err: JoinError) -> String {
    if !err.is_panic() {
        return err.to_string();
    }
    let panic = err.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_stops_the_others_and_is_named() {
        let shutdown = CancellationToken::new();
        let waiting = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        let failing = tokio::spawn(async { panic!("bad row") });
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            supervise(vec![("deliverer", waiting), ("dispatcher", failing)], &shutdown),
        )
        .await
        .expect("the other task stops once the first fails");
        let failed = result.unwrap_err();
        assert_eq!(failed.task, "dispatcher");
        assert!(failed.cause.contains("panicked: bad row"), "{}", failed.cause);
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn tasks_that_end_after_shutdown_are_no_failure() {
        let shutdown = CancellationToken::new();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        shutdown.cancel();
        assert_eq!(supervise(vec![("deliverer", task)], &shutdown).await, Ok(()));
    }

    #[test]
    fn a_quiet_loop_is_reported_by_name() {
        let an_hour_ago = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap();
        let liveness = Liveness::since(an_hour_ago, Duration::from_secs(1));
        assert!(liveness.stalled().is_some_and(|reason| reason.starts_with("starting")));
        liveness.started.store(true, std::sync::atomic::Ordering::Release);
        liveness.deliverer.beat();
        let reason = liveness.stalled().expect("the dispatcher never beat");
        assert!(reason.contains("dispatcher loop has made no progress"), "{reason}");
        liveness.dispatcher.beat();
        assert_eq!(liveness.stalled(), None);
    }
}
