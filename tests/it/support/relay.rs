//! `postbox run` inside the test process: the real loop and its admin HTTP.

use std::time::Duration;

use postbox::config::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct InProcessRelay {
    /// `http://<admin address>`
    pub base: String,
    shutdown: CancellationToken,
    running: JoinHandle<Result<(), postbox::Error>>,
}

impl InProcessRelay {
    pub async fn start(settings: Settings) -> Self {
        let relay = postbox::Relay::bind(settings).await.expect("relay binds");
        let base = format!("http://{}", relay.admin_addr());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        Self { base, shutdown, running }
    }

    /// Shuts it down and expects a clean stop within 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("the relay stops within 10 s of shutdown")
            .unwrap()
            .expect("the relay stops cleanly");
    }
}
