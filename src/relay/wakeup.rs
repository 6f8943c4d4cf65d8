//! LISTEN on channel `postbox` over a dedicated connection, reconnecting with
//! capped backoff. Every notification, and every (re)connect, tells the
//! dispatcher and the deliverer that there may be work; polling covers
//! whatever a lost notification would have said.

use std::{sync::Arc, time::Duration};

use futures_util::{stream, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub const CHANNEL: &str = "postbox";

/// The two doorbells: one for the dispatcher, one for the deliverer.
#[derive(Clone, Default)]
pub struct Wakeup {
    pub dispatcher: Arc<Notify>,
    pub deliverer: Arc<Notify>,
}

impl Wakeup {
    fn ring(&self, payload: &str) {
        // notify_one stores a permit when nobody waits, so no wake-up is lost.
        match payload {
            "outbox" => self.dispatcher.notify_one(),
            "deliveries" => self.deliverer.notify_one(),
            _ => {
                self.dispatcher.notify_one();
                self.deliverer.notify_one();
            }
        }
    }

    /// Listens until `shutdown`, ringing on every notification, reconnecting
    /// whenever the connection fails or closes.
    pub async fn listen(self, url: String, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let result = self.listen_once(&url, &shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            failures = if result.is_ok() { 1 } else { failures + 1 };
            let retry_in = crate::relay::backoff::backoff(failures);
            match result {
                Ok(()) => warn!(retry_in = ?retry_in, "LISTEN connection closed; reconnecting"),
                Err(err) => {
                    warn!(error = %err, retry_in = ?retry_in, "LISTEN connection failed; reconnecting")
                }
            }
            crate::relay::backoff::sleep_or_cancel(retry_in, &shutdown).await;
        }
    }

    /// One connection's life: `Ok` when it closed (or on shutdown), `Err` when it failed.
    async fn listen_once(
        &self,
        url: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), crate::db::ConnectError> {
        let (mut config, tls) = crate::db::connection_config(url)?;
        config.application_name("postbox-listen");
        config.keepalives_idle(Duration::from_secs(30));
        let (client, mut connection) = config.connect(tls).await?;
        let (notifications, mut received) = mpsc::unbounded_channel();
        let mut driver = tokio::spawn(async move {
            let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                if let AsyncMessage::Notification(n) = message? {
                    let _ = notifications.send(n.payload().to_owned());
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        });
        client.batch_execute(&format!("listen {CHANNEL}")).await?;
        info!(channel = CHANNEL, "listening for notifications");
        self.ring(""); // look once after (re)connecting: anything may have arrived meanwhile

        loop {
            tokio::select! {
                Some(payload) = received.recv() => {
                    debug!(%payload, "notified");
                    self.ring(&payload);
                }
                ended = &mut driver => {
                    return match ended {
                        Ok(Err(err)) => Err(err.into()),
                        _ => Ok(()),
                    };
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
