//! Trust boundaries (docs/security.md): what an app writer, an operator's
//! stored values or a database role can put in front of the relay must
//! neither stop it nor get past the schema's checks.

use std::time::Duration;

use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, Reply, TestApp};

/// A connection acting as an app that is only `postbox_writer`.
async fn writer(app: &TestApp) -> Client {
    let writer = app.db.connect().await;
    writer.batch_execute("set role postbox_writer").await.unwrap();
    writer
}

fn db_message(err: &tokio_postgres::Error) -> String {
    err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_else(|| err.to_string())
}

#[tokio::test]
async fn a_writer_cannot_store_a_time_no_webhook_can_carry() {
    let app = TestApp::new().await;
    app.register("h.x").await;
    let writer = writer(&app).await;
    for time in ["infinity", "-infinity", "10000-01-01 00:00:00+00", "0044-03-15 00:00:00+00 BC"] {
        let err = writer
            .execute(
                "insert into postbox.outbox (event_type, payload, occurred_at) values ('h.x', '{}', $1::text::timestamptz)",
                &[&time],
            )
            .await
            .expect_err(time);
        assert!(db_message(&err).contains("RFC 3339, years 0001 to 9999"), "{time}: {}", db_message(&err));
    }
    writer
        .execute(
            "insert into postbox.outbox (event_type, payload, occurred_at) values ('h.x', '{}', '9999-12-31 23:59:59+00')",
            &[],
        )
        .await
        .expect("the last second of year 9999 is a valid time");
}

/// Rows from before the schema checked (or written around its checks) must
/// not stop the relay: the one delivery fails with a reason, every other
/// event arrives, the API can show it and the relay stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsendable_row_fails_alone_and_the_relay_keeps_delivering() {
    let app = TestApp::new().await;
    app.register("h.x").await;
    let mut receiver = Receiver::start().await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.sql
        .batch_execute(
            "alter table postbox.outbox disable trigger outbox_validate;
             insert into postbox.outbox (event_type, payload, occurred_at) values
                 ('h.x', '{\"n\": \"inf\"}', 'infinity'),
                 ('h.x', '{\"n\": \"-inf\"}', '-infinity'),
                 ('h.x', '{\"n\": \"bc\"}', '0044-03-15 BC'),
                 ('h.x', '{\"n\": \"far\"}', '12000-01-01');
             alter table postbox.outbox enable trigger outbox_validate;",
        )
        .await
        .unwrap();
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    app.emit("h.x", json!({"n": "normal"})).await;

    let received = receiver.recv().await;
    assert_eq!(received.json()["data"], json!({"n": "normal"}), "only the sendable event is sent");
    app.wait_for_count(
        "select count(*) from postbox.deliveries where status = 'failed'",
        4,
        Duration::from_secs(10),
    )
    .await;
    let failed = app
        .sql
        .query(
            "select d.id, d.last_error, d.attempt_count from postbox.deliveries d where d.status = 'failed'",
            &[],
        )
        .await
        .unwrap();
    for row in &failed {
        let error: String = row.get("last_error");
        assert!(error.contains("occurred_at cannot be sent"), "{error}");
        assert_eq!(row.get::<_, i32>("attempt_count"), 1, "failed at once, not retried");
    }

    let http = reqwest::Client::new();
    let id: Uuid = failed[0].get("id");
    let shown = http.get(format!("{}/api/v1/deliveries/{id}", relay.base)).send().await.unwrap();
    assert_eq!(shown.status(), 200, "the API shows an unsendable delivery");
    let shown: serde_json::Value = serde_json::from_str(&shown.text().await.unwrap()).unwrap();
    assert!(shown["attempts"][0]["error"].as_str().unwrap().contains("occurred_at"), "{shown}");
    let ready = http.get(format!("{}/readyz", relay.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // The relay goes on: a later event arrives too.
    app.emit("h.x", json!({"n": "later"})).await;
    assert_eq!(receiver.recv().await.json()["data"], json!({"n": "later"}));
    assert!(receiver.drain().is_empty(), "nothing else was sent");
    relay.stop().await;
}

#[tokio::test]
async fn an_endpoint_header_http_cannot_carry_fails_its_deliveries_with_the_reason() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    let broken = app.subscribe(&receiver.url("/broken"), &["*"]).await;
    let fine = app.subscribe(&receiver.url("/fine"), &["*"]).await;
    let refused = app
        .sql
        .execute(
            "update postbox.endpoints set headers = '{\"X-A\": \"a\\u0007b\"}' where id = $1",
            &[&broken],
        )
        .await
        .expect_err("the schema refuses control characters in header values");
    assert!(db_message(&refused).contains("without control characters"), "{}", db_message(&refused));
    let refused = app
        .sql
        .execute("update postbox.endpoints set headers = '{\"Upgrade\": \"h2c\"}' where id = $1", &[&broken])
        .await
        .expect_err("the schema refuses hop-by-hop headers");
    assert!(db_message(&refused).contains("belongs to one hop"), "{}", db_message(&refused));

    // Around the checks, as a row from an older schema could be.
    app.sql
        .batch_execute(&format!(
            "alter table postbox.endpoints disable trigger endpoints_validate;
             update postbox.endpoints set headers = '{{\"X-A\": \"a\\u0007b\"}}' where id = '{broken}';
             alter table postbox.endpoints enable trigger endpoints_validate;"
        ))
        .await
        .unwrap();
    let event = app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 2);
    assert_eq!(app.delivery_state(event, broken).await, ("failed".into(), 1));
    let error = app.attempts(event, broken).await[0].1.clone().unwrap();
    assert!(error.contains("control characters") && error.contains("fix the endpoint's headers"), "{error}");
    assert_eq!(app.delivery_state(event, fine).await.0, "succeeded");
    assert_eq!(receiver.recv().await.path, "/fine");
}

