//! Per-key ordering: for one endpoint and one ordering key, a delivery is sent
//! only after the one before it (in outbox order) has succeeded, failed or
//! been cancelled; its retries hold back that key alone.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::StatusCode, Router};
use rand::Rng;
use serde_json::Value;

use crate::support::{eventually, process::RelayProcess, Receiver, Reply, TestApp};

async fn emit_keyed(app: &TestApp, name: &str, key: Option<&str>) {
    app.sql
        .execute(
            "select postbox.emit('order.changed', jsonb_build_object('name', $1::text), ordering_key => $2)",
            &[&name, &key],
        )
        .await
        .expect("emit with an ordering key");
}

/// Names of the events whose deliveries wait behind an earlier one.
async fn held(app: &TestApp) -> Vec<String> {
    app.sql
        .query(
            "select o.payload->>'name' from postbox.deliveries d
             join postbox.outbox o on o.event_id = d.event_id
             where d.status = 'pending' and d.held order by o.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn names(requests: &[crate::support::receiver::Received]) -> Vec<String> {
    requests.iter().map(|r| r.json()["data"]["name"].as_str().unwrap_or_default().to_owned()).collect()
}

fn of_key(names: &[String], prefix: char) -> Vec<String> {
    names.iter().filter(|n| n.starts_with(prefix)).cloned().collect()
}

#[tokio::test]
async fn one_keys_deliveries_go_one_after_another_and_a_failing_head_holds_back_only_its_key() {
    let app = TestApp::new().await; // three immediate attempts
    let mut receiver = Receiver::start().await;
    app.register("order.changed").await;
    app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    for (name, key) in [
        ("a1", Some("a")),
        ("b1", Some("b")),
        ("a2", Some("a")),
        ("free", None),
        ("b2", Some("b")),
        ("a3", Some("a")),
    ] {
        emit_keyed(&app, name, key).await;
    }
    receiver.answer_when("\"a1\"", Reply::status(500));

    let dispatched = app.dispatch().await;
    assert_eq!((dispatched.events, dispatched.deliveries), (6, 6));
    assert_eq!(held(&app).await, ["a2", "b2", "a3"], "behind a1 and b1");

    // a1 fails, b1 and the unkeyed event go; b1's success lets b2 go next.
    assert_eq!(app.deliver().await, 3);
    assert_eq!(held(&app).await, ["a2", "a3"], "b2 is due once b1 succeeded");
    assert_eq!(app.deliver().await, 2, "a1's retry and b2");
    assert_eq!(app.deliver().await, 1, "a1's last attempt; nothing else of key a");
    let (status, attempts): (String, i32) = {
        let row = app
            .sql
            .query_one(
                "select d.status, d.attempt_count from postbox.deliveries d
                 join postbox.outbox o on o.event_id = d.event_id where o.payload->>'name' = 'a1'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((status.as_str(), attempts), ("failed", 3));
    assert_eq!(held(&app).await, ["a3"], "a1 failed for good: a2 goes");

    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.deliver().await, 0);
    let arrived = names(&receiver.drain());
    assert_eq!(of_key(&arrived, 'a'), ["a1", "a1", "a1", "a2", "a3"]);
    assert_eq!(of_key(&arrived, 'b'), ["b1", "b2"]);
    assert_eq!(of_key(&arrived, 'f'), ["free"]);
    assert!(held(&app).await.is_empty());
}

#[tokio::test]
async fn cancelling_or_deleting_a_head_lets_the_next_one_go() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.changed").await;
    app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    for name in ["k1", "k2", "k3"] {
        emit_keyed(&app, name, Some("k")).await;
    }
    app.dispatch().await;
    assert_eq!(held(&app).await, ["k2", "k3"]);
    let client = app.pool.get().await.unwrap();
    let listed =
        postbox::admin::deliveries::list(&client, &postbox::admin::Access::Admin, &Default::default())
            .await
            .unwrap();
    let waiting: Vec<String> = listed.iter().filter_map(|d| d.waiting.clone()).collect();
    assert!(
        waiting
            .iter()
            .filter(|w| w.starts_with("waiting: behind an earlier delivery of ordering key k"))
            .count()
            == 2,
        "held deliveries say what they wait for: {waiting:?}"
    );

    // By hand, as an operator would: the trigger moves the queue on.
    app.sql
        .execute(
            "update postbox.deliveries d set status = 'cancelled', next_attempt_at = null
             from postbox.outbox o where o.event_id = d.event_id and o.payload->>'name' = 'k1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(held(&app).await, ["k3"]);
    app.sql
        .execute(
            "delete from postbox.deliveries d using postbox.outbox o
             where o.event_id = d.event_id and o.payload->>'name' = 'k2'",
            &[],
        )
        .await
        .unwrap();
    assert!(held(&app).await.is_empty());
    assert_eq!(app.deliver().await, 1);
    assert_eq!(names(&receiver.drain()), ["k3"]);
}

#[tokio::test]
async fn a_paused_endpoint_keeps_its_queue_in_order_and_resuming_sends_only_the_head() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.changed").await;
    let endpoint = app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    for name in ["p1", "p2", "p3"] {
        emit_keyed(&app, name, Some("p")).await;
    }
    app.dispatch().await;
    assert_eq!(app.deliver().await, 0, "paused");
    assert_eq!(held(&app).await, ["p2", "p3"]);

    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&endpoint]).await.unwrap();
    assert_eq!(held(&app).await, ["p2", "p3"], "resuming does not release what waits behind the head");
    for _ in 0..3 {
        assert_eq!(app.deliver().await, 1);
    }
    assert_eq!(names(&receiver.drain()), ["p1", "p2", "p3"]);
}

