//! Waiting out our own failures (database errors, lost connections): capped
//! exponential backoff that gives way to shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// 100 ms doubling to at most 5 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

pub async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.cancelled() => {}
    }
}
