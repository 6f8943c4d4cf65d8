//! Every supported PostgreSQL major, 14 to 18, on a private cluster of its
//! own: migrations (twice), the SQL surface, a real relay delivering a signed
//! webhook, and attempt partitions made and dropped. The rest of the suite
//! runs on the shared server (Debian's 15); this is what must hold on each.
//!
//! 15 is Debian's (/usr/lib/postgresql/15/bin); 14, 16, 17 and 18 are the
//! pinned binaries that `.ci/install-postgres` (run by `.ci/run`) puts in
//! `.ci/postgres/<major>/native/bin`. One test per major, so nextest runs
//! them side by side.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use postbox::{
    db::{localpg::LocalPostgres, schema},
    delivery::signing::{verify, SigningKey},
};
use serde_json::json;
use tokio_postgres::{error::SqlState, Client};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_14() {
    on_version(14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_15() {
    on_version(15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_16() {
    on_version(16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_17() {
    on_version(17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_18() {
    on_version(18).await;
}

fn bindir(major: u32) -> PathBuf {
    let dir = if major == 15 {
        PathBuf::from("/usr/lib/postgresql/15/bin")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".ci/postgres/{major}/native/bin"))
    };
    assert!(
        dir.join("postgres").exists(),
        "no PostgreSQL {major} server binaries in {}: .ci/run installs them \
         (.ci/install-postgres for 14, 16, 17 and 18; Debian's postgresql package for 15)",
        dir.display()
    );
    dir
}

async fn on_version(major: u32) {
    let cluster = LocalPostgres::start(Some(&bindir(major)))
        .unwrap_or_else(|err| panic!("PostgreSQL {major} starts: {err}"));
    let url = cluster.url();
    let mut client = postbox::db::connect(&url).await.unwrap();
    let version: i32 =
        client.query_one("select current_setting('server_version_num')::int", &[]).await.unwrap().get(0);
    assert_eq!(version / 10000, major as i32, "the cluster runs PostgreSQL {major}");

    migrations_apply_once(&mut client, major).await;
    sql_surface(&client).await;
    relay_delivers_a_signed_webhook(&client, &url).await;
    attempt_partitions_are_made_and_dropped(&client).await;
}

async fn migrations_apply_once(client: &mut Client, major: u32) {
    let applied = schema::migrate(client)
        .await
        .unwrap_or_else(|err| panic!("migrations apply on PostgreSQL {major}: {err}"));
    let all: Vec<i32> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "every migration applied");
    let again = schema::migrate(client).await.expect("migrate runs again");
    assert!(again.is_empty(), "a second migrate applies nothing: {again:?}");
    assert_eq!(schema::installed_version(client).await.unwrap(), schema::latest_version());
}

async fn count(client: &Client, query: &str) -> i64 {
    client.query_one(query, &[]).await.unwrap_or_else(|err| panic!("{query}: {err}")).get(0)
}

async fn sql_surface(client: &Client) {
    client
        .batch_execute(
            "select postbox.register_event_type('order.paid', 'an order was paid');
             select postbox.emit('order.paid', '{\"id\": 1}', ordering_key => 'order-1');
             create table lines (order_id int, line int, qty int, note text, primary key (order_id, line));
             select postbox.track('lines', subject => 'line');
             insert into lines values (1, 1, 2, 'a');
             update lines set qty = 3 where order_id = 1 and line = 1;
             delete from lines where order_id = 1 and line = 1;",
        )
        .await
        .expect("register, emit and a tracked table's changes");
    let unknown = client.batch_execute("select postbox.emit('no.such', '{}')").await.unwrap_err();
    assert!(unknown.to_string().contains("no.such") || format!("{unknown:?}").contains("no.such"));

    let rows = client
        .query("select event_type, subject_id, ordering_key, payload from postbox.outbox order by id", &[])
        .await
        .unwrap();
    let events: Vec<(String, Option<String>, Option<String>, serde_json::Value)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].0, "order.paid");
    assert_eq!(events[0].2.as_deref(), Some("order-1"));
    let types: Vec<&str> = events[1..].iter().map(|e| e.0.as_str()).collect();
    assert_eq!(types, ["line.created", "line.updated", "line.destroyed"]);
    for event in &events[1..] {
        assert_eq!(event.1.as_deref(), Some(r#"["1", "1"]"#), "composite key as subject_id");
    }
    let updated = &events[2].3;
    assert_eq!(updated["qty"], json!(3), "{updated}");
    let previous: serde_json::Value = client
        .query_one("select previous from postbox.outbox where event_type = 'line.updated'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(previous, json!({"qty": 2}), "previous holds the changed column only");

    for role in ["postbox_writer", "postbox_relay", "postbox_admin"] {
        let query = format!("select count(*) from pg_roles where rolname = '{role}'");
        assert_eq!(count(client, &query).await, 1, "role {role} exists");
    }
    client
        .batch_execute(
            "set role postbox_writer;
             insert into postbox.outbox (event_type, payload) values ('order.paid', '{\"id\": 2}');",
        )
        .await
        .expect("a writer inserts into the outbox");
    let denied = client.batch_execute("select * from postbox.endpoints").await.unwrap_err();
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{denied:?}");
    client.batch_execute("reset role").await.unwrap();
}

async fn relay_delivers_a_signed_webhook(client: &Client, url: &str) {
    let mut receiver = Receiver::start().await;
    // Earlier events have no subscriber: nothing is sent for them.
    let relay = InProcessRelay::start(test_settings(url, &[])).await;
    // What the relay publishes as it starts, without waiting for it.
    client.batch_execute("update postbox.network_policy set allow_private = true").await.unwrap();
    let endpoint: Uuid = client
        .query_one("select postbox.subscribe($1, '{order.paid}')", &[&receiver.url("/hooks")])
        .await
        .expect("subscribe a loopback receiver")
        .get(0);
    let secret: String = client
        .query_one("select secret from postbox.endpoints where id = $1", &[&endpoint])
        .await
        .unwrap()
        .get(0);
    let event: Uuid = client
        .query_one("select postbox.emit('order.paid', '{\"id\": 3}', ordering_key => 'order-3')", &[])
        .await
        .unwrap()
        .get(0);

    // The events emitted before the subscription were not dispatched yet,
    // so they go out too: every request must verify.
    let key = SigningKey::from_secret(&secret).unwrap();
    let request = loop {
        let request = receiver.recv().await;
        assert_eq!(request.path, "/hooks");
        let id = request.header("webhook-id");
        let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
        assert!(
            verify(&key, id, timestamp, &request.body, request.header("webhook-signature")),
            "the signature verifies"
        );
        if id == event.to_string() {
            break request;
        }
    };
    assert_eq!(request.json()["data"], json!({"id": 3}));
    crate::support::eventually(Duration::from_secs(10), "the delivery recorded as succeeded", || async {
        count(
            client,
            &format!(
                "select count(*) from postbox.deliveries where event_id = '{event}' and status = 'succeeded'"
            ),
        )
        .await
            == 1
    })
    .await;
    relay.stop().await;
}

async fn attempt_partitions_are_made_and_dropped(client: &Client) {
    client
        .batch_execute(
            "create table postbox.attempts_20200101 partition of postbox.attempts
                 for values from ('2020-01-01 00:00+00') to ('2020-01-02 00:00+00')",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, error)
             select id, 2, '2020-01-01 12:00+00', 1, 'timeout' from postbox.deliveries limit 1",
        )
        .await
        .expect("an attempt on a day long gone");
    let before = count(client, "select count(*) from postbox.attempts").await;
    let done =
        postbox::relay::retention::round(client, Duration::from_secs(30 * 86400), &CancellationToken::new())
            .await
            .expect("a retention round");
    assert_eq!(done.partitions_dropped, 1, "the outlived day is dropped");
    let ahead = "select count(*) from pg_class where relname = 'attempts_' \
                 || to_char(now() at time zone 'UTC' + interval '3 days', 'YYYYMMDD')";
    assert_eq!(count(client, ahead).await, 1, "partitions are made ahead");
    assert_eq!(count(client, "select count(*) from pg_class where relname = 'attempts_20200101'").await, 0);
    assert_eq!(
        count(client, "select count(*) from postbox.attempts").await,
        before - 1,
        "only that day's attempt goes"
    );
}
