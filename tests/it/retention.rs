//! retention.period: finished events are deleted with their deliveries and
//! attempts; undispatched events and pending deliveries are kept.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{app::test_settings, eventually, relay::InProcessRelay, Receiver, TestApp};

/// An event with one delivery in `status` (none when `None`), `age_days` old.
async fn event(app: &TestApp, endpoint: Uuid, age_days: i32, status: Option<&str>) -> Uuid {
    let event: Uuid = app
        .sql
        .query_one(
            "insert into postbox.outbox (event_type, payload, occurred_at, dispatched_at)
             values ('a.b', '{}', now() - make_interval(days => $1), now() - make_interval(days => $1))
             returning event_id",
            &[&age_days],
        )
        .await
        .unwrap()
        .get(0);
    if let Some(status) = status {
        app.sql
            .execute(
                "with d as (
                     insert into postbox.deliveries (event_id, endpoint_id, status, next_attempt_at, attempt_count)
                     values ($1, $2, $3, case when $3 = 'pending' then now() + interval '1 hour' end, 1)
                     returning id)
                 insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, response_status)
                 select id, 1, now(), 1, 500 from d",
                &[&event, &endpoint, &status],
            )
            .await
            .unwrap();
    }
    event
}

#[tokio::test]
async fn pruning_deletes_finished_old_events_with_their_history_and_keeps_the_rest() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    // Interleaved, and more than one batch of each, so that the walk must
    // step over rows it keeps.
    for _ in 0..3 {
        doomed.push(event(&app, endpoint, 40, Some("succeeded")).await);
        doomed.push(event(&app, endpoint, 40, Some("failed")).await);
        kept.push(event(&app, endpoint, 40, Some("pending")).await);
        doomed.push(event(&app, endpoint, 40, None).await); // no subscriber matched
    }
    let undispatched: Uuid = app
        .sql
        .query_one(
            "insert into postbox.outbox (event_type, payload, occurred_at)
             values ('a.b', '{}', now() - interval '40 days') returning event_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    kept.push(undispatched);
    kept.push(event(&app, endpoint, 1, Some("succeeded")).await);
    kept.push(event(&app, endpoint, 40, Some("succeeded")).await); // after a recent one: next round

    let pruned = postbox::relay::retention::prune(
        &app.sql,
        Duration::from_secs(30 * 86400),
        2,
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(pruned, doomed.len() as u64);
    let remaining: Vec<Uuid> = app
        .sql
        .query("select event_id from postbox.outbox order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(remaining, kept);
    assert_eq!(
        app.count("select count(*) from postbox.deliveries").await,
        5,
        "kept events keep their deliveries"
    );
    assert_eq!(app.count("select count(*) from postbox.attempts").await, 5, "and their attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_prunes_delivered_events_once_the_period_is_over() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let mut receiver = Receiver::start().await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let settings = test_settings(
        &app.db.url,
        &[("POSTBOX_RETENTION__PERIOD", "1s"), ("POSTBOX_RETENTION__INTERVAL", "100ms")],
    );
    let relay = InProcessRelay::start(settings).await;
    let metrics = format!("{}/metrics", relay.base);

    app.emit("a.b", json!({"n": 1})).await;
    receiver.recv().await;
    eventually(Duration::from_secs(10), "the delivered event is pruned", || async {
        app.count("select count(*) from postbox.outbox").await == 0
    })
    .await;
    assert_eq!(app.count("select count(*) from postbox.attempts").await, 0);
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    assert!(text.contains("postbox_events_pruned_total 1"), "{text}");

    relay.stop().await;
}

#[tokio::test]
async fn attempts_live_in_day_partitions_and_outlived_days_are_dropped_whole() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let partitions = "select count(*) from pg_inherits where inhparent = 'postbox.attempts'::regclass";
    assert!(app.count(partitions).await >= 2, "today's partition and the default one after migrate");

    // A day long gone, made by hand, with one attempt in it; and a recent attempt.
    app.sql
        .batch_execute(
            "create table postbox.attempts_20200101 partition of postbox.attempts
                 for values from ('2020-01-01 00:00+00') to ('2020-01-02 00:00+00')",
        )
        .await
        .unwrap();
    let old = event(&app, endpoint, 1, Some("pending")).await; // a delivery that outlives its old attempt
    app.sql
        .execute(
            "insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, error)
             select d.id, 2, '2020-01-01 12:00+00', 1, 'timeout' from postbox.deliveries d where d.event_id = $1",
            &[&old],
        )
        .await
        .unwrap();
    let before = app.count("select count(*) from postbox.attempts").await;

    let done = postbox::relay::retention::round(
        &app.sql,
        Duration::from_secs(30 * 86400),
        &CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(done.partitions_dropped, 1);
    assert_eq!(
        app.count("select count(*) from postbox.attempts").await,
        before - 1,
        "only that day's attempt"
    );
    assert_eq!(app.count("select count(*) from pg_class where relname = 'attempts_20200101'").await, 0);
    let today = "select count(*) from pg_class where relname = 'attempts_' || to_char(now() at time zone 'UTC', 'YYYYMMDD')";
    assert_eq!(app.count(today).await, 1, "today's partition stays");
    let ahead = "select count(*) from pg_class where relname = 'attempts_' || to_char(now() at time zone 'UTC' + interval '3 days', 'YYYYMMDD')";
    assert_eq!(app.count(ahead).await, 1, "partitions are made ahead");
}

#[tokio::test]
async fn a_time_a_writer_chose_neither_stops_nor_steers_pruning() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    // Dispatched 40 days ago, but the writer dated it in the year 2999.
    let future_dated = event(&app, endpoint, 40, Some("succeeded")).await;
    app.sql
        .execute("update postbox.outbox set occurred_at = '2999-01-01' where event_id = $1", &[&future_dated])
        .await
        .unwrap();
    for _ in 0..5 {
        event(&app, endpoint, 40, Some("succeeded")).await;
    }
    // Dated long ago by its writer, but dispatched just now.
    let backdated = event(&app, endpoint, 0, Some("succeeded")).await;
    app.sql
        .execute("update postbox.outbox set occurred_at = '1970-01-01' where event_id = $1", &[&backdated])
        .await
        .unwrap();

    let pruned = postbox::relay::retention::prune(
        &app.sql,
        Duration::from_secs(30 * 86400),
        2,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(pruned, 6, "every event dispatched 40 days ago goes, the one dated 2999 too");
    let remaining: Vec<Uuid> = app
        .sql
        .query("select event_id from postbox.outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(remaining, [backdated], "an event dispatched today stays, whatever its occurred_at");
}

/// A prune that waits on a replay's lock must see what the replay did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_committed_while_a_prune_waits_is_not_pruned() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let replayed = event(&app, endpoint, 40, Some("failed")).await;
    let redelivered = event(&app, endpoint, 40, Some("failed")).await;
    let delivery: Uuid = app
        .sql
        .query_one("select id from postbox.deliveries where event_id = $1", &[&redelivered])
        .await
        .unwrap()
        .get(0);

    let mut operator = app.db.connect().await;
    let tx = operator.transaction().await.unwrap();
    tx.execute("select postbox.replay($1, now() - interval '41 days')", &[&endpoint]).await.unwrap();
    tx.execute("select postbox.redeliver($1)", &[&delivery]).await.unwrap();

    let pruner = app.db.connect().await;
    let prune = tokio::spawn(async move {
        postbox::relay::retention::prune(
            &pruner,
            Duration::from_secs(30 * 86400),
            100,
            &CancellationToken::new(),
        )
        .await
    });
    app.wait_for_count(
        &format!(
            "select count(*) from pg_stat_activity where datname = '{}' and wait_event_type = 'Lock'",
            app.db.name
        ),
        1,
        Duration::from_secs(10),
    )
    .await;
    tx.commit().await.unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(10), prune)
        .await
        .expect("the prune finishes once the replay commits")
        .unwrap()
        .unwrap();

    assert_eq!(pruned, 0, "both events were scheduled again before the prune could decide");
    for event in [replayed, redelivered] {
        let status: String = app
            .sql
            .query_one("select status from postbox.deliveries where event_id = $1", &[&event])
            .await
            .expect("the delivery is still there")
            .get(0);
        assert_eq!(status, "pending");
    }
}

#[tokio::test]
async fn an_event_whose_first_attempt_is_in_flight_is_not_pruned() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let in_flight = event(&app, endpoint, 40, None).await;
    let done = event(&app, endpoint, 40, None).await;
    // Sent straight from the outbox: no delivery row yet, only its batch.
    app.sql
        .execute(
            "insert into postbox.dispatch_batches (lease_token, leased_until, outbox_ids, endpoint_ids)
             select gen_random_uuid(), now() + interval '1 minute', array[id], array[$2::uuid]
             from postbox.outbox where event_id = $1",
            &[&in_flight, &endpoint],
        )
        .await
        .unwrap();

    let pruned =
        postbox::relay::retention::prune(&app.sql, Duration::from_secs(86400), 10, &CancellationToken::new())
            .await
            .unwrap();

    assert_eq!(pruned, 1);
    let remaining: Vec<Uuid> = app
        .sql
        .query("select event_id from postbox.outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(remaining, vec![in_flight], "{done} went, the event in flight stayed");
}
