//! Rate limits under abuse found by an attack review: a limited endpoint's
//! backlog never starves other endpoints' claims or retries, and many
//! relays claiming for many limited endpoints do not deadlock.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, Reply, TestApp};

async fn backlog(app: &TestApp, event_type: &str, n: i32) {
    app.sql
        .execute(
            "insert into postbox.outbox (event_type, payload)
             select $1, jsonb_build_object('n', n) from generate_series(1, $2::int) n",
            &[&event_type, &n],
        )
        .await
        .unwrap();
}

/// A rate-limited endpoint with more due deliveries than the claim's candidate
/// window (4 x batch_size) hides every other endpoint's due deliveries from
/// every claim until its backlog drains at its own rate.
#[tokio::test]
async fn limited_backlog_does_not_starve_other_endpoints() {
    let app = TestApp::new().await;
    let limited_rx = Receiver::start().await;
    let mut other_rx = Receiver::start().await;
    app.register("a.x").await;
    app.register("b.x").await;
    let limited = app.subscribe(&limited_rx.url("/a"), &["a.x"]).await;
    let other = app.subscribe(&other_rx.url("/b"), &["b.x"]).await;
    app.sql.execute("update postbox.endpoints set rate_limit = 1 where id = $1", &[&limited]).await.unwrap();
    let n: i32 = std::env::var("ATTACK_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(2100);
    backlog(&app, "a.x", n).await;
    while app.dispatch().await.events > 0 {}
    let event = app.emit("b.x", json!({"n": "other"})).await;
    app.dispatch().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        app.deliver().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, attempts) = app.delivery_state(event, other).await;
    let arrived = other_rx.drain().len();
    println!(
        "unlimited endpoint after 3 s of claims: status {status}, attempts {attempts}, requests {arrived}"
    );
    assert_eq!(status, "succeeded", "the unlimited endpoint's delivery was never claimed");
}

/// The same with a real relay: the unlimited endpoint's first attempt goes by
/// the dispatch fast path, but its retry needs a claim, and waits for the
/// other endpoint's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_backlog_does_not_hold_back_other_endpoints_retries() {
    let app = TestApp::new().await;
    let limited_rx = Receiver::start().await;
    let mut other_rx = Receiver::start().await;
    other_rx.script([Reply::status(500)]);
    app.register("a.x").await;
    app.register("b.x").await;
    let limited = app.subscribe(&limited_rx.url("/a"), &["a.x"]).await;
    let other = app.subscribe(&other_rx.url("/b"), &["b.x"]).await;
    app.sql.execute("update postbox.endpoints set rate_limit = 1 where id = $1", &[&limited]).await.unwrap();
    let relay = InProcessRelay::start(test_settings(
        &app.db.url,
        &[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,1s,1s")],
    ))
    .await;
    backlog(&app, "a.x", 2100).await;
    app.wait_for_count("select count(*) from postbox.deliveries", 2100, Duration::from_secs(30)).await;
    let event = app.emit("b.x", json!({"n": "other"})).await;
    let first = other_rx.recv().await;
    assert_eq!(first.path, "/b");
    let waited = tokio::time::timeout(Duration::from_secs(8), other_rx.recv()).await;
    let state = app.delivery_state(event, other).await;
    relay.stop().await;
    println!("retry due 1 s after the first attempt; after 8 s: {:?}, delivery {state:?}", waited.is_ok());
    assert!(waited.is_ok(), "the retry (due after 1 s) was not sent within 8 s: {state:?}");
}

/// Claims take each rate-limited endpoint's pace row lock (take_permits) in
/// whatever order the claim's GROUP BY yields; two relays' claims can take
/// two endpoints' rows in opposite orders and deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_over_many_limited_endpoints_do_not_deadlock() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    let app = TestApp::new().await;
    let rx = Receiver::start().await;
    app.register("a.x").await;
    for n in 0..60 {
        let id = app.subscribe(&rx.url(&format!("/e{n}")), &["a.x"]).await;
        app.sql
            .execute("update postbox.endpoints set rate_limit = 100000 where id = $1", &[&id])
            .await
            .unwrap();
    }
    backlog(&app, "a.x", 300).await; // 18000 deliveries
    while app.dispatch().await.events > 0 {}
    let deadlocks = Arc::new(AtomicUsize::new(0));
    let claims = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..4usize {
        let settings = crate::support::app::test_settings(
            &app.db.url,
            &[("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "2")],
        );
        let deliverer = Arc::new(postbox::relay::deliverer::Deliverer::new(
            app.db.pool(),
            postbox::delivery::sender::Sender::new(settings.sender_config()).unwrap(),
            settings.deliverer_config(),
            Default::default(),
        ));
        let (deadlocks, claims) = (Arc::clone(&deadlocks), Arc::clone(&claims));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0usize;
            while started.elapsed() < Duration::from_secs(15) {
                i += 1;
                let limit = 5 + (i * 7 + worker * 13) % 120;
                match deliverer.claim(limit).await {
                    Ok(_) => {
                        claims.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        if format!("{err:?}").contains("deadlock")
                            && deadlocks.fetch_add(1, Ordering::Relaxed) == 0
                        {
                            println!("first deadlock: {err:?}");
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (deadlocks, claims) = (deadlocks.load(Ordering::Relaxed), claims.load(Ordering::Relaxed));
    println!("{claims} claims, {deadlocks} ended in a deadlock");
    assert_eq!(deadlocks, 0);
}
