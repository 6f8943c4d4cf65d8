//! A start-up check that the relay's connections are sessions of their own.
//!
//! The relay needs a session: LISTEN hears notifications only on the backend
//! that listened, and its prepared statements live on the backend that
//! prepared them. A pooler in transaction (or statement) mode, such as
//! PgBouncer's `pool_mode = transaction`, hands each transaction whichever
//! backend is free, so both break, and the relay would neither wake nor
//! fail, only poll with errors. So it checks what it relies on: LISTEN on
//! one connection, NOTIFY from another, and the notification must arrive.
//! Through transaction pooling the listening backend goes back to the pool
//! after the LISTEN; the NOTIFY then runs on it (or on another one), and the
//! listener never hears it.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use tokio_postgres::AsyncMessage;

use super::{connect, connection_config, target, ConnectError};

/// How long a notification may take: milliseconds on a real session, even on
/// a loaded server.
pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{target} is not a session of its own: a LISTEN there did not hear a NOTIFY within {waited:?}. \
         This is what a pooler in transaction pooling mode does (PgBouncer's pool_mode = transaction); \
         the relay needs LISTEN and prepared statements, which transaction pooling cannot carry. \
         Point database.url straight at PostgreSQL, or at a pool in session mode \
         (apps may keep writing through transaction pooling)"
    )]
    NotASession { target: String, waited: Duration },
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Checks that `url` gives sessions: a NOTIFY reaches a LISTEN within `wait`.
pub async fn check(url: &str, wait: Duration) -> Result<(), Error> {
    let (mut config, tls) = connection_config(url)?;
    config.application_name("postbox-session-check");
    let (listener, mut connection) = config
        .connect(tls)
        .await
        .map_err(|cause| ConnectError::Connect { target: target(&config), cause })?;
    let heard = tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(_) = message? {
                return Ok(true);
            }
        }
        Ok::<_, tokio_postgres::Error>(false)
    });
    // A channel of its own: no relay hears it, and it hears no app.
    let channel = format!("postbox_session_check_{}", uuid::Uuid::new_v4().simple());
    listener.batch_execute(&format!("listen {channel}")).await.map_err(ConnectError::from)?;
    let notifier = connect(url).await?;
    notifier.batch_execute(&format!("notify {channel}")).await.map_err(ConnectError::from)?;

    let outcome = tokio::time::timeout(wait, heard).await;
    drop(listener); // ends the connection, and with it the task if it still waits
    match outcome {
        Ok(Ok(Ok(true))) => Ok(()),
        Ok(Ok(Err(err))) => Err(ConnectError::from(err).into()),
        _ => Err(Error::NotASession { target: target(&config), waited: wait }),
    }
}