#[tokio::test]
async fn writers_cannot_emit_the_reserved_postbox_types() {
    let app = TestApp::new().await;
    let writer = writer(&app).await;
    app.register("Postbox.mixed.case").await;
    for sql in [
        "insert into postbox.outbox (event_type, payload) values ('postbox.ping', '{}')",
        "select postbox.emit('postbox.ping', '{}')",
        "select postbox.emit('Postbox.mixed.case', '{}')",
    ] {
        let err = writer.execute(sql, &[]).await.expect_err(sql);
        assert!(db_message(&err).contains("is reserved"), "{sql}: {}", db_message(&err));
    }
    // postbox itself still can: an admin's ping.
    let endpoint = app.subscribe("https://example.com/", &["*"]).await;
    let admin = app.db.connect().await;
    admin.batch_execute("set role postbox_admin").await.unwrap();
    admin.execute("select postbox.ping($1)", &[&endpoint]).await.expect("an admin pings an endpoint");
}

#[tokio::test]
async fn the_payload_limit_measures_what_is_sent_and_only_a_dba_can_raise_it() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let writer = writer(&app).await;
    // 3 MB of one repeated character compresses to almost nothing on disk.
    let compressible = json!({"blob": "x".repeat(3_000_000)});
    let err = writer.execute("select postbox.emit('a.b', $1)", &[&compressible]).await.expect_err("3 MB");
    assert!(db_message(&err).contains("more than the limit of 1048576 bytes"), "{}", db_message(&err));

    let err = writer
        .batch_execute(&format!(
            "begin; set local postbox.max_payload_bytes = 99999999;
             insert into postbox.outbox (event_type, payload) values ('a.b', '{compressible}');"
        ))
        .await
        .expect_err("a writer's own SET does not raise the limit");
    assert!(db_message(&err).contains("more than the limit"), "{}", db_message(&err));
    writer.batch_execute("rollback").await.unwrap();

    let err = writer
        .execute("select postbox.emit('a.b', '{}', tenant => $1)", &[&"t".repeat(2_000_000)])
        .await
        .expect_err("the tenant counts");
    assert!(db_message(&err).contains("more than the limit"), "{}", db_message(&err));
    let err = writer
        .execute(
            "insert into postbox.outbox (event_type, payload, previous) values ('a.b', '{}', '[1, 2]')",
            &[],
        )
        .await
        .expect_err("previous is an object of old values");
    assert!(db_message(&err).contains("previous must be a JSON object"), "{}", db_message(&err));

    let big_actor = json!({"blob": "y".repeat(2_000_000)});
    let err = writer
        .execute("select postbox.emit('a.b', '{}', actor => $1)", &[&big_actor])
        .await
        .expect_err("the actor counts");
    assert!(db_message(&err).contains("more than the limit"), "{}", db_message(&err));

    app.sql
        .batch_execute(&format!("alter database {} set postbox.max_payload_bytes = 4194304", app.db.name))
        .await
        .unwrap();
    let raised = app.db.connect().await;
    raised.batch_execute("set role postbox_writer").await.unwrap();
    raised
        .execute("select postbox.emit('a.b', $1)", &[&compressible])
        .await
        .expect("the DBA raised the limit");
}

