//! The admin HTTP server: health, readiness, metrics, auth and `/api/v1`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, Reply, TestApp, TestDb};

/// A relay running in this process; its admin API at `base`.
struct Admin {
    base: String,
    http: reqwest::Client,
    relay: InProcessRelay,
}

impl Admin {
    async fn start(database_url: &str, overrides: &[(&str, &str)]) -> Self {
        let relay = InProcessRelay::start(test_settings(database_url, overrides)).await;
        Self { base: relay.base.clone(), http: reqwest::Client::new(), relay }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn stop(self) {
        self.relay.stop().await;
    }
}

#[tokio::test]
async fn health_and_readiness_report_the_database_and_schema() {
    let app = TestApp::new().await;
    let admin = Admin::start(&app.db.url, &[]).await;
    assert_eq!(admin.get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
    // Not ready until its start-up checks pass, then ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let (status, body) = admin.get("/readyz").await;
        if status == StatusCode::OK || std::time::Instant::now() > deadline {
            break (status, body);
        }
        assert!(body["reason"].as_str().unwrap_or_default().starts_with("starting"), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready, (StatusCode::OK, json!({"status": "ready"})));
    admin.stop().await;

    let empty = TestDb::empty().await;
    let admin = Admin::start(&empty.url, &[]).await;
    let (status, body) = admin.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reason"].as_str().unwrap().contains("run postbox migrate"), "{body}");
    assert_eq!(admin.get("/healthz").await.0, StatusCode::OK, "alive while waiting for the schema");
    admin.stop().await;

    let unreachable = test_settings("postgres://postgres:sekrit@127.0.0.1:1/none", &[]);
    let relay = postbox::Relay::bind(unreachable).await.unwrap();
    let base = format!("http://{}", relay.admin_addr());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = response.text().await.unwrap();
    assert!(text.contains("cannot connect to 127.0.0.1:1/none as postgres"), "where it tried: {text}");
    assert!(text.contains("Connection refused"), "the real cause: {text}");
    assert!(!text.contains("sekrit"), "never the password: {text}");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_count_deliveries_and_show_the_backlog() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::status(500)]);
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let admin = Admin::start(&app.db.url, &[]).await;
    app.emit("a.b", json!({})).await;
    receiver.recv().await;
    receiver.recv().await;
    // Bounded wait for the second attempt to be counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, body) = admin.get("/metrics").await;
        let text = body.as_str().unwrap().to_owned();
        if text.contains("postbox_attempts_total{outcome=\"succeeded\",delivery=\"succeeded\"} 1")
            && text.contains("postbox_events_dispatched_total 2")
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "metrics never showed the success:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        // The event, and postbox.endpoint.failing after its failed first attempt.
        "postbox_events_dispatched_total 2",
        "postbox_attempts_total{outcome=\"failed\",delivery=\"pending\"} 1",
        "postbox_attempt_duration_seconds_count 2",
        "postbox_undispatched_events 0",
        "postbox_requests_in_flight 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    admin.stop().await;
}

