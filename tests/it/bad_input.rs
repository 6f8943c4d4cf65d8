//! Input that could hurt: huge and deeply nested payloads, endpoints that go
//! away mid-flight, secrets that cannot sign.

use serde_json::json;

use crate::support::{Receiver, TestApp};

#[tokio::test]
async fn a_deeply_nested_payload_is_delivered_byte_for_byte() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let nested = format!("{{\"deep\": {}1{}}}", "[".repeat(2000), "]".repeat(2000));
    app.sql.execute("select postbox.emit('a.b', $1::text::jsonb)", &[&nested]).await.unwrap();
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1);
    let body = String::from_utf8(receiver.recv().await.body.to_vec()).unwrap();
    assert!(body.contains(&nested), "payload embedded as stored");

    // And it can still be inspected (CLI, API and web page share this).
    let id = app.sql.query_one("select id from postbox.deliveries", &[]).await.unwrap().get(0);
    let detail = postbox::admin::deliveries::get(&app.sql, &postbox::admin::Access::Admin, id)
        .await
        .expect("a deep payload can be inspected");
    assert_eq!(detail.payload, serde_json::Value::Null, "too deep to parse, said so");
    assert_eq!(detail.request_body, body, "the request body as sent");
    assert_eq!(detail.attempts.len(), 1);
}

#[tokio::test]
async fn an_oversized_payload_is_refused_at_write_time_and_the_limit_can_be_raised() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let big = json!({ "blob": "x".repeat(2 * 1024 * 1024) });
    let err = app.sql.execute("select postbox.emit('a.b', $1)", &[&big]).await.unwrap_err();
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("more than the limit of 1048576 bytes"), "{message}");
    assert_eq!(app.count("select count(*) from postbox.outbox").await, 0);

    // The DBA's setting for the database, not a session's (see trust.rs).
    app.sql
        .batch_execute(&format!("alter database {} set postbox.max_payload_bytes = 4194304", app.db.name))
        .await
        .unwrap();
    app.sql.execute("select postbox.emit('a.b', $1)", &[&big]).await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.outbox").await, 1);
}

#[tokio::test]
async fn an_endpoint_deleted_mid_flight_is_no_trouble() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    let claimed = app.deliverer.claim(10).await.unwrap();
    app.sql.execute("select postbox.unsubscribe($1)", &[&endpoint]).await.unwrap();
    let record = app.deliverer.attempt(claimed.into_iter().next().unwrap()).await;
    let recorded = app.deliverer.record(&[record]).await.expect("recording after a delete succeeds");
    assert_eq!(recorded.attempts, 0, "nothing to record against");
    assert_eq!(app.count("select count(*) from postbox.deliveries").await, 0);
}

#[tokio::test]
async fn a_secret_that_cannot_sign_ends_the_delivery_with_the_reason_and_sends_nothing() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s")]).await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let broken = app.subscribe(&receiver.url("/broken"), &["*"]).await;
    let fine = app.subscribe(&receiver.url("/fine"), &["*"]).await;
    // Only by going around the checks can a bad secret get in.
    app.sql
        .batch_execute(&format!(
            "alter table postbox.endpoints disable trigger endpoints_validate;
             update postbox.endpoints set secret = 'not-a-secret' where id = '{broken}';
             alter table postbox.endpoints enable trigger endpoints_validate;"
        ))
        .await
        .unwrap();
    let event = app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 2);

    assert_eq!(app.delivery_state(event, broken).await, ("failed".into(), 1));
    let error = app.attempts(event, broken).await[0].1.clone().unwrap();
    assert!(error.contains("unusable endpoint secret"), "{error}");
    assert_eq!(app.delivery_state(event, fine).await.0, "succeeded");
    let paths: Vec<String> = receiver.drain().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/fine"]);
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let old = app.secret(endpoint).await;
    let new = "whsec_c2VjcmV0LWtleS10aGF0LWlzLWxvbmctZW5vdWdo";
    app.sql
        .execute(
            "update postbox.endpoints set previous_secret = secret, secret = $2,
                    previous_secret_expires_at = now() + interval '24 hours' where id = $1",
            &[&endpoint, &new],
        )
        .await
        .unwrap();

    let verifies = |secret: &str, request: &crate::support::receiver::Received| {
        let key = postbox::delivery::signing::SigningKey::from_secret(secret).unwrap();
        let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
        postbox::delivery::signing::verify(
            &key,
            request.header("webhook-id"),
            timestamp,
            &request.body,
            request.header("webhook-signature"),
        )
    };

    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    app.deliver().await;
    let during = receiver.recv().await;
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(&old, &during) && verifies(new, &during));

    app.sql
        .execute(
            "update postbox.endpoints set previous_secret_expires_at = now() where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    app.deliver().await;
    let after = receiver.recv().await;
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(verifies(new, &after) && !verifies(&old, &after));
}
