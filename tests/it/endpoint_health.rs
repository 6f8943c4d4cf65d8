//! Endpoint health: 410 Gone, failure windows, re-enabling, and one slow
//! receiver not holding up the others.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{app::test_settings, Receiver, Reply, TestApp};

async fn endpoint_state(app: &TestApp, endpoint: Uuid) -> (bool, Option<String>, bool) {
    let row = app
        .sql
        .query_one(
            "select enabled, disabled_reason, failing_since is not null from postbox.endpoints where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_410_gone_fails_the_delivery_and_disables_the_endpoint() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let first = app.emit("a.b", json!({"n": 1})).await;
    app.dispatch().await;
    receiver.script([Reply::status(410)]);
    assert_eq!(app.deliver().await, 1);

    assert_eq!(app.delivery_state(first, endpoint).await, ("failed".into(), 1));
    let (enabled, reason, _) = endpoint_state(&app, endpoint).await;
    assert!(!enabled);
    assert_eq!(reason.as_deref(), Some("receiver answered 410 Gone"));

    app.emit("a.b", json!({"n": 2})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 0, "nothing more is sent to a gone endpoint");
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_the_window_is_disabled_and_can_be_re_enabled() {
    let app = TestApp::with_settings(&[
        ("POSTBOX_DELIVERY__DISABLE_ENDPOINT_AFTER", "1h"),
        ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s,0s,0s"),
    ])
    .await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let event = app.emit("a.b", json!({})).await;
    app.dispatch().await;

    receiver.script([Reply::status(500), Reply::status(500)]);
    app.deliver().await;
    assert_eq!(endpoint_state(&app, endpoint).await, (true, None, true), "failing, not yet for an hour");

    // The failures began two hours ago.
    app.sql
        .batch_execute("update postbox.endpoints set failing_since = now() - interval '2 h'")
        .await
        .unwrap();
    app.deliver().await;
    let (enabled, reason, _) = endpoint_state(&app, endpoint).await;
    assert!(!enabled);
    assert!(reason.as_deref().unwrap().starts_with("every attempt failed since"), "{reason:?}");
    assert_eq!(app.deliver().await, 0, "a disabled endpoint gets no attempts");
    assert_eq!(app.delivery_state(event, endpoint).await, ("pending".into(), 2), "its delivery waits");

    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&endpoint]).await.unwrap();
    assert_eq!(endpoint_state(&app, endpoint).await, (true, None, false), "re-enabling starts afresh");
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 3));
    assert_eq!(receiver.drain().len(), 3);
}

#[tokio::test]
async fn a_success_clears_the_failure_window() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    receiver.script([Reply::status(503)]);
    app.deliver().await;
    assert!(endpoint_state(&app, endpoint).await.2, "failing_since set by the failure");
    app.deliver().await;
    assert_eq!(endpoint_state(&app, endpoint).await, (true, None, false));
}

#[tokio::test]
async fn claims_respect_the_per_endpoint_concurrency_cap() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "2")]).await;
    app.register("a.b").await;
    let slow = app.subscribe("http://127.0.0.1:9/slow", &["*"]).await;
    for _ in 0..10 {
        app.emit("a.b", json!({})).await;
    }
    app.dispatch().await;
    let fast = app.subscribe("http://127.0.0.1:9/fast", &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;

    let first = app.deliverer.claim(100).await.unwrap();
    let to = |endpoint| first.iter().filter(|c| c.endpoint_id == endpoint).count();
    assert_eq!((to(slow), to(fast)), (2, 1), "two for the capped endpoint, and the other endpoint's too");
    assert!(app.deliverer.claim(100).await.unwrap().is_empty(), "the capped endpoint is full");
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_the_others() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let hanging_url = crate::support::receiver::hanging_server().await;
    app.subscribe(&hanging_url, &["*"]).await;
    let mut receiver = Receiver::start().await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    for n in 0..40 {
        app.emit("a.b", json!({ "n": n })).await;
    }
    let settings = test_settings(
        &app.db.url,
        &[
            ("POSTBOX_RELAY__CONCURRENCY", "8"),
            ("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "4"),
            ("POSTBOX_DELIVERY__TIMEOUT", "30s"),
            ("POSTBOX_RELAY__LEASE", "60s"),
            ("POSTBOX_RELAY__SHUTDOWN_GRACE", "0s"),
        ],
    );
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(settings, shutdown.clone()));

    let started = Instant::now();
    for _ in 0..40 {
        receiver.recv().await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    relay.await.unwrap().unwrap();
    assert!(took < Duration::from_secs(10), "40 webhooks to the healthy endpoint took {took:?}");
}

#[tokio::test]
async fn a_disabled_endpoints_backlog_is_parked_and_never_blocks_the_queue() {
    let app = TestApp::with_settings(&[("POSTBOX_RELAY__BATCH_SIZE", "10")]).await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let paused = app.subscribe("http://127.0.0.1:9/paused", &["a.b"]).await;
    for n in 0..100 {
        app.emit("a.b", json!({ "n": n })).await;
    }
    while app.dispatch().await.events > 0 {}
    app.sql.execute("update postbox.endpoints set enabled = false where id = $1", &[&paused]).await.unwrap();
    let parked = "select count(*) from postbox.deliveries where next_attempt_at = 'infinity'";
    assert_eq!(app.count(parked).await, 100, "pending deliveries parked");

    // A later event for another endpoint is claimed at once, although 100
    // older deliveries sit before it in the queue.
    app.register("c.d").await;
    let healthy = app.subscribe(&receiver.url("/"), &["c.d"]).await;
    app.emit("c.d", json!({})).await;
    app.dispatch().await;
    let claimed = app.deliverer.claim(10).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.endpoint_id).collect::<Vec<_>>(), [healthy]);
    let record = app.deliverer.attempt(claimed.into_iter().next().unwrap()).await;
    app.deliverer.record(&[record]).await.unwrap();
    receiver.recv().await;

    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&paused]).await.unwrap();
    assert_eq!(app.count(parked).await, 0, "due again on re-enable");
    assert_eq!(app.deliverer.claim(10).await.unwrap().len(), 10);
}