#[tokio::test]
async fn the_api_needs_the_bearer_token_when_one_is_set() {
    let app = TestApp::new().await;
    let admin = Admin::start(&app.db.url, &[("POSTBOX_ADMIN__TOKEN", "s3cret-token")]).await;
    let url = format!("{}/api/v1/endpoints", admin.base);
    let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status() };
    assert_eq!(status(admin.http.get(&url)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(admin.http.get(&url).bearer_auth("wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(admin.http.get(&url).bearer_auth("s3cret-token")).await, StatusCode::OK);
    assert_eq!(admin.get("/healthz").await.0, StatusCode::OK, "health needs no token");
    assert_eq!(admin.get("/metrics").await.0, StatusCode::OK, "metrics need no token");
    admin.stop().await;
}

#[tokio::test]
async fn without_a_token_the_api_is_refused_off_loopback() {
    let app = TestApp::new().await;
    let admin = Admin::start(&app.db.url, &[("POSTBOX_ADMIN__LISTEN", "0.0.0.0:0")]).await;
    let port = admin.base.rsplit(':').next().unwrap().to_owned();
    let response = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/endpoints")).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.text().await.unwrap().contains("admin.token is not set"));
    admin.stop().await;

    let admin = Admin::start(&app.db.url, &[]).await;
    assert_eq!(admin.get("/api/v1/endpoints").await.0, StatusCode::OK, "loopback without a token is fine");
    admin.stop().await;
}

#[tokio::test]
async fn endpoints_can_be_managed_end_to_end_over_the_api() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("order.created").await;
    let admin = Admin::start(&app.db.url, &[]).await;

    let (status, created) = admin
        .post(
            "/api/v1/endpoints",
            json!({"url": receiver.url("/hooks"), "event_types": ["order.*"], "tenant": "acme", "description": "orders"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"), "the secret is shown once");
    assert_eq!(created["event_types"], json!(["order.*"]));

    let (status, listed) = admin.get("/api/v1/endpoints").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "secrets are never listed");

    let (status, updated) = admin
        .call(reqwest::Method::PATCH, &format!("/api/v1/endpoints/{id}"), Some(json!({"tenant": null})))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["tenant"], Value::Null);
    assert_eq!(updated["description"], "orders", "fields not given stay");

    let (_, disabled) = admin.post(&format!("/api/v1/endpoints/{id}/disable"), json!({})).await;
    assert_eq!(
        (disabled["enabled"].clone(), disabled["disabled_reason"].clone()),
        (json!(false), json!("disabled by an operator"))
    );
    let (_, enabled) = admin.post(&format!("/api/v1/endpoints/{id}/enable"), json!({})).await;
    assert_eq!(enabled["enabled"], true);

    let (status, rotated) = admin.post(&format!("/api/v1/endpoints/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["secret"], created["secret"]);

    let (status, test) = admin.post(&format!("/api/v1/endpoints/{id}/test"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ping = receiver.recv().await;
    assert_eq!(ping.header("webhook-id"), test["event_id"].as_str().unwrap());
    assert_eq!(
        ping.header("webhook-signature").split(' ').count(),
        2,
        "old and new secret sign during rotation"
    );

    app.emit("order.created", json!({"id": 1})).await;
    receiver.recv().await;
    // Recorded first: a delivery in flight is not replayed.
    let succeeded = "select count(*) from postbox.deliveries where status = 'succeeded'";
    app.wait_for_count(succeeded, 2, Duration::from_secs(10)).await;
    let (status, replayed) =
        admin.post(&format!("/api/v1/endpoints/{id}/replay"), json!({"since": "1h"})).await;
    assert_eq!(
        (status, replayed["replayed"].clone()),
        (StatusCode::ACCEPTED, json!(1)),
        "ping is not replayed"
    );
    receiver.recv().await;

    let (status, _) = admin.call(reqwest::Method::DELETE, &format!("/api/v1/endpoints/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin.get(&format!("/api/v1/endpoints/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("no endpoint"));
    admin.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_message() {
    let app = TestApp::new().await;
    let admin = Admin::start(&app.db.url, &[]).await;
    for (body, expected) in [
        (json!({"url": "ftp://example.com"}), "scheme must be http or https"),
        (json!({"url": "https://example.com", "event_types": ["nope.nope"]}), "unknown event type"),
        (json!({"url": "https://example.com", "colour": "red"}), "unknown field"),
        (json!({"event_types": ["*"]}), "missing field"),
        (json!({"url": "https://example.com", "secret": "whsec_short"}), "secret"),
    ] {
        let (status, response) = admin.post("/api/v1/endpoints", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
        assert!(response["error"].as_str().unwrap().contains(expected), "{body}: {response}");
    }
    let (status, response) = admin.get("/api/v1/endpoints/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    let (status, response) = admin.get("/api/v1/deliveries?status=lost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(response["error"].as_str().unwrap().contains("unknown status"));
    let (status, response) = admin.get("/api/v1/nothing-here").await;
    assert_eq!((status, response["error"].clone()), (StatusCode::NOT_FOUND, json!("no such route")));
    let (status, _) = admin
        .post(&format!("/api/v1/endpoints/{}/replay", uuid::Uuid::new_v4()), json!({"since": "1h"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    admin.stop().await;
}

#[tokio::test]
async fn deliveries_can_be_listed_inspected_and_redelivered() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.answer_all(Reply::status(500).body("boom"));
    let mut healthy = Receiver::start().await;
    app.register("a.b").await;
    app.register("c.d").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["a.b"]).await;
    app.subscribe(&healthy.url("/"), &["c.d"]).await;
    let admin = Admin::start(&app.db.url, &[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s,0s")]).await;
    let event = app.emit("a.b", json!({"n": 1})).await;
    app.emit("c.d", json!({"n": 2})).await;
    let first = receiver.recv().await;
    for _ in 0..2 {
        receiver.recv().await;
    }
    healthy.recv().await;
    // Bounded wait for the relay to record the failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let (_, list) = admin.get("/api/v1/deliveries?status=failed").await;
        if list.as_array().is_some_and(|l| !l.is_empty()) {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "no failed delivery listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed[0]["event_id"], event.to_string());
    let (_, by_type) = admin.get("/api/v1/deliveries?event_type=c.d").await;
    assert_eq!(by_type.as_array().unwrap().len(), 1);
    let (_, by_endpoint) = admin.get(&format!("/api/v1/deliveries?endpoint_id={endpoint}&limit=1")).await;
    assert_eq!(by_endpoint.as_array().unwrap().len(), 1);

    let id = failed[0]["id"].as_str().unwrap();
    let (status, detail) = admin.get(&format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["payload"], json!({"n": 1}));
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["response_status"], 500);
    assert_eq!(attempts[0]["response_body"], "boom");
    assert!(attempts[0]["request_headers"]["webhook-signature"].as_str().unwrap().starts_with("v1,"));
    // Shown as sent, though the row keeps only what it cannot rebuild.
    for (name, value) in &first.headers {
        if name.as_str().starts_with("webhook-")
            || name.as_str().starts_with("postbox-")
            || name == "content-type"
        {
            assert_eq!(attempts[0]["request_headers"][name.as_str()], value.to_str().unwrap(), "{name}");
        }
    }
    let stored: serde_json::Value = app
        .sql
        .query_one("select request_headers from postbox.attempts where attempt_number = 1 and delivery_id = $1::text::uuid", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_object().unwrap().keys().collect::<Vec<_>>(), ["user-agent", "webhook-signature"]);

    receiver.answer_all(Reply::status(200));
    let (status, _) = admin.post(&format!("/api/v1/deliveries/{id}/redeliver"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(receiver.recv().await.header("postbox-attempt"), "4");

    let (status, status_body) = admin.get("/api/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status_body["endpoints"], 2);
    let (_, types) = admin.get("/api/v1/event-types").await;
    assert!(types.as_array().unwrap().iter().any(|t| t["name"] == "a.b"));
    let (status, _) = admin.post("/api/v1/event-types", json!({"name": "x.y", "description": "new"})).await;
    assert_eq!(status, StatusCode::CREATED);
    admin.stop().await;
}

#[tokio::test]
async fn every_route_in_the_openapi_document_exists_and_answers_as_documented() {
    let app = TestApp::new().await;
    let admin = Admin::start(&app.db.url, &[]).await;
    let document: Value = serde_json::from_str(postbox::api::OPENAPI).expect("docs/openapi.json is JSON");
    let (status, served) = admin.get("/api/v1/openapi.json").await;
    assert_eq!((status, &served), (StatusCode::OK, &document), "the server serves the document");

    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
            let body = operation.get("requestBody").map(|_| json!({}));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, response) = admin.call(method.clone(), &format!("/api/v1{concrete}"), body).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed");
            assert_ne!(response["error"], "no such route", "{method} {path} is not routed");
            let documented = operation["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(status.as_str()),
                "{method} {path} answered {status}, documented {:?}: {response}",
                documented.keys().collect::<Vec<_>>()
            );
            checked += 1;
        }
    }
    assert!(checked >= 17, "only {checked} operations documented");
    admin.stop().await;
}

#[tokio::test]
async fn delivery_pages_cover_every_delivery_once_even_within_one_batch() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    app.subscribe("http://127.0.0.1:9/x", &["*"]).await;
    for n in 0..25 {
        app.emit("a.b", json!({ "n": n })).await;
    }
    app.dispatch().await; // one batch: every delivery has the same created_at
    let admin = Admin::start(
        &app.db.url,
        &[("POSTBOX_RELAY__WAKEUP", "poll"), ("POSTBOX_RELAY__POLL_INTERVAL", "60s")],
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    let mut path = "/api/v1/deliveries?limit=10".to_owned();
    loop {
        let (status, page) = admin.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page = page.as_array().unwrap().clone();
        for delivery in &page {
            assert!(seen.insert(delivery["id"].as_str().unwrap().to_owned()), "listed twice");
        }
        let Some(last) = page.last() else { break };
        path = format!("/api/v1/deliveries?limit=10&before={}", last["id"].as_str().unwrap());
    }
    assert_eq!(seen.len(), 25);
    admin.stop().await;
}

/// The history comes from the database: an incident an hour old shows when
/// the page is opened now.
#[tokio::test]
async fn history_shows_an_incident_that_happened_before_anyone_looked() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    // 20 minutes ago: 5 events whose attempts failed and stayed pending.
    app.sql
        .batch_execute(&format!(
            "insert into postbox.outbox (event_type, payload, dispatched_at)
                 select 'a.b', '{{}}', now() - interval '20 minutes' from generate_series(1, 5);
             insert into postbox.deliveries (event_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at)
                 select event_id, '{endpoint}', 'pending', 1, now() + interval '1 hour',
                        now() - interval '20 minutes', now() - interval '20 minutes'
                 from postbox.outbox;
             insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, response_status)
                 select id, 1, now() - interval '20 minutes', 5, 503 from postbox.deliveries;"
        ))
        .await
        .unwrap();
    let admin = postbox::admin::Access::Admin.require_admin().unwrap();
    let hour = postbox::admin::status::history(&app.sql, admin, "1h").await.unwrap();
    assert_eq!(hour.bucket_seconds, 60);
    assert!((60..=62).contains(&hour.points.len()), "{} points", hour.points.len());
    let failed: i64 = hour.points.iter().map(|p| p.failed).sum();
    assert_eq!(failed, 5, "the failed attempts are in their minute");
    let incident = hour.points.iter().position(|p| p.failed == 5).unwrap();
    assert!(hour.points[..incident].iter().all(|p| p.backlog == 0), "no backlog before it");
    assert!(hour.points[incident..].iter().all(|p| p.backlog == 5), "five pending since");
    let day = postbox::admin::status::history(&app.sql, admin, "24h").await.unwrap();
    assert_eq!(day.bucket_seconds, 900);
    assert_eq!(day.points.iter().map(|p| p.failed).sum::<i64>(), 5);
    let err = postbox::admin::status::history(&app.sql, admin, "1y").await.unwrap_err();
    assert!(err.to_string().contains("expected 1h or 24h"), "{err}");
}
