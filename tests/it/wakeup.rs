use futures_util::{stream, StreamExt};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::support::TestApp;

/// A connection listening on channel `postbox`, and the payloads it receives.
async fn listen(url: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute("listen postbox").await.unwrap();
    (client, rx)
}

/// Notifications delivered so far. A round trip on the listening connection
/// first: Postgres sends pending notifications before the query's answer.
async fn received(listener: &Client, rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    listener.batch_execute("select 1").await.unwrap();
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn inserts_notify_once_per_transaction_not_once_per_row() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let (listener, mut rx) = listen(&app.db.url).await;

    app.sql
        .batch_execute(
            "begin;
             insert into postbox.outbox (event_type, payload) select 'a.b', '{}' from generate_series(1, 100);
             select postbox.emit('a.b', '{}');
             select postbox.emit('a.b', '{}');
             commit;
             select postbox.emit('a.b', '{}');",
        )
        .await
        .unwrap();
    assert_eq!(received(&listener, &mut rx).await, ["outbox", "outbox"], "one per committed transaction");

    app.sql.batch_execute("begin; select postbox.emit('a.b', '{}'); rollback;").await.unwrap();
    assert!(received(&listener, &mut rx).await.is_empty(), "a rolled-back insert wakes nobody");
}

#[tokio::test]
async fn inserts_skip_notify_while_a_relay_is_busy_and_in_poll_only_mode() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let (listener, mut rx) = listen(&app.db.url).await;

    app.sql.batch_execute("update postbox.wakeup set busy_until = now() + interval '1 min'").await.unwrap();
    app.sql.batch_execute("select postbox.emit('a.b', '{}')").await.unwrap();
    assert!(received(&listener, &mut rx).await.is_empty(), "a busy relay needs no wake-up");

    app.sql
        .batch_execute("update postbox.wakeup set busy_until = '-infinity', notify = false")
        .await
        .unwrap();
    app.sql.batch_execute("select postbox.emit('a.b', '{}')").await.unwrap();
    assert!(received(&listener, &mut rx).await.is_empty(), "poll-only mode never notifies");

    app.sql.batch_execute("update postbox.wakeup set notify = true").await.unwrap();
    app.sql.batch_execute("select postbox.emit('a.b', '{}')").await.unwrap();
    assert_eq!(received(&listener, &mut rx).await, ["outbox"]);
}

#[tokio::test]
async fn a_dispatcher_draining_a_backlog_marks_itself_busy_and_clears_the_mark_when_done() {
    let app = TestApp::with_settings(&[("POSTBOX_RELAY__BATCH_SIZE", "10")]).await;
    app.register("a.b").await;
    app.sql
        .batch_execute(
            "insert into postbox.outbox (event_type, payload) select 'a.b', '{}' from generate_series(1, 25)",
        )
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let dispatcher = postbox::relay::dispatcher::Dispatcher::new(
        app.pool.clone(),
        app.settings.dispatcher_config(),
        Default::default(),
    );
    let running = tokio::spawn(dispatcher.run(wake, Default::default(), shutdown.clone()));

    // Bounded wait for the backlog to drain.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.count("select count(*) from postbox.outbox where dispatched_at is null").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "backlog not drained within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    let busy: bool =
        app.sql.query_one("select busy_until > now() from postbox.wakeup", &[]).await.unwrap().get(0);
    assert!(!busy, "the busy mark is cleared once the backlog is gone");
}

#[tokio::test]
async fn a_dispatch_that_makes_deliveries_rings_the_local_deliverer_at_once() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    app.subscribe("https://example.com/hooks", &["*"]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let deliverer_bell = std::sync::Arc::new(tokio::sync::Notify::new());
    let dispatcher = postbox::relay::dispatcher::Dispatcher::new(
        app.pool.clone(),
        app.settings.dispatcher_config(),
        Default::default(),
    );
    let running = tokio::spawn(dispatcher.run(wake.clone(), deliverer_bell.clone(), shutdown.clone()));

    app.emit("a.b", serde_json::json!({"n": 1})).await;
    wake.notify_one(); // as the LISTEN connection would
    tokio::time::timeout(std::time::Duration::from_secs(5), deliverer_bell.notified())
        .await
        .expect("the deliverer's bell rings once the dispatcher has made a delivery");
    assert_eq!(app.count("select count(*) from postbox.deliveries").await, 1);
    shutdown.cancel();
    running.await.unwrap();
}
