//! Faults injected for real: relays killed with SIGKILL, paused with
//! SIGSTOP, stopped with SIGTERM mid-flight, and LISTEN connections cut.
//! Each prints the figures it measured.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{app::test_settings, process::RelayProcess, Receiver, Reply, TestApp};

const FAST_RELAY: &[(&str, &str)] = &[
    ("POSTBOX_RELAY__BATCH_SIZE", "50"),
    ("POSTBOX_RELAY__CONCURRENCY", "32"),
    ("POSTBOX_RELAY__LEASE", "3s"),
    ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
    ("POSTBOX_DELIVERY__TIMEOUT", "2s"),
    ("POSTBOX_DATABASE__POOL_SIZE", "4"),
];

async fn insert_events(app: &TestApp, count: usize) {
    app.sql
        .execute(
            "insert into postbox.outbox (event_type, payload)
             select 'a.b', jsonb_build_object('n', n) from generate_series(1, $1::int) as n",
            &[&(count as i32)],
        )
        .await
        .unwrap();
}

/// Bounded wait until every event is dispatched and every delivery succeeded.
async fn wait_all_succeeded(app: &TestApp, limit: Duration) {
    // First attempts in flight have no delivery row: their dispatch batch
    // stands for them.
    let open = "select (select count(*) from postbox.deliveries where status <> 'succeeded')
                     + (select count(*) from postbox.outbox where dispatched_at is null)
                     + (select count(*) from postbox.dispatch_batches)";
    crate::support::eventually(limit, "all deliveries succeeded", || async { app.count(open).await == 0 })
        .await;
}

