//! rotate_secret, redeliver, replay and ping.

use serde_json::json;
use uuid::Uuid;

use crate::support::{Receiver, Reply, TestApp};

#[tokio::test]
async fn rotate_secret_returns_a_new_secret_and_keeps_the_old_one_for_a_day() {
    let app = TestApp::new().await;
    let endpoint = app.subscribe("https://example.com/", &["*"]).await;
    let old = app.secret(endpoint).await;
    let new: String =
        app.sql.query_one("select postbox.rotate_secret($1)", &[&endpoint]).await.unwrap().get(0);
    assert!(new.starts_with("whsec_") && new != old);
    let row = app
        .sql
        .query_one(
            "select secret, previous_secret,
                    previous_secret_expires_at between now() + interval '23 hours 59 minutes' and now() + interval '24 hours 1 minute'
             from postbox.endpoints where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), new);
    assert_eq!(row.get::<_, Option<String>>(1), Some(old));
    assert!(row.get::<_, bool>(2));
    let err = app.sql.execute("select postbox.rotate_secret($1)", &[&Uuid::new_v4()]).await.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("no endpoint with id"));
}

#[tokio::test]
async fn redeliver_schedules_one_more_attempt_of_a_finished_delivery() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s")]).await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let event = app.emit("a.b", json!({})).await;
    receiver.script([Reply::status(500)]);
    app.dispatch().await;
    app.deliver().await;
    assert_eq!(app.delivery_state(event, endpoint).await, ("failed".into(), 1));

    let delivery: Uuid = app.sql.query_one("select id from postbox.deliveries", &[]).await.unwrap().get(0);
    app.sql.execute("select postbox.redeliver($1)", &[&delivery]).await.unwrap();
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 2));
    let attempts: Vec<String> =
        receiver.drain().iter().map(|r| r.header("postbox-attempt").to_owned()).collect();
    assert_eq!(attempts, ["1", "2"]);

    app.sql.execute("select postbox.redeliver($1)", &[&delivery]).await.unwrap();
    assert_eq!(app.deliver().await, 1, "a succeeded delivery can be sent again too");

    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    let err = app.sql.execute("select postbox.redeliver($1)", &[&delivery]).await.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("is disabled"), "{err}");
    let err = app.sql.execute("select postbox.redeliver($1)", &[&Uuid::new_v4()]).await.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("no delivery with id"));
}

#[tokio::test]
async fn replay_resends_matching_events_since_a_time_including_ones_it_never_had() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    for t in ["order.created", "invoice.paid"] {
        app.register(t).await;
    }
    app.sql
        .batch_execute(
            "insert into postbox.outbox (event_type, payload, occurred_at) values
               ('order.created', '{\"n\": 1}', now() - interval '2 days'),
               ('order.created', '{\"n\": 2}', now() - interval '1 hour'),
               ('invoice.paid', '{\"n\": 3}', now() - interval '1 hour')",
        )
        .await
        .unwrap();
    app.dispatch().await; // before the endpoint existed: no deliveries
    let endpoint = app.subscribe(&receiver.url("/"), &["order.*"]).await;
    let replayed: i64 = app.replay(endpoint).await;
    assert_eq!(replayed, 1, "only order.* events of the last day");
    assert_eq!(app.deliver().await, 1);
    assert_eq!(receiver.recv().await.json()["data"], json!({"n": 2}));

    let again: i64 = app.replay(endpoint).await;
    assert_eq!(again, 1, "an existing delivery is attempted once more");
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.count("select count(*) from postbox.deliveries").await, 1);
}

#[tokio::test]
async fn ping_sends_a_test_event_to_one_endpoint_only() {
    let app = TestApp::new().await;
    let mut pinged = Receiver::start().await;
    let mut other = Receiver::start().await;
    let endpoint = app.subscribe(&pinged.url("/"), &["*"]).await;
    app.subscribe(&other.url("/"), &["*"]).await;
    let event: Uuid = app.sql.query_one("select postbox.ping($1)", &[&endpoint]).await.unwrap().get(0);
    assert_eq!(app.dispatch().await.events, 0, "not fanned out");
    assert_eq!(app.deliver().await, 1);
    let request = pinged.recv().await;
    assert_eq!(request.header("webhook-id"), event.to_string());
    assert_eq!(request.header("postbox-event-type"), "postbox.ping");
    assert_eq!(request.json()["data"]["endpoint_id"], endpoint.to_string());
    assert!(other.drain().is_empty());
}
