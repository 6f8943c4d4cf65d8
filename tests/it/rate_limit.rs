//! Per-endpoint rate limits: `endpoints.rate_limit` requests per second,
//! across all relays together; what exceeds it waits and is sent later.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::State, http::StatusCode, Router};
use serde_json::{json, Value};

use crate::support::{app::test_settings, eventually, process::RelayProcess, relay::InProcessRelay, TestApp};

/// A receiver that notes when each request arrived.
async fn timing_receiver(arrivals: Arc<Mutex<Vec<Instant>>>) -> String {
    async fn handle(State(arrivals): State<Arc<Mutex<Vec<Instant>>>>) -> StatusCode {
        arrivals.lock().unwrap().push(Instant::now());
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(
        async move { axum::serve(listener, Router::new().fallback(handle).with_state(arrivals)).await },
    );
    url
}

/// The most requests in any window of `width` (sliding, from each arrival).
fn busiest_window(arrivals: &[Instant], width: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= width {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_together_keep_an_endpoint_within_its_rate_limit_and_send_everything() {
    const LIMIT: usize = 50;
    const EVENTS: usize = 620;
    let app = TestApp::new().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let url = timing_receiver(Arc::clone(&arrivals)).await;
    app.register("a.b").await;
    let endpoint = app.subscribe(&url, &["*"]).await;
    app.sql
        .execute("update postbox.endpoints set rate_limit = $2 where id = $1", &[&endpoint, &(LIMIT as i32)])
        .await
        .unwrap();
    let settings = [("POSTBOX_RELAY__POLL_INTERVAL", "200ms"), ("POSTBOX_DATABASE__POOL_SIZE", "4")];
    let mut relays: Vec<RelayProcess> = (0..2).map(|_| RelayProcess::start(&app.db.url, &settings)).collect();
    app.wait_for_listeners(2).await;

    let started = Instant::now();
    app.sql
        .execute(
            "insert into postbox.outbox (event_type, payload)
             select 'a.b', jsonb_build_object('n', n) from generate_series(1, $1::int) n",
            &[&(EVENTS as i32)],
        )
        .await
        .unwrap();
    let done = "select count(*) from postbox.deliveries where status = 'succeeded'";
    app.wait_for_count(done, EVENTS as i64, Duration::from_secs(60)).await;
    let took = started.elapsed();
    for relay in &relays {
        relay.signal(libc::SIGTERM);
    }
    for relay in &mut relays {
        relay.wait_exit(Duration::from_secs(20)).await;
    }

    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= EVENTS, "every event arrives: {} requests for {EVENTS}", arrivals.len());
    let busiest = busiest_window(&arrivals, Duration::from_secs(10));
    let allowed = LIMIT * 10 * 11 / 10;
    println!(
        "rate limit {LIMIT}/s, 2 relays: {EVENTS} events in {:.1} s ({:.1}/s), busiest 10 s window {busiest} (at most {allowed})",
        took.as_secs_f64(),
        EVENTS as f64 / took.as_secs_f64()
    );
    assert!(busiest <= allowed, "the receiver saw {busiest} requests in 10 s; the limit allows {allowed}");
    // Excess waits rather than being dropped, and the limit is used: the
    // burst (half a second's worth) and then the steady rate.
    assert!(
        took >= Duration::from_secs_f64((EVENTS - LIMIT / 2) as f64 / LIMIT as f64 * 0.95),
        "{EVENTS} events at {LIMIT}/s cannot take only {took:?}"
    );
    assert!(
        took <= Duration::from_secs_f64(EVENTS as f64 / LIMIT as f64 * 1.5),
        "sending fell far below the limit: {took:?}"
    );
}

#[tokio::test]
async fn a_claim_takes_only_the_permits_the_limit_has_free_and_the_rest_stay_due() {
    let app = TestApp::new().await;
    let receiver_arrivals = Arc::new(Mutex::new(Vec::new()));
    let url = timing_receiver(Arc::clone(&receiver_arrivals)).await;
    app.register("a.b").await;
    let limited = app.subscribe(&url, &["*"]).await;
    let unlimited = app.subscribe(&url.replace("/hook", "/other"), &["*"]).await;
    app.sql.execute("update postbox.endpoints set rate_limit = 10 where id = $1", &[&limited]).await.unwrap();
    for n in 0..30 {
        app.emit("a.b", json!({ "n": n })).await;
    }
    app.dispatch().await;
    // 30 to the unlimited endpoint; a burst of half a second (5) to the other.
    assert_eq!(app.deliver().await, 35);
    let pending: i64 = app
        .sql
        .query_one(
            "select count(*) from postbox.deliveries where endpoint_id = $1 and status = 'pending'
               and next_attempt_at <= now()",
            &[&limited],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 25, "the rest wait, due, for a later claim");
    let unlimited_done: i64 = app
        .sql
        .query_one(
            "select count(*) from postbox.deliveries where endpoint_id = $1 and status = 'succeeded'",
            &[&unlimited],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unlimited_done, 30);
    // Then one more every tenth of a second.
    eventually(Duration::from_secs(10), "the limited endpoint's backlog drains at its rate", || async {
        app.deliver().await;
        app.count("select count(*) from postbox.deliveries where status = 'pending'").await == 0
    })
    .await;
}

#[tokio::test]
async fn the_rate_limit_is_set_and_cleared_from_the_api_and_the_cli_with_clear_errors() {
    let app = TestApp::new().await;
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/v1/endpoints", relay.base))
        .header("content-type", "application/json")
        .body(json!({"url": "https://example.com/hook", "rate_limit": 20}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap();
    assert_eq!(created["rate_limit"], 20);
    let id = created["id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        let request = http
            .patch(format!("{}/api/v1/endpoints/{id}", relay.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap())
        }
    };
    let (status, body) = patch(json!({"rate_limit": 0})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rate_limit"), "{body}");
    let (status, body) = patch(json!({"rate_limit": null})).await;
    assert_eq!((status, &body["rate_limit"]), (reqwest::StatusCode::OK, &Value::Null));

    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_postbox"))
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .output()
            .expect("run postbox");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, out) = cli(&["endpoints", "update", &id, "--rate-limit", "7"]);
    assert!(ok && out.contains("rate limit") && out.contains("7 requests/s"), "{out}");
    let (ok, out) = cli(&["endpoints", "update", &id, "--rate-limit", "0"]);
    assert!(!ok && out.contains("--rate-limit"), "{out}");
    let (ok, out) = cli(&["endpoints", "update", &id, "--rate-limit", "-1"]);
    assert!(!ok && out.contains("-1 is not in 1.."), "{out}");
    // In SQL too the error names the value, and never prints the row (its secret).
    let err = app
        .sql
        .execute("update postbox.endpoints set rate_limit = 0 where id = $1::text::uuid", &[&id])
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("rate_limit must be at least 1 request per second"), "{text}");
    assert!(!text.contains("whsec_"), "the secret leaked into the error: {text}");
    let (ok, out) = cli(&["endpoints", "update", &id, "--no-rate-limit", "--json"]);
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["rate_limit"], Value::Null);
    relay.stop().await;
}
