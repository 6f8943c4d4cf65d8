use serde_json::json;
use uuid::Uuid;

use crate::support::TestApp;

/// The error message of a statement that must fail.
async fn sql_error(app: &TestApp, query: &str) -> String {
    let err = app.sql.batch_execute(query).await.expect_err(&format!("expected `{query}` to fail"));
    let db = err.as_db_error().expect("a database error");
    format!("{}{}", db.message(), db.hint().map(|h| format!(" ({h})")).unwrap_or_default())
}

#[tokio::test]
async fn emit_writes_an_outbox_row_and_returns_its_event_id() {
    let app = TestApp::new().await;
    app.register("payment.succeeded").await;
    let row = app
        .sql
        .query_one(
            "select postbox.emit('payment.succeeded', '{\"amount\": 5}', 'acme', 'payment', 'p1', '{\"id\": 9}')",
            &[],
        )
        .await
        .unwrap();
    let event_id: Uuid = row.get(0);
    let stored = app
        .sql
        .query_one(
            "select event_type, payload, tenant, subject_type, subject_id, actor, occurred_at is not null
             from postbox.outbox where event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(stored.get::<_, String>(0), "payment.succeeded");
    assert_eq!(stored.get::<_, serde_json::Value>(1), json!({"amount": 5}));
    assert_eq!(stored.get::<_, Option<String>>(2).as_deref(), Some("acme"));
    assert_eq!(stored.get::<_, Option<String>>(3).as_deref(), Some("payment"));
    assert_eq!(stored.get::<_, Option<String>>(4).as_deref(), Some("p1"));
    assert_eq!(stored.get::<_, Option<serde_json::Value>>(5), Some(json!({"id": 9})));
    assert!(stored.get::<_, bool>(6));
}

#[tokio::test]
async fn a_plain_insert_gets_a_fresh_event_id_and_keeps_a_given_one() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let given = Uuid::new_v4();
    app.sql
        .execute(
            "insert into postbox.outbox (event_type, payload, event_id) values ('order.created', '{}', $1)",
            &[&given],
        )
        .await
        .unwrap();
    app.sql
        .batch_execute("insert into postbox.outbox (event_type, payload) values ('order.created', '{}')")
        .await
        .unwrap();
    let ids: i64 = app.count("select count(distinct event_id) from postbox.outbox").await;
    assert_eq!(ids, 2);
    assert_eq!(
        app.count(&format!("select count(*) from postbox.outbox where event_id = '{given}'")).await,
        1
    );
}

#[tokio::test]
async fn unknown_event_types_fail_naming_the_type_and_write_nothing() {
    let app = TestApp::new().await;
    let message = sql_error(&app, "select postbox.emit('order.shipped', '{}')").await;
    assert!(message.contains("unknown event type 'order.shipped'"), "{message}");
    assert!(message.contains("register_event_type"), "the hint says how to fix it: {message}");
    let message =
        sql_error(&app, "insert into postbox.outbox (event_type, payload) values ('nope.nope', '{}')").await;
    assert!(message.contains("'nope.nope'"), "{message}");
    assert_eq!(app.count("select count(*) from postbox.outbox").await, 0);
}

#[tokio::test]
async fn payloads_and_actors_must_be_json_objects() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    for payload in ["[1,2]", "\"text\"", "42", "null"] {
        let message = sql_error(&app, &format!("select postbox.emit('a.b', '{payload}')")).await;
        assert!(message.contains("payload must be a JSON object"), "{payload}: {message}");
    }
    let message = sql_error(&app, "select postbox.emit('a.b', '{}', actor => '[1]')").await;
    assert!(message.contains("actor must be a JSON object"), "{message}");
    assert_eq!(app.count("select count(*) from postbox.outbox").await, 0);
}

#[tokio::test]
async fn register_event_type_is_idempotent_and_keeps_or_updates_the_description() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute("select postbox.register_event_type('invoice.paid', 'An invoice was paid')")
        .await
        .unwrap();
    app.sql.batch_execute("select postbox.register_event_type('invoice.paid')").await.unwrap();
    let description: Option<String> = app
        .sql
        .query_one("select description from postbox.event_types where name = 'invoice.paid'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(description.as_deref(), Some("An invoice was paid"));
    app.sql
        .batch_execute("select postbox.register_event_type('invoice.paid', 'Paid in full')")
        .await
        .unwrap();
    assert_eq!(
        app.count("select count(*) from postbox.event_types where name = 'invoice.paid' and description = 'Paid in full'")
            .await,
        1
    );
    let message = sql_error(&app, "select postbox.register_event_type('bad name!')").await;
    assert!(message.contains("invalid event type name 'bad name!'"), "{message}");
}