#[tokio::test]
async fn a_key_that_another_relay_is_dispatching_waits_for_the_next_pass() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    app.register("order.changed").await;
    app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    for (name, key) in
        [("a1", Some("a")), ("b1", Some("b")), ("a2", Some("a")), ("free", None), ("a3", Some("a"))]
    {
        emit_keyed(&app, name, key).await;
    }

    // Another relay's dispatch pass holds a1 (locked, not yet dispatched).
    let mut other = app.db.connect().await;
    let other_pass = other.transaction().await.unwrap();
    other_pass
        .execute("select 1 from postbox.outbox where payload->>'name' = 'a1' for no key update", &[])
        .await
        .unwrap();
    let dispatched = app.dispatch().await;
    assert_eq!((dispatched.events, dispatched.deferred), (2, 2), "b1 and free go; a2 and a3 wait for a1");
    assert_eq!(app.count("select count(*) from postbox.deliveries where ordering_key = 'a'").await, 0);

    other_pass.rollback().await.unwrap();
    let dispatched = app.dispatch().await;
    assert_eq!((dispatched.events, dispatched.deferred), (3, 0));
    assert_eq!(held(&app).await, ["a2", "a3"]);
}

#[tokio::test]
async fn replay_resends_a_keys_events_in_order() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.changed").await;
    let endpoint = app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    for name in ["r1", "r2", "r3"] {
        emit_keyed(&app, name, Some("r")).await;
    }
    app.dispatch().await;
    while app.deliver().await > 0 {}
    assert_eq!(names(&receiver.drain()), ["r1", "r2", "r3"]);

    let replayed: i64 = app.replay(endpoint).await;
    assert_eq!(replayed, 3);
    assert_eq!(held(&app).await, ["r2", "r3"]);
    while app.deliver().await > 0 {}
    assert_eq!(names(&receiver.drain()), ["r1", "r2", "r3"]);
}

