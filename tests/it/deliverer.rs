use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::{io::AsyncWriteExt, net::TcpListener};
use uuid::Uuid;

use crate::support::{Receiver, Reply, TestApp};

/// The spec's formula, written out here instead of calling postbox::delivery::signing.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn seconds_until_next_attempt(app: &TestApp) -> f64 {
    let query = "select extract(epoch from next_attempt_at - now())::float8 from postbox.deliveries";
    app.sql.query_one(query, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_delivery_is_signed_and_shaped_as_the_spec_says() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("payment.succeeded").await;
    let endpoint = app.subscribe(&receiver.url("/hooks"), &["payment.*"]).await;
    app.sql
        .execute(
            "update postbox.endpoints set headers = '{\"X-Team\": \"billing\"}' where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let event: Uuid = app
        .sql
        .query_one(
            "select postbox.emit('payment.succeeded', '{\"amount\": 1250, \"currency\": \"EUR\"}', actor => '{\"id\": 7}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let occurred_at: SystemTime = std::time::UNIX_EPOCH
        + Duration::from_secs_f64(
            app.sql
                .query_one("select extract(epoch from occurred_at)::float8 from postbox.outbox", &[])
                .await
                .unwrap()
                .get(0),
        );

    app.dispatch().await;
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(app.deliver().await, 1);
    let request = receiver.recv().await;

    assert_eq!(request.path, "/hooks");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("user-agent"), format!("postbox/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(request.header("webhook-id"), event.to_string());
    assert_eq!(request.header("postbox-event-type"), "payment.succeeded");
    assert_eq!(request.header("postbox-attempt"), "1");
    assert_eq!(request.header("x-team"), "billing");
    let delivery_id: Uuid = app.sql.query_one("select id from postbox.deliveries", &[]).await.unwrap().get(0);
    assert_eq!(request.header("postbox-delivery-id"), delivery_id.to_string());
    let timestamp: u64 = request.header("webhook-timestamp").parse().unwrap();
    assert!(timestamp >= before && timestamp <= before + 5, "timestamp is the time of the attempt");

    let secret = app.secret(endpoint).await;
    let expected = expected_signature(
        &secret,
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        &request.body,
    );
    assert_eq!(request.header("webhook-signature"), expected);

    let body = request.json();
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["data"], json!({"amount": 1250, "currency": "EUR"}));
    assert_eq!(body["actor"], json!({"id": 7}));
    assert!(body.get("previous").is_none(), "no previous on an emitted event: {body}");
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z') && timestamp.contains('T'), "RFC 3339: {timestamp}");
    let stored = humantime::parse_rfc3339(timestamp).expect("timestamp parses as RFC 3339");
    let drift = stored.duration_since(occurred_at).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
    assert!(drift < Duration::from_millis(1), "timestamp is occurred_at ({drift:?} apart)");

    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 1));
    assert_eq!(app.attempts(event, endpoint).await, [(Some(200), None)]);
}

#[tokio::test]
async fn tracked_updates_carry_previous_values_on_the_wire() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.sql
        .batch_execute(
            "create table posts (id int primary key, title text);
             select postbox.track('posts', subject => 'post');
             insert into posts values (1, 'old');",
        )
        .await
        .unwrap();
    app.subscribe(&receiver.url("/"), &["post.updated"]).await;
    app.sql.batch_execute("update posts set title = 'new'").await.unwrap();
    app.dispatch().await;
    app.deliver().await;
    let body = receiver.recv().await.json();
    assert_eq!(body["type"], "post.updated");
    assert_eq!(body["data"], json!({"id": 1, "title": "new"}));
    assert_eq!(body["previous"], json!({"title": "old"}));
    assert!(body.get("actor").is_none());
}