#[tokio::test]
async fn an_endpoint_disabled_by_a_410_parks_its_other_deliveries() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "1")]).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(410)]);
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    for _ in 0..3 {
        app.emit("a.b", json!({})).await;
    }
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1, "one at a time to this endpoint");
    assert!(!endpoint_state(&app, endpoint).await.0);
    let parked = app
        .count("select count(*) from postbox.deliveries where status = 'pending' and next_attempt_at = 'infinity'")
        .await;
    assert_eq!(parked, 2);
    assert_eq!(app.deliver().await, 0);
}

/// Pause without loss, with a real relay: events written while an endpoint is
/// paused all arrive once it is resumed, each once. (They are claimed oldest
/// first, see below; sent concurrently, they may arrive in any order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_loses_nothing_and_gets_its_backlog_oldest_first() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let mut receiver = Receiver::start().await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let relay =
        crate::support::relay::InProcessRelay::start(crate::support::app::test_settings(&app.db.url, &[]))
            .await;
    app.emit("a.b", json!({"n": 0})).await;
    assert_eq!(receiver.recv().await.json()["data"]["n"], 0);

    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    for n in 1..=25 {
        app.emit("a.b", json!({ "n": n })).await;
    }
    app.wait_for_count(
        "select count(*) from postbox.deliveries where next_attempt_at = 'infinity'",
        25,
        Duration::from_secs(10),
    )
    .await;
    assert!(receiver.drain().is_empty(), "nothing is sent while paused");

    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&endpoint]).await.unwrap();
    let mut order = Vec::new();
    for _ in 1..=25 {
        order.push(receiver.recv().await.json()["data"]["n"].as_i64().unwrap());
    }
    order.sort_unstable();
    assert_eq!(order, (1..=25).collect::<Vec<_>>(), "all of them, once each");
    app.wait_for_count(
        "select count(*) from postbox.deliveries where status = 'succeeded'",
        26,
        Duration::from_secs(10),
    )
    .await;
    assert!(receiver.drain().is_empty(), "nothing twice");
    relay.stop().await;
}

/// Resuming makes a paused endpoint's backlog due oldest first: a claim takes
/// them in the order they were created.
#[tokio::test]
async fn a_resumed_backlog_is_claimed_oldest_first() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    for n in 1..=10 {
        app.emit("a.b", json!({ "n": n })).await;
        app.dispatch().await; // one pass per event: ten creation times
    }
    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&endpoint]).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..10 {
        // One at a time: each claim takes the earliest due.
        let claimed = app.deliverer.claim(1).await.unwrap();
        let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
        order.push(payload["n"].as_i64().unwrap());
    }
    assert_eq!(order, (1..=10).collect::<Vec<_>>());
}

/// postbox's own events reach endpoints that ask for `postbox.*`, with the
/// facts an operator needs, and never `*` subscribers; failing to deliver
/// them emits nothing more (no loops).
#[tokio::test]
async fn operational_events_reach_postbox_subscribers_and_never_loop() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s")]).await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let failing = app.subscribe(&receiver.url("/app"), &["*"]).await;
    let ops = app.subscribe(&receiver.url("/ops"), &["postbox.*"]).await;
    let count = |sql: &'static str| app.count(sql);
    receiver.script([Reply::status(500)]); // the app endpoint's only attempt
    let event = app.emit("a.b", json!({"order": 1})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1);
    assert_eq!(receiver.recv().await.path, "/app");
    assert_eq!(app.delivery_state(event, failing).await.0, "failed");
    assert_eq!(
        count("select count(*) from postbox.outbox where event_type like 'postbox.%'").await,
        2,
        "failing, and exhausted"
    );

    app.dispatch().await;
    assert_eq!(
        count("select count(*) from postbox.deliveries d join postbox.outbox o using (event_id) where o.event_type like 'postbox.%'")
            .await,
        2,
        "to the postbox.* endpoint only, not the * one"
    );
    assert_eq!(app.deliver().await, 2);
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let request = receiver.recv().await;
        assert_eq!(request.path, "/ops");
        got.insert(request.header("postbox-event-type").to_owned(), request.json()["data"].clone());
    }
    let exhausted = &got["postbox.delivery.exhausted"];
    assert_eq!(exhausted["event_id"], event.to_string());
    assert_eq!(exhausted["endpoint_id"], failing.to_string());
    assert_eq!(exhausted["last_error"], "HTTP 500");
    let failing_event = &got["postbox.endpoint.failing"];
    assert_eq!(failing_event["endpoint_id"], failing.to_string());
    assert_eq!(failing_event["url"], receiver.url("/app"));

    // The operator's endpoint fails too: that emits no further events.
    receiver.answer_all(Reply::status(500));
    app.sql
        .execute("select postbox.redeliver(id) from postbox.deliveries where endpoint_id = $1", &[&ops])
        .await
        .unwrap();
    let before = count("select count(*) from postbox.outbox").await;
    assert_eq!(app.deliver().await, 2);
    assert_eq!(
        count("select count(*) from postbox.outbox").await,
        before,
        "no operational event about operational events"
    );
}