#[tokio::test]
async fn subscribing_refuses_what_the_relay_would_refuse_however_it_is_spelled() {
    let app = TestApp::new().await;
    app.sql.batch_execute("update postbox.network_policy set allow_private = false").await.unwrap();
    for url in [
        "http://127.0.0.%31/",
        "http://127%2e0%2e0%2e1/",
        "http://[::ffff:0:7f00:1]/",
        "http://[64:ff9b:1::a00:1]/",
    ] {
        let err = app.sql.execute("select postbox.subscribe($1)", &[&url]).await.expect_err(url);
        let message = db_message(&err);
        assert!(
            message.contains("percent-encoding") || message.contains("network policy"),
            "{url}: {message}"
        );
    }
    // A key of 25 bytes: base64 ends in two padding characters, and the last
    // character before them carries four bits that must be zero.
    let canonical = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let trailing_bits = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB==";
    app.sql
        .execute("select postbox.subscribe('https://example.com/', secret => $1)", &[&canonical])
        .await
        .unwrap();
    let err = app
        .sql
        .execute("select postbox.subscribe('https://example.com/', secret => $1)", &[&trailing_bits])
        .await
        .expect_err("non-canonical base64");
    assert!(db_message(&err).contains("not canonical base64"), "{}", db_message(&err));
}