#[tokio::test]
async fn ordered_tracking_keys_each_rows_events_by_subject_and_primary_key() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table items (id int primary key, name text);
             create table lines (order_id int, n int, qty int, primary key (order_id, n));
             create table loose (name text);
             select postbox.track('items', ordered => true);
             select postbox.track('lines', subject => 'line', ordered => true);
             insert into items values (1, 'a');
             update items set name = 'b' where id = 1;
             delete from items where id = 1;
             insert into lines values (7, 2, 1);",
        )
        .await
        .unwrap();
    let keys: Vec<(String, Option<String>)> = app
        .sql
        .query("select event_type, ordering_key from postbox.outbox order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("items.created", Some("items/1")),
        ("items.updated", Some("items/1")),
        ("items.destroyed", Some("items/1")),
        ("line.created", Some("line/[\"7\", \"2\"]")),
    ];
    assert_eq!(keys, expected.map(|(t, k)| (t.to_owned(), k.map(str::to_owned))));

    let err = app.sql.batch_execute("select postbox.track('loose', ordered => true)").await.unwrap_err();
    assert!(format!("{err:?}").contains("has no primary key"), "{err:?}");
    // Unordered tracking, as before: no key.
    app.sql.batch_execute("select postbox.track('loose'); insert into loose values ('x')").await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.outbox where ordering_key is null").await, 1);
}

#[tokio::test]
async fn writers_set_the_key_and_a_key_too_long_is_refused_with_its_limit() {
    let app = TestApp::new().await;
    app.register("order.changed").await;
    app.sql
        .batch_execute(
            "begin;
             set local role postbox_writer;
             insert into postbox.outbox (event_type, payload, ordering_key) values ('order.changed', '{}', 'o/1');
             select postbox.emit('order.changed', '{}', ordering_key => 'o/1');
             commit;",
        )
        .await
        .expect("a writer sets ordering keys");
    assert_eq!(app.count("select count(*) from postbox.outbox where ordering_key = 'o/1'").await, 2);

    let long = "k".repeat(1025);
    let err = app
        .sql
        .execute("select postbox.emit('order.changed', '{}', ordering_key => $1)", &[&long])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("outbox_ordering_key_at_most_1024_bytes"), "{err:?}");
}

/// What a receiver saw of one key: each request's sequence number and
/// whether it answered 2xx, in the order they arrived.
type Seen = Arc<Mutex<HashMap<String, Vec<(u64, bool)>>>>;