#[tokio::test]
async fn subscribe_generates_a_standard_webhooks_secret() {
    let app = TestApp::new().await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    let secret = app.secret(endpoint).await;
    let key = secret.strip_prefix("whsec_").expect("secret starts with whsec_");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(key).expect("base64");
    assert!((24..=64).contains(&bytes.len()), "{} bytes", bytes.len());
    let other = app.subscribe("https://example.com/hooks", &["*"]).await;
    assert_ne!(app.secret(other).await, secret, "every endpoint gets its own secret");

    let row = app
        .sql
        .query_one(
            "select event_types, tenant, filter, enabled, headers from postbox.endpoints where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), ["*"]);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<serde_json::Value>>(2), None);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, serde_json::Value>(4), json!({}));
}

#[tokio::test]
async fn subscribe_accepts_a_given_secret_and_rejects_an_unusable_one() {
    let app = TestApp::new().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let row = app
        .sql
        .query_one("select postbox.subscribe('https://example.com', secret => $1)", &[&secret])
        .await
        .unwrap();
    assert_eq!(app.secret(row.get(0)).await, secret);
    for (bad, expected) in [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("whsec_c2hvcnQ=", "expected 24 to 64"),
        ("whsec_!!!", "base64"),
    ] {
        let message =
            sql_error(&app, &format!("select postbox.subscribe('https://example.com', secret => '{bad}')"))
                .await;
        assert!(message.contains(expected), "{bad}: {message}");
    }
}

#[tokio::test]
async fn subscribe_rejects_bad_urls_with_a_message_naming_them() {
    let app = TestApp::new().await;
    for (url, expected) in [
        ("ftp://example.com/x", "scheme must be http or https"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("example.com/hooks", "expected an absolute http:// or https:// URL"),
        ("not a url", "expected an absolute"),
        ("http://exa mple.com/", "without spaces or credentials"),
        ("https://user:pw@example.com/", "without spaces or credentials"),
        ("https://example.com:70000/", "port out of range"),
        ("https://", "expected http(s)://host"),
    ] {
        let message = sql_error(&app, &format!("select postbox.subscribe('{url}')")).await;
        assert!(message.contains(&format!("'{url}'")), "message names the URL: {message}");
        assert!(message.contains(expected), "{url}: {message}");
    }
    for url in
        ["http://localhost:8080/hook", "https://[::1]/x?y=1#z", "https://api.example.com/v1/hooks?team=a%20b"]
    {
        app.sql
            .execute("select postbox.subscribe($1)", &[&url])
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    assert_eq!(app.count("select count(*) from postbox.endpoints").await, 3);
}

#[tokio::test]
async fn subscribe_refuses_inward_ip_literals_unless_the_relays_allow_them() {
    let app = TestApp::with_settings(&[("POSTBOX_NETWORK__ALLOW_PRIVATE", "false")]).await;
    for url in [
        "http://127.0.0.1:8080/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
    ] {
        let message = sql_error(&app, &format!("select postbox.subscribe('{url}')")).await;
        assert!(message.contains("refused by network policy"), "{url}: {message}");
    }
    for url in ["http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/"] {
        let message = sql_error(&app, &format!("select postbox.subscribe('{url}')")).await;
        assert!(message.contains("four decimal numbers"), "{url}: {message}");
    }
    for url in ["https://8.8.8.8/", "https://[2606:4700::1111]/", "https://hooks.example.com/"] {
        app.sql
            .execute("select postbox.subscribe($1)", &[&url])
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    app.sql.batch_execute("update postbox.network_policy set allow_cidrs = '{10.0.0.0/8}'").await.unwrap();
    app.sql.batch_execute("select postbox.subscribe('http://10.1.2.3/')").await.unwrap();
    let message = sql_error(&app, "select postbox.subscribe('http://192.168.0.1/')").await;
    assert!(message.contains("refused by network policy"), "{message}");
    app.sql.batch_execute("update postbox.network_policy set allow_private = true").await.unwrap();
    app.sql.batch_execute("select postbox.subscribe('http://192.168.0.1/')").await.unwrap();
}

#[tokio::test]
async fn subscribe_checks_event_types_filter_and_headers() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let message = sql_error(&app, "select postbox.subscribe('https://example.com', '{order.shipped}')").await;
    assert!(message.contains("unknown event type 'order.shipped'"), "{message}");
    let message = sql_error(&app, "select postbox.subscribe('https://example.com', '{ord*}')").await;
    assert!(message.contains("invalid event type pattern 'ord*'"), "{message}");
    let message = sql_error(&app, "select postbox.subscribe('https://example.com', '{}')").await;
    assert!(message.contains("at least one"), "{message}");
    let message = sql_error(&app, "select postbox.subscribe('https://example.com', filter => '[1]')").await;
    assert!(message.contains("filter must be a JSON object"), "{message}");
    let message = sql_error(
        &app,
        "insert into postbox.endpoints (url, secret, headers) values ('https://example.com', postbox.generate_secret(), '{\"webhook-id\": \"x\"}')",
    )
    .await;
    assert!(message.contains("'webhook-id' is set by postbox"), "{message}");
    // patterns need no registered type
    app.sql
        .batch_execute("select postbox.subscribe('https://example.com', '{order.created,invoice.*}')")
        .await
        .unwrap();
}

#[tokio::test]
async fn unsubscribe_removes_the_endpoint_and_complains_about_unknown_ones() {
    let app = TestApp::new().await;
    let endpoint = app.subscribe("https://example.com", &["*"]).await;
    app.sql.execute("select postbox.unsubscribe($1)", &[&endpoint]).await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.endpoints").await, 0);
    let err = app.sql.execute("select postbox.unsubscribe($1)", &[&endpoint]).await.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains(&endpoint.to_string()));
}

#[tokio::test]
async fn unsubscribing_deletes_the_endpoints_deliveries_and_attempts_and_nothing_else() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    // Nothing listens on port 9: every attempt fails and is recorded.
    let leaving = app.subscribe("http://127.0.0.1:9/leaving", &["*"]).await;
    let staying = app.subscribe("http://127.0.0.1:9/staying", &["*"]).await;
    app.emit("order.created", serde_json::json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 2);
    assert_eq!(app.count("select count(*) from postbox.attempts").await, 2);

    app.sql.execute("select postbox.unsubscribe($1)", &[&leaving]).await.unwrap();
    let left = |table: &str| format!("select count(*) from postbox.{table}");
    assert_eq!(app.count(&left("deliveries")).await, 1);
    assert_eq!(app.count(&left("attempts")).await, 1);
    assert_eq!(
        app.count(&format!(
            "select count(*) from postbox.attempts a join postbox.deliveries d on d.id = a.delivery_id
             where d.endpoint_id = '{staying}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from postbox.outbox where event_type not like 'postbox.%'").await,
        1,
        "the event stays for other endpoints (postbox's own events about the failures aside)"
    );
}

#[tokio::test]
async fn the_patterns_matching_an_event_type_agree_with_event_type_matches() {
    let app = TestApp::new().await;
    let row = app.sql.query_one("select postbox.patterns_matching('a.b.c')", &[]).await.unwrap();
    assert_eq!(row.get::<_, Vec<String>>(0), ["*", "a.b.c", "a.*", "a.b.*"]);

    // Every pair of these: the dispatcher tests the overlap, replay and the
    // admin API call event_type_matches.
    let rows = app
        .sql
        .query(
            "select t, p, postbox.event_type_matches(array[p], t) as by_function,
                    array[p] && postbox.patterns_matching(t) as by_overlap
             from unnest(array['a', 'a.b', 'a.b.c', 'ab.c', 'a-b.c', 'order.created', 'order.line.added']) t,
                  unnest(array['*', 'a', 'a.*', 'a.b', 'a.b.*', 'a.b.c.*', 'ab.*', 'a-b.*', 'order.*',
                               'order.line.*', 'order.created', 'b.*']) p",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 7 * 12);
    let disagree: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>("by_function") != r.get::<_, bool>("by_overlap"))
        .map(|r| format!("{} ~ {}", r.get::<_, String>("t"), r.get::<_, String>("p")))
        .collect();
    assert!(disagree.is_empty(), "they disagree on {disagree:?}");
    // '*' 7, exact names 3, 'a.*' 2, 'order.*' 2, and one each for 'a.b.*',
    // 'ab.*', 'a-b.*' and 'order.line.*'.
    let matched = rows.iter().filter(|r| r.get::<_, bool>("by_overlap")).count();
    assert_eq!(matched, 18);
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_event() {
    let mut app = TestApp::new().await;
    app.register("order.created").await;
    let tx = app.sql.transaction().await.unwrap();
    tx.execute("select postbox.emit('order.created', '{\"id\": 1}')", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.outbox").await, 0);
    assert_eq!(app.dispatch().await.events, 0);
}