#[tokio::test]
async fn failures_are_retried_until_success_and_every_attempt_is_recorded() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let event = app.emit("a.b", json!({"n": 1})).await;
    receiver.script([Reply::status(500).body("database is down"), Reply::status(500)]);
    app.dispatch().await;

    for _ in 0..3 {
        assert_eq!(app.deliver().await, 1);
    }
    assert_eq!(app.deliver().await, 0, "nothing left once it succeeded");

    let requests = receiver.drain();
    assert_eq!(requests.len(), 3);
    let attempts: Vec<&str> = requests.iter().map(|r| r.header("postbox-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        requests.iter().all(|r| r.header("webhook-id") == event.to_string()),
        "the webhook-id is the same on every attempt"
    );
    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 3));
    assert_eq!(
        app.attempts(event, endpoint).await,
        [(Some(500), None), (Some(500), None), (Some(200), None)]
    );
    let body: String = app
        .sql
        .query_one("select response_body from postbox.attempts where attempt_number = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "database is down");
}

#[tokio::test]
async fn an_exhausted_schedule_fails_the_delivery() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s")]).await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let event = app.emit("a.b", json!({})).await;
    receiver.script([Reply::status(500), Reply::status(502), Reply::status(200)]);
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.deliver().await, 0, "no third attempt with a two-entry schedule");
    assert_eq!(app.delivery_state(event, endpoint).await, ("failed".into(), 2));
    assert_eq!(app.attempts(event, endpoint).await, [(Some(500), None), (Some(502), None)]);
    let finished: bool = app
        .sql
        .query_one("select next_attempt_at is null from postbox.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert!(finished, "a failed delivery has no next attempt");
}

#[tokio::test]
async fn retries_wait_for_the_schedule_and_honour_retry_after() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,5s,5m")]).await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    receiver.script([Reply::status(500), Reply::status(429).header("retry-after", "120")]);
    app.dispatch().await;

    assert_eq!(app.deliver().await, 1);
    let wait = seconds_until_next_attempt(&app).await;
    assert!((4.0..=5.6).contains(&wait), "second attempt due in about 5 s (±10%), got {wait}");
    assert_eq!(app.deliver().await, 0, "not due yet");

    app.sql.batch_execute("update postbox.deliveries set next_attempt_at = now()").await.unwrap();
    assert_eq!(app.deliver().await, 1);
    let wait = seconds_until_next_attempt(&app).await;
    assert!(wait >= 270.0, "the schedule's 5m wins over a shorter Retry-After, got {wait}");
}

#[tokio::test]
async fn retry_after_longer_than_the_schedule_is_honoured() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,5s")]).await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    receiver.script([Reply::status(503).header("retry-after", "120")]);
    app.dispatch().await;
    app.deliver().await;
    let wait = seconds_until_next_attempt(&app).await;
    assert!((118.0..=121.0).contains(&wait), "Retry-After: 120 honoured, got {wait}");
}

#[tokio::test]
async fn loopback_targets_are_refused_by_default_and_nothing_is_sent() {
    let app = TestApp::with_settings(&[("POSTBOX_NETWORK__ALLOW_PRIVATE", "false")]).await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    for url in [receiver.url("/"), format!("http://localhost:{}/", receiver.addr.port())] {
        let err = app.sql.execute("select postbox.subscribe($1)", &[&url]).await.unwrap_err();
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("refused by network policy"), "refused at subscribe time: {message}");
    }
    // Endpoints made while an earlier relay allowed private targets:
    app.sql.batch_execute("update postbox.network_policy set allow_private = true").await.unwrap();
    let by_ip = app.subscribe(&receiver.url("/"), &["*"]).await;
    let by_name = app.subscribe(&format!("http://localhost:{}/", receiver.addr.port()), &["*"]).await;
    let event = app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 2);

    for endpoint in [by_ip, by_name] {
        let attempts = app.attempts(event, endpoint).await;
        let (status, error) = &attempts[0];
        assert_eq!(*status, None);
        let error = error.as_deref().unwrap();
        assert!(error.contains("refused by network policy") && error.contains("loopback"), "{error}");
    }
    assert!(receiver.drain().is_empty(), "the receiver saw no request");
}