async fn flaky_receiver(seen: Seen) -> String {
    async fn handle(State(seen): State<Seen>, body: Bytes) -> StatusCode {
        let event: Value = serde_json::from_slice(&body).unwrap_or_default();
        let key = event["data"]["key"].as_str().unwrap_or_default().to_owned();
        let seq = event["data"]["seq"].as_u64().unwrap_or_default();
        let (ok, delay) = {
            let mut rng = rand::rng();
            (rng.random_range(0..10) != 0, Duration::from_millis(rng.random_range(0..5)))
            // one in ten fails
        };
        seen.lock().unwrap().entry(key).or_default().push((seq, ok));
        tokio::time::sleep(delay).await;
        if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_per_key_while_relays_compete_and_are_killed() {
    const KEYS: u64 = 20;
    const PER_KEY: u64 = 40;
    const RELAYS: usize = 3;
    const KILLS: usize = 6;
    let app = TestApp::new().await;
    let seen: Seen = Arc::default();
    let url = flaky_receiver(Arc::clone(&seen)).await;
    app.register("order.changed").await;
    app.subscribe(&url, &["order.*"]).await;
    let settings = [
        ("POSTBOX_RELAY__BATCH_SIZE", "50"),
        ("POSTBOX_RELAY__CONCURRENCY", "32"),
        ("POSTBOX_RELAY__LEASE", "3s"),
        ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
        ("POSTBOX_DELIVERY__TIMEOUT", "2s"),
        ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms"),
        ("POSTBOX_DATABASE__POOL_SIZE", "4"),
    ];
    let mut relays: Vec<RelayProcess> =
        (0..RELAYS).map(|_| RelayProcess::start(&app.db.url, &settings)).collect();
    // Events arrive while relays run: each key's in order, keys interleaved.
    app.sql
        .execute(
            "insert into postbox.outbox (event_type, payload, ordering_key)
             select 'order.changed', jsonb_build_object('key', 'k' || k, 'seq', s), 'k' || k
             from generate_series(1, $1::int) s, generate_series(1, $2::int) k
             order by s, k",
            &[&(PER_KEY as i32), &(KEYS as i32)],
        )
        .await
        .unwrap();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..400))).await;
        let victim = rand::rng().random_range(0..RELAYS);
        relays[victim].kill9();
        relays[victim] = RelayProcess::start(&app.db.url, &settings);
    }
    let open = "select (select count(*) from postbox.deliveries where status <> 'succeeded')
                     + (select count(*) from postbox.outbox where dispatched_at is null)
                     + (select count(*) from postbox.dispatch_batches)";
    eventually(Duration::from_secs(120), "every keyed delivery succeeded", || async {
        app.count(open).await == 0
    })
    .await;
    for relay in &relays {
        relay.signal(libc::SIGTERM);
    }
    for relay in &mut relays {
        relay.wait_exit(Duration::from_secs(20)).await;
    }
    assert_eq!(app.count("select count(*) from postbox.deliveries").await, (KEYS * PER_KEY) as i64);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), KEYS as usize);
    let mut requests = 0;
    for (key, arrivals) in seen.iter() {
        requests += arrivals.len();
        // Each event is sent only once the one before it was answered 2xx.
        let mut acknowledged = 0;
        for &(seq, ok) in arrivals {
            assert!(
                seq <= acknowledged + 1,
                "key {key}: event {seq} was sent before event {} succeeded; arrivals: {arrivals:?}",
                acknowledged + 1
            );
            if ok && seq == acknowledged + 1 {
                acknowledged = seq;
            }
        }
        assert_eq!(acknowledged, PER_KEY, "key {key}: every event acknowledged in order");
    }
    println!(
        "ordering under faults: {} events in {KEYS} keys, {requests} requests (one in ten answered 500), {KILLS} kills",
        KEYS * PER_KEY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_next_delivery_goes_as_soon_as_the_one_before_is_recorded_not_at_the_next_poll() {
    const EVENTS: usize = 20;
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.changed").await;
    app.subscribe(&receiver.url("/hook"), &["order.*"]).await;
    let relay = crate::support::relay::InProcessRelay::start(crate::support::app::test_settings(
        &app.db.url,
        &[("POSTBOX_RELAY__POLL_INTERVAL", "10s")],
    ))
    .await;
    app.wait_for_listeners(1).await;
    let started = std::time::Instant::now();
    for n in 0..EVENTS {
        emit_keyed(&app, &format!("n{n:02}"), Some("k")).await;
    }
    let seen = receiver.collect_distinct(EVENTS, Duration::from_secs(8)).await;
    let took = started.elapsed();
    relay.stop().await;
    assert_eq!(seen.len(), EVENTS);
    println!("{EVENTS} events of one key in {took:?}");
}

#[tokio::test]
async fn the_cli_emits_keyed_events_tracks_tables_in_order_and_refuses_postbox_types() {
    let app = TestApp::new().await;
    app.register("order.changed").await;
    app.sql.batch_execute("create table carts (id int primary key)").await.unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_postbox"))
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .output()
            .expect("run postbox");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    assert!(cli(&["emit", "order.changed", "{}", "--ordering-key", "order/7"]).0);
    assert!(cli(&["track", "carts", "--ordered"]).0);
    app.sql.batch_execute("insert into carts values (3)").await.unwrap();
    let keys: Vec<Option<String>> = app
        .sql
        .query("select ordering_key from postbox.outbox order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(keys, [Some("order/7".to_owned()), Some("carts/3".to_owned())]);

    let (ok, stderr) = cli(&["emit", "postbox.endpoint.disabled", "{}"]);
    assert!(!ok && stderr.contains("is reserved"), "{stderr}");
}