async fn stop_all(relays: &mut [RelayProcess]) {
    for relay in relays.iter() {
        relay.signal(libc::SIGTERM);
    }
    for relay in relays.iter_mut() {
        let status = relay.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "relay exited with {status}; log:\n{}", relay.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_relays_at_random_loses_no_event() {
    const EVENTS: usize = 6000;
    const RELAYS: usize = 3;
    const KILLS: usize = 12;
    const CONCURRENCY: usize = 32;
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.answer_all(Reply::status(200).after(Duration::from_millis(20)));
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    insert_events(&app, EVENTS).await;

    let url = app.db.url.clone();
    let mut relays: Vec<RelayProcess> = (0..RELAYS).map(|_| RelayProcess::start(&url, FAST_RELAY)).collect();
    let collecting = tokio::spawn(async move {
        let seen = receiver.collect_distinct(EVENTS, Duration::from_secs(120)).await;
        (receiver, seen)
    });
    for _ in 0..KILLS {
        let pause = rand::rng().random_range(50..250);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..RELAYS);
        relays[victim].kill9();
        relays[victim] = RelayProcess::start(&url, FAST_RELAY);
    }
    let last_restart = Instant::now();
    let (mut receiver, mut seen) = collecting.await.unwrap();
    wait_all_succeeded(&app, Duration::from_secs(60)).await;
    let settled_after = last_restart.elapsed();
    stop_all(&mut relays).await;
    for late in receiver.drain() {
        *seen.entry(late.header("webhook-id").to_owned()).or_insert(0) += 1;
    }

    let requests: usize = seen.values().sum();
    let duplicates = requests - seen.len();
    println!(
        "kills={KILLS} events={EVENTS} lost=0 duplicates={duplicates} requests={requests} \
         settled {settled_after:?} after the last restart"
    );
    assert_eq!(seen.len(), EVENTS, "every event arrived");
    assert!(
        duplicates <= KILLS * CONCURRENCY,
        "{duplicates} duplicates: more than the {} requests that could be in flight at the kills",
        KILLS * CONCURRENCY
    );
    assert_eq!(
        app.count("select count(*) from postbox.deliveries").await,
        EVENTS as i64,
        "one delivery per event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_relays_share_the_work_without_duplicates() {
    for relay_count in [3, 8] {
        const EVENTS: usize = 3000;
        let app = TestApp::new().await;
        let mut receiver = Receiver::start().await;
        app.register("a.b").await;
        app.subscribe(&receiver.url("/"), &["*"]).await;
        let mut relays: Vec<RelayProcess> =
            (0..relay_count).map(|_| RelayProcess::start(&app.db.url, FAST_RELAY)).collect();
        app.wait_for_listeners(relay_count as i64).await;

        let started = Instant::now();
        insert_events(&app, EVENTS).await;
        let mut seen = receiver.collect_distinct(EVENTS, Duration::from_secs(60)).await;
        let took = started.elapsed();
        wait_all_succeeded(&app, Duration::from_secs(30)).await;
        stop_all(&mut relays).await;
        for late in receiver.drain() {
            *seen.entry(late.header("webhook-id").to_owned()).or_insert(0) += 1;
        }
        let requests: usize = seen.values().sum();
        let shares: Vec<u64> =
            relays.iter().map(|r| r.attempts_made().expect("shutdown summary logged")).collect();
        println!("relays={relay_count} events={EVENTS} requests={requests} in {took:?}; attempts per relay {shares:?}");
        assert_eq!(seen.len(), EVENTS, "nothing lost");
        assert_eq!(requests, EVENTS, "no duplicates without faults");
        assert_eq!(shares.iter().sum::<u64>(), EVENTS as u64);
        assert!(shares.iter().filter(|&&n| n > 0).count() >= 2, "work is shared: {shares:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_relay_that_outlives_its_lease_changes_nothing_when_it_wakes() {
    const EVENTS: usize = 20;
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.answer_all(Reply::status(200).after(Duration::from_millis(300)));
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let settings = [
        ("POSTBOX_RELAY__LEASE", "2s"),
        ("POSTBOX_DELIVERY__TIMEOUT", "1s"),
        ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
        ("POSTBOX_DATABASE__POOL_SIZE", "4"),
    ];
    let mut paused = RelayProcess::start(&app.db.url, &settings);
    insert_events(&app, EVENTS).await;
    receiver.recv().await; // the first relay is sending
    paused.signal(libc::SIGSTOP);

    let mut taking_over = RelayProcess::start(&app.db.url, &settings);
    wait_all_succeeded(&app, Duration::from_secs(30)).await;
    paused.signal(libc::SIGCONT);
    stop_all(std::slice::from_mut(&mut paused)).await;
    stop_all(std::slice::from_mut(&mut taking_over)).await;

    assert!(
        paused.log_text().contains("attempts arrived after their lease ran out"),
        "the paused relay tried to record late; log:\n{}",
        paused.log_text()
    );
    assert_eq!(
        app.count("select count(*) from postbox.attempts").await,
        EVENTS as i64,
        "one recorded attempt per delivery: the late results were fenced off"
    );
    // What the paused relay held counts its lost attempt too (a lease that
    // keeps running out must not send forever).
    assert_eq!(
        app.count("select count(*) from postbox.deliveries where attempt_count between 1 and 2").await,
        EVENTS as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hundreds_in_flight_finishes_them_and_exits_zero() {
    const EVENTS: usize = 400;
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.answer_all(Reply::status(200).after(Duration::from_secs(1)));
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let mut relay = RelayProcess::start(
        &app.db.url,
        &[
            ("POSTBOX_RELAY__CONCURRENCY", "256"),
            ("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "256"),
            ("POSTBOX_RELAY__SHUTDOWN_GRACE", "10s"),
        ],
    );
    insert_events(&app, EVENTS).await;
    for _ in 0..200 {
        receiver.recv().await;
    }
    let signalled = Instant::now();
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", relay.log_text());

    let received = 200 + receiver.drain().len() as i64;
    let succeeded = app.count("select count(*) from postbox.deliveries where status = 'succeeded'").await;
    let held = app.count("select count(*) from postbox.deliveries where lease_token is not null").await;
    let due_later = app
        .count("select count(*) from postbox.deliveries where status = 'pending' and next_attempt_at > now()")
        .await;
    println!(
        "SIGTERM with {received} requests sent: exited 0 after {took:?}, {succeeded} recorded as succeeded"
    );
    assert_eq!(succeeded, received, "every request that went out finished and was recorded");
    assert_eq!(held, 0, "nothing is left leased");
    assert_eq!(due_later, 0, "unsent work is due at once for the next relay");
}

#[tokio::test]
async fn a_killed_listen_connection_reconnects_and_events_still_arrive() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    // Polling every minute: only a re-established LISTEN delivers within 10 s.
    let settings = test_settings(&app.db.url, &[("POSTBOX_RELAY__POLL_INTERVAL", "60s")]);
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(postbox::run(settings, shutdown.clone()));
    app.wait_for_listeners(1).await;

    let mut killed: Vec<i32> = Vec::new();
    for round in 0..3 {
        // Every listener of this database that is not already dying.
        let victims: Vec<i32> = app
            .sql
            .query(
                "select pid from pg_stat_activity
                 where datname = $1 and application_name = 'postbox-listen' and pid <> all($2)",
                &[&app.db.name, &killed],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(victims.len(), 1, "one live LISTEN connection before round {round}");
        app.sql.execute("select pg_terminate_backend($1)", &[&victims[0]]).await.unwrap();
        killed.extend(victims);
        // The old backend may linger briefly; wait until a new one listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening: i64 = app
                .sql
                .query_one(
                    "select count(*) from pg_stat_activity where datname = $1 and application_name = 'postbox-listen'
                     and query ilike 'listen%' and pid <> all($2)",
                    &[&app.db.name, &killed],
                )
                .await
                .unwrap()
                .get(0);
            if listening > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no new LISTEN connection within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let event = app.emit("a.b", json!({ "round": round })).await;
        assert_eq!(receiver.recv().await.header("webhook-id"), event.to_string());
    }
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}
