pub mod app;
pub mod browser;
pub mod db;
pub mod pgbouncer;
pub mod process;
pub mod receiver;
pub mod relay;

pub use app::TestApp;
pub use db::TestDb;
pub use receiver::{Receiver, Reply};

use std::{future::Future, time::Duration};

/// Polls `check` every 10 ms until it holds; panics naming `what` after
/// `limit`. For conditions no event announces (rows another process writes).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
