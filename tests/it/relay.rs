//! The real relay loop: LISTEN/NOTIFY wake-ups, polling, shutdown.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{
    app::test_settings, receiver::hanging_server, relay::InProcessRelay, Receiver, Reply, TestApp, TestDb,
};

#[tokio::test]
async fn a_committed_event_wakes_the_relay_through_notify_and_arrives() {
    // Polling every minute: only NOTIFY can make this arrive within the receiver's 10 s.
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.created").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let settings = test_settings(&app.db.url, &[("POSTBOX_RELAY__POLL_INTERVAL", "60s")]);
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(settings, shutdown.clone()));
    app.wait_for_listeners(1).await;

    let committed = Instant::now();
    let event = app.emit("order.created", json!({"id": 1})).await;
    let request = receiver.recv().await;
    let latency = committed.elapsed();
    assert_eq!(request.header("webhook-id"), event.to_string());
    println!("commit to receipt: {latency:?}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay stops within 10 s of shutdown")
        .unwrap()
        .expect("the relay stops cleanly");
    let (status, attempts) = app.delivery_state(event, app_endpoint(&app).await).await;
    assert_eq!((status.as_str(), attempts), ("succeeded", 1));
}

async fn app_endpoint(app: &TestApp) -> uuid::Uuid {
    app.sql.query_one("select id from postbox.endpoints", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn poll_only_mode_delivers_without_notify() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let settings = test_settings(&app.db.url, &[("POSTBOX_RELAY__WAKEUP", "poll")]);
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(settings, shutdown.clone()));

    let event = app.emit("a.b", json!({})).await;
    assert_eq!(receiver.recv().await.header("webhook-id"), event.to_string());
    let notify: bool = app.sql.query_one("select notify from postbox.wakeup", &[]).await.unwrap().get(0);
    assert!(!notify, "a poll-only relay turns NOTIFY off for apps");
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_records_them() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    receiver.script([Reply::status(200).after(Duration::from_millis(500))]);
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(test_settings(&app.db.url, &[]), shutdown.clone()));

    let event = app.emit("a.b", json!({})).await;
    receiver.recv().await; // the request is in flight now
    shutdown.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 1));
}

#[tokio::test]
async fn shutdown_past_the_grace_period_hands_unfinished_work_back_at_once() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    receiver.script([Reply::status(200).after(Duration::from_secs(30))]);
    let settings = test_settings(
        &app.db.url,
        &[
            ("POSTBOX_RELAY__SHUTDOWN_GRACE", "100ms"),
            ("POSTBOX_DELIVERY__TIMEOUT", "40s"),
            ("POSTBOX_RELAY__LEASE", "60s"),
        ],
    );
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(settings, shutdown.clone()));

    let event = app.emit("a.b", json!({})).await;
    receiver.recv().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("stops after the grace period")
        .unwrap()
        .unwrap();

    assert_eq!(app.delivery_state(event, endpoint).await, ("pending".into(), 0));
    let due_now: bool = app
        .sql
        .query_one("select next_attempt_at <= now() and lease_token is null from postbox.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert!(due_now, "released for another relay instead of waiting out the 60 s lease");
}

#[tokio::test]
async fn the_relay_waits_for_the_schema_and_stops_on_shutdown_meanwhile() {
    let db = TestDb::empty().await;
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(test_settings(&db.url, &[]), shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("stops while waiting")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_relays_own_writes_skip_the_wal_wait_unless_configured_and_admin_writes_never_do() {
    let db = TestDb::new().await;
    let show = |pool: deadpool_postgres::Pool, setting: &'static str| async move {
        let client = pool.get().await.unwrap();
        client.query_one(&format!("show {setting}"), &[]).await.unwrap().get::<_, String>(0)
    };
    let relay_pool = |wait| postbox::db::relay_pool(&db.url, 2, wait).unwrap();
    assert_eq!(show(relay_pool(false), "synchronous_commit").await, "off");
    assert_eq!(show(relay_pool(true), "synchronous_commit").await, "on");
    assert_eq!(show(postbox::db::pool(&db.url, 2).unwrap(), "synchronous_commit").await, "on");
    let settings = test_settings(&db.url, &[]);
    assert!(!settings.relay.synchronous_commit, "off by default: at least once either way");
    // Plans by index, whatever the statistics said when they were made.
    assert_eq!(show(relay_pool(true), "enable_seqscan").await, "off");
    assert_eq!(show(relay_pool(true), "jit").await, "off", "nor compiles plans that only look expensive");
    assert_eq!(show(postbox::db::pool(&db.url, 2).unwrap(), "enable_seqscan").await, "on");
    // A connection string's own options are kept.
    let with_options = format!("{}?options=-c%20statement_timeout%3D5s", db.url);
    let client = postbox::db::relay_pool(&with_options, 2, false).unwrap().get().await.unwrap();
    let timeout: String = client.query_one("show statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(timeout, "5s");
}

#[tokio::test]
async fn a_relay_with_every_request_slot_taken_still_dispatches_each_poll_interval() {
    // One request slot, held by a receiver that never answers.
    let app = TestApp::new().await;
    app.register("slow.event").await;
    app.register("other.event").await;
    app.subscribe(&hanging_server().await, &["slow.event"]).await;
    let relay = InProcessRelay::start(test_settings(
        &app.db.url,
        &[
            ("POSTBOX_RELAY__CONCURRENCY", "1"),
            ("POSTBOX_RELAY__POLL_INTERVAL", "300ms"),
            ("POSTBOX_RELAY__SHUTDOWN_GRACE", "1s"),
            ("POSTBOX_DELIVERY__TIMEOUT", "60s"),
            ("POSTBOX_RELAY__LEASE", "120s"),
        ],
    ))
    .await;
    app.emit("slow.event", json!({})).await;
    // In flight: a first attempt straight from the outbox (its dispatch
    // batch), or a claimed delivery.
    app.wait_for_count(
        "select (select count(*) from postbox.deliveries where leased_until > now())
              + (select count(*) from postbox.dispatch_batches)",
        1,
        Duration::from_secs(10),
    )
    .await;

    // Events nobody subscribes to wait for no slot: they are dispatched in
    // one batch after a poll interval, not one per interval.
    for n in 0..20 {
        app.emit("other.event", json!({ "n": n })).await;
    }
    let started = Instant::now();
    app.wait_for_count(
        "select count(*) from postbox.outbox where event_type = 'other.event' and dispatched_at is not null",
        20,
        Duration::from_secs(10),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "20 events took {took:?} to be dispatched");
    relay.stop().await;
}