#[tokio::test]
async fn no_postbox_function_is_executable_by_public() {
    let app = TestApp::new().await;
    let rows = app
        .sql
        .query(
            "select p.oid::regprocedure::text from pg_proc p
             where p.pronamespace = 'postbox'::regnamespace
               and (p.proacl is null
                    or exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))",
            &[],
        )
        .await
        .unwrap();
    let public: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(public.is_empty(), "executable by PUBLIC: {public:?}");
    // And a role with no postbox grant cannot call them.
    let stranger = format!("stranger_{}", Uuid::new_v4().simple());
    app.sql
        .batch_execute(&format!("create role {stranger}; grant usage on schema postbox to {stranger}"))
        .await
        .unwrap();
    let client = app.db.connect().await;
    client.batch_execute(&format!("set role {stranger}")).await.unwrap();
    let err = client.execute("select postbox.generate_secret()", &[]).await.expect_err("no grant");
    assert!(db_message(&err).contains("permission denied"), "{}", db_message(&err));
    client.batch_execute("reset role").await.unwrap();
    app.sql
        .batch_execute(&format!("revoke usage on schema postbox from {stranger}; drop role {stranger}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_composite_key_gives_an_unambiguous_subject_id() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table pairs (a text, b text, primary key (a, b));
             select postbox.track('pairs');
             insert into pairs values ('1,k', '2'), ('1', 'k,2');",
        )
        .await
        .unwrap();
    let rows = app.sql.query("select subject_id from postbox.outbox order by id", &[]).await.unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [r#"["1,k", "2"]"#, r#"["1", "k,2"]"#]);
    let decoded: Vec<Vec<String>> = ids.iter().map(|id| serde_json::from_str(id).unwrap()).collect();
    assert_ne!(decoded[0], decoded[1]);
}

/// A web page must not drive the admin server: not under a name of its own
/// (DNS rebinding), not with a cross-site request, bodyless or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_read_or_change_anything_through_the_admin_server() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    let base = &relay.base;
    let http = reqwest::Client::new();

    let rebound = http
        .get(format!("{base}/api/v1/endpoints"))
        .header("host", "rebind.attacker.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421, "a name the operator did not configure is refused");
    assert!(!rebound.text().await.unwrap().contains("example.com/hooks"));
    let page = http.get(format!("{base}/")).header("host", "rebind.attacker.example").send().await.unwrap();
    assert_eq!(page.status(), 421, "the page too");

    let created = http
        .post(format!("{base}/api/v1/endpoints"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(json!({"url": "https://evil.example/collect"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 403);
    assert!(created.text().await.unwrap().contains("cross-site"));
    for action in ["test", "disable", "rotate-secret"] {
        let response = http
            .post(format!("{base}/api/v1/endpoints/{endpoint}/{action}"))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "bodyless {action}");
    }
    assert_eq!(app.count("select count(*) from postbox.endpoints").await, 1, "nothing was created");
    assert_eq!(app.count("select count(*) from postbox.endpoints where enabled").await, 1, "nor disabled");

    // The page itself (same origin) and scripts (no Origin) still work.
    let same_origin = http
        .post(format!("{base}/api/v1/endpoints/{endpoint}/disable"))
        .header("origin", base.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200, "{}", same_origin.text().await.unwrap());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_taken_in_any_case_and_must_be_long_off_loopback() {
    let app = TestApp::new().await;
    let token = "a-long-enough-admin-token";
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[("POSTBOX_ADMIN__TOKEN", token)])).await;
    let http = reqwest::Client::new();
    for authorization in [format!("Bearer {token}"), format!("bearer {token}"), format!("BEARER {token}")] {
        let response = http
            .get(format!("{}/api/v1/endpoints", relay.base))
            .header("authorization", authorization.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{authorization}");
    }
    for wrong in ["Bearer a-long-enough-admin-toke", "Bearer ", "Basic YTpi", ""] {
        let response = http
            .get(format!("{}/api/v1/endpoints", relay.base))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong:?}");
    }
    relay.stop().await;

    let env = vec![
        ("DATABASE_URL".to_owned(), app.db.url.clone()),
        ("POSTBOX_ADMIN__LISTEN".to_owned(), "0.0.0.0:0".to_owned()),
        ("POSTBOX_ADMIN__TOKEN".to_owned(), "change-me".to_owned()),
    ];
    let err = postbox::config::Settings::load_from(None, env).expect_err("a short token off loopback");
    assert!(err.to_string().contains("admin.token") && err.to_string().contains("16 bytes"), "{err}");
}

/// A loop that cannot make progress shows in /readyz, by name, and clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_stalled_loop() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    let http = reqwest::Client::new();
    let readyz = || async {
        let response = http.get(format!("{}/readyz", relay.base)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    crate::support::eventually(Duration::from_secs(10), "the relay is ready", || async {
        readyz().await.0 == 200
    })
    .await;

    // A DBA's lock holds every dispatch pass.
    let mut dba = app.db.connect().await;
    let tx = dba.transaction().await.unwrap();
    tx.batch_execute("lock table postbox.outbox in access exclusive mode").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let last = loop {
        let answer = readyz().await;
        if answer.0 == 503 || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last.0, 503, "readyz reports the stalled dispatcher within 20 s: {}", last.1);
    assert!(last.1.contains("dispatcher loop has made no progress"), "{}", last.1);
    tx.rollback().await.unwrap();
    crate::support::eventually(Duration::from_secs(10), "ready again once the lock is gone", || async {
        readyz().await.0 == 200
    })
    .await;
    relay.stop().await;
}

/// The relay's own limit on what it sends: a 100 KB event that the
/// database accepted fails against a 64 KiB relay, and nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_relays_request_limit_fails_with_the_reason() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let mut receiver = Receiver::start().await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let relay =
        InProcessRelay::start(test_settings(&app.db.url, &[("POSTBOX_DELIVERY__MAX_REQUEST_BODY", "64KiB")]))
            .await;
    let big = app.emit("a.b", json!({"blob": "x".repeat(100_000)})).await;
    app.emit("a.b", json!({"small": true})).await;
    assert_eq!(receiver.recv().await.json()["data"], json!({"small": true}));
    app.wait_for_count(
        "select count(*) from postbox.deliveries where status = 'failed'",
        1,
        Duration::from_secs(10),
    )
    .await;
    let error: String = app
        .sql
        .query_one("select last_error from postbox.deliveries where event_id = $1", &[&big])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("more than delivery.max_request_body (65536 bytes)"), "{error}");
    assert!(receiver.drain().is_empty(), "the big event was never sent");
    relay.stop().await;
}

/// A lease that keeps running out (a relay too slow to send within it) spends
/// the attempts it was claimed for, so the delivery ends instead of being sent
/// as attempt 1 forever; and a request that cannot start within its lease is
/// not sent at all.
#[tokio::test]
async fn a_lease_that_keeps_running_out_spends_the_schedule_and_ends() {
    let app = TestApp::with_settings(&[
        ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s"),
        ("POSTBOX_RELAY__LEASE", "1s"),
        ("POSTBOX_DELIVERY__TIMEOUT", "500ms"),
    ])
    .await;
    let mut receiver = Receiver::start().await;
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    let expire = "update postbox.deliveries set leased_until = now() - interval '1 s'";
    for attempt in 1..=2 {
        let claimed = app.deliverer.claim(10).await.unwrap();
        assert_eq!(claimed[0].attempt_number, attempt);
        app.sql.batch_execute(expire).await.unwrap(); // the relay never recorded it
    }
    let last = app.deliverer.claim(10).await.unwrap().remove(0);
    assert_eq!(last.attempt_number, 3, "past the schedule");

    // Held past what its lease leaves for a request (a fifth is kept for recording).
    tokio::time::sleep(Duration::from_millis(850)).await;
    let record = app.deliverer.attempt(last).await;
    assert!(
        record.error.as_deref().unwrap_or_default().contains("lease ran out before the request"),
        "{record:?}"
    );
    app.deliverer.record(&[record]).await.unwrap();
    let (status, attempts) = app
        .sql
        .query_one("select status, attempt_count from postbox.deliveries", &[])
        .await
        .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1)))
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("failed", 3));
    assert!(receiver.drain().is_empty(), "nothing was sent");
}