#[tokio::test]
async fn connection_errors_timeouts_redirects_and_big_bodies_are_recorded_as_failures() {
    let app = TestApp::with_settings(&[
        ("POSTBOX_DELIVERY__TIMEOUT", "500ms"),
        ("POSTBOX_DELIVERY__MAX_RESPONSE_BODY", "1KiB"),
        ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s"),
    ])
    .await;
    app.register("a.b").await;

    // nothing listens on this port
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let refused = app.subscribe(&closed_url, &["*"]).await;

    let hanging_url = crate::support::receiver::hanging_server().await;
    let hangs = app.subscribe(&hanging_url, &["*"]).await;

    // answers garbage
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}/", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = garbage.accept().await {
            let _ = socket.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    });
    let garbled = app.subscribe(&garbage_url, &["*"]).await;

    let receiver = Receiver::start().await;
    receiver.script([Reply::status(301).header("location", "https://example.com/")]);
    let redirects = app.subscribe(&receiver.url("/redirect"), &["*"]).await;

    let big = Receiver::start().await;
    big.script([Reply::status(200).body("x".repeat(100_000))]);
    let chatty = app.subscribe(&big.url("/"), &["*"]).await;

    let event = app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 5);

    let error_of = |attempts: Vec<(Option<i32>, Option<String>)>| attempts[0].1.clone().unwrap_or_default();
    let message = error_of(app.attempts(event, refused).await);
    assert!(message.contains("connection failed") && message.contains("refused"), "{message}");
    let message = error_of(app.attempts(event, hangs).await);
    assert!(message.contains("timeout after 500ms"), "{message}");
    let message = error_of(app.attempts(event, garbled).await);
    assert!(!message.is_empty(), "garbage is an error");
    assert_eq!(
        app.attempts(event, redirects).await,
        [(Some(301), None)],
        "a 3xx is a response, not followed"
    );
    assert_eq!(app.delivery_state(event, redirects).await.0, "failed");
    for endpoint in [refused, hangs, garbled] {
        assert_eq!(app.delivery_state(event, endpoint).await, ("failed".into(), 1));
    }

    let kept: i32 = app
        .sql
        .query_one(
            "select length(a.response_body) from postbox.attempts a join postbox.deliveries d on d.id = a.delivery_id
             where d.endpoint_id = $1",
            &[&chatty],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1024, "the body is kept up to delivery.max_response_body");
    assert_eq!(app.delivery_state(event, chatty).await.0, "succeeded");
}

#[tokio::test]
async fn a_result_written_after_the_lease_moved_on_changes_nothing() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;

    let claimed = app.deliverer.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // Another relay took over after the lease expired.
    app.sql.batch_execute("update postbox.deliveries set lease_token = gen_random_uuid()").await.unwrap();
    let record = app.deliverer.attempt(claimed.into_iter().next().unwrap()).await;
    assert_eq!(app.deliverer.record(&[record]).await.unwrap().attempts, 0);
    assert_eq!(app.count("select count(*) from postbox.attempts").await, 0);
    assert_eq!(
        app.count("select count(*) from postbox.deliveries where status = 'pending' and attempt_count = 1")
            .await,
        1,
        "the claim spent the attempt, recorded or not"
    );
}

#[tokio::test]
async fn a_claimed_delivery_is_not_claimed_again_until_its_lease_expires() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    app.subscribe("http://127.0.0.1:9/", &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliverer.claim(10).await.unwrap().len(), 1);
    assert!(app.deliverer.claim(10).await.unwrap().is_empty(), "held by the first claim");
    app.sql
        .batch_execute("update postbox.deliveries set leased_until = now() - interval '1 s'")
        .await
        .unwrap();
    let reclaimed = app.deliverer.claim(10).await.unwrap();
    assert_eq!(reclaimed.len(), 1, "an expired lease is claimed again");
    assert_eq!(
        reclaimed[0].attempt_number, 2,
        "the lost attempt still counts: a lease that keeps running out cannot send forever"
    );
}

#[tokio::test]
async fn deliveries_of_disabled_endpoints_wait_until_re_enabled() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    assert_eq!(app.deliver().await, 0);
    app.sql.execute("update postbox.endpoints set enabled = true where id = $1", &[&endpoint]).await.unwrap();
    assert_eq!(app.deliver().await, 1);
    receiver.recv().await;
}
