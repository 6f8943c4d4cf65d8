//! retention.period: finished events are deleted with their deliveries and
//! attempts; undispatched events and pending deliveries are kept.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{app::test_settings, eventually, Receiver, TestApp};

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

    let pruned =
        postbox::retention::prune(&app.sql, Duration::from_secs(30 * 86400), 2, &CancellationToken::new())
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
    let relay = postbox::Relay::bind(settings).await.unwrap();
    let metrics = format!("http://{}/metrics", relay.admin_addr());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    app.emit("a.b", json!({"n": 1})).await;
    receiver.recv().await;
    eventually(Duration::from_secs(10), "the delivered event is pruned", || async {
        app.count("select count(*) from postbox.outbox").await == 0
    })
    .await;
    assert_eq!(app.count("select count(*) from postbox.attempts").await, 0);
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    assert!(text.contains("postbox_events_pruned_total 1"), "{text}");

    shutdown.cancel();
    running.await.unwrap().unwrap();
}