/// Credentials an endpoint sends are sent, but never stored or shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_credentials_are_sent_but_not_stored_or_shown() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let mut receiver = Receiver::start().await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    app.sql
        .execute(
            "update postbox.endpoints
             set headers = '{\"Authorization\": \"Bearer s3cr3t-value\", \"X-Functions-Key\": \"s3cr3t-value\",
                             \"X-Team\": \"blue\"}'
             where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    app.emit("a.b", json!({})).await;
    let received = receiver.recv().await;
    assert_eq!(received.header("authorization"), "Bearer s3cr3t-value", "the receiver gets it");
    app.wait_for_count("select count(*) from postbox.attempts", 1, Duration::from_secs(10)).await;
    let stored: serde_json::Value =
        app.sql.query_one("select request_headers from postbox.attempts", &[]).await.unwrap().get(0);
    assert_eq!(stored["authorization"], "***");
    assert_eq!(stored["x-functions-key"], "***");
    assert_eq!(stored["x-team"], "blue");

    let http = reqwest::Client::new();
    for path in [format!("/api/v1/endpoints/{endpoint}"), "/api/v1/endpoints".to_owned()] {
        let text = http.get(format!("{}{path}", relay.base)).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains("s3cr3t-value") && text.contains("***"), "{path}: {text}");
    }
    relay.stop().await;
}

/// A receiver answering with hundreds of KB of headers gets a bounded record.
#[tokio::test]
async fn a_receivers_headers_are_kept_only_up_to_a_cap() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    let mut reply = Reply::status(200);
    for i in 0..90 {
        reply = reply.header(Box::leak(format!("x-filler-{i}").into_boxed_str()), "v".repeat(4000));
    }
    receiver.answer_all(reply);
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1);
    let size: i32 = app
        .sql
        .query_one("select octet_length(response_headers::text) from postbox.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(size < 20_000, "{size} bytes of headers stored");
    let note: String = app
        .sql
        .query_one("select response_headers ->> 'postbox-omitted-headers' from postbox.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(note.contains("over 16384 bytes"), "{note}");
}

/// An UPDATE that moves a row to another partition reaches row triggers as a
/// DELETE and an INSERT (Postgres's own semantics): it emits `destroyed`
/// under the old key, then `created` under the new one, in that order, and
/// nothing of another row, even with a writable CTE in the same statement.
#[tokio::test]
async fn moving_a_row_between_partitions_is_destroyed_then_created_and_nothing_else() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table tickets (id int, region text, title text, primary key (id, region))
                 partition by list (region);
             create table tickets_eu partition of tickets for values in ('eu');
             create table tickets_us partition of tickets for values in ('us');
             select postbox.track('tickets', 'ticket');
             insert into tickets values (1, 'eu', 'a'), (2, 'eu', 'b'), (3, 'us', 'c');
             delete from postbox.outbox;
             with gone as (delete from tickets where id = 3 returning 1)
                 update tickets set region = 'us', title = title || (select count(*) from gone)::text where id = 2;",
        )
        .await
        .unwrap();
    let rows = app
        .sql
        .query("select event_type, subject_id, payload ->> 'title' from postbox.outbox order by id", &[])
        .await
        .unwrap();
    let mut events: Vec<(String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("ticket.created".to_owned(), r#"["2", "us"]"#.to_owned(), "b1".to_owned()),
            ("ticket.destroyed".to_owned(), r#"["2", "eu"]"#.to_owned(), "b".to_owned()),
            ("ticket.destroyed".to_owned(), r#"["3", "us"]"#.to_owned(), "c".to_owned()),
        ]
    );
}
