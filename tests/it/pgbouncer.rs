//! PgBouncer in front of the database: apps write through transaction
//! pooling; the relay needs sessions, so it runs directly or through session
//! pooling, and refuses transaction pooling at start-up, saying why.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::support::{app::test_settings, pgbouncer::PgBouncer, relay::InProcessRelay, Receiver, TestDb};

/// A migrated database with event types and one endpoint at `receiver`.
async fn database_for(receiver: &Receiver) -> TestDb {
    let db = TestDb::new().await;
    let sql = db.connect().await;
    sql.batch_execute(
        "select postbox.register_event_type('order.paid');
         update postbox.network_policy set allow_private = true;
         create table public.shop_items (id bigint primary key, name text not null);",
    )
    .await
    .unwrap();
    sql.execute("select postbox.subscribe($1)", &[&receiver.url("/")]).await.unwrap();
    db
}

/// A client like an app's driver behind transaction pooling: simple queries
/// only, no named prepared statements.
async fn app_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect through pgbouncer");
    tokio::spawn(connection);
    client
}

/// Receives until `count` distinct events arrived; returns their bodies by event id.
async fn bodies(receiver: &mut Receiver, count: usize) -> HashMap<String, Value> {
    let mut seen = HashMap::new();
    while seen.len() < count {
        let request = receiver.recv().await;
        seen.insert(request.header("webhook-id").to_owned(), request.json());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_write_through_transaction_pooling_and_a_direct_relay_delivers_every_event() {
    let mut receiver = Receiver::start().await;
    let db = database_for(&receiver).await;
    // Two server connections for eight app connections: their transactions
    // take turns on whichever backend is free.
    let bouncer = PgBouncer::start(&db.url, "transaction", 2).await;
    let sql = app_client(&bouncer.url()).await;
    sql.batch_execute("select postbox.track('public.shop_items')").await.expect("track through pgbouncer");

    let writers = (0..8).map(|app| {
        let url = bouncer.url();
        tokio::spawn(async move {
            let client = app_client(&url).await;
            client
                .batch_execute(&format!(
                    "insert into postbox.outbox (event_type, payload) values ('order.paid', '{{\"app\": {app}, \"how\": \"insert\"}}')"
                ))
                .await
                .expect("plain insert");
            client
                .simple_query(&format!("select postbox.emit('order.paid', '{{\"app\": {app}, \"how\": \"emit\"}}')"))
                .await
                .expect("emit");
            client
                .simple_query(&format!(
                    "select postbox.emit('order.paid', '{{\"app\": {app}, \"how\": \"keyed\"}}', ordering_key => 'order/{app}')"
                ))
                .await
                .expect("emit with ordering_key");
            // One statement per round trip, as a driver sends them.
            for statement in [
                "begin".to_owned(),
                format!("set local postbox.actor = '{{\"id\": \"user-{app}\"}}'"),
                format!("insert into public.shop_items values ({app}, 'item {app}')"),
                "commit".to_owned(),
            ] {
                client.batch_execute(&statement).await.expect("tracked insert");
            }
            // Rolled back: no event.
            client
                .batch_execute(&format!(
                    "begin; select postbox.emit('order.paid', '{{\"app\": {app}, \"how\": \"rolled back\"}}'); rollback"
                ))
                .await
                .unwrap();
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("every write through transaction pooling succeeds");
    }

    let relay = InProcessRelay::start(test_settings(&db.url, &[])).await;
    let delivered = bodies(&mut receiver, 32).await;
    let direct = db.connect().await;
    let events: i64 = direct.query_one("select count(*) from postbox.outbox", &[]).await.unwrap().get(0);
    assert_eq!(events, 32, "four events from each of eight apps, none from the rolled-back transactions");
    let how = |name: &str| delivered.values().filter(|b| b["data"]["how"] == name).count();
    assert_eq!((how("insert"), how("emit"), how("keyed")), (8, 8, 8));
    let created: Vec<&Value> = delivered.values().filter(|b| b["type"] == "shop_items.created").collect();
    assert_eq!(created.len(), 8);
    for body in created {
        let app = body["data"]["id"].as_i64().expect("the row's id");
        assert_eq!(
            body["actor"]["id"],
            format!("user-{app}"),
            "SET LOCAL postbox.actor reaches its own event"
        );
    }
    let keyed: i64 = direct
        .query_one("select count(*) from postbox.outbox where ordering_key like 'order/%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyed, 8);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_through_session_pooling_delivers_and_is_ready() {
    let mut receiver = Receiver::start().await;
    let db = database_for(&receiver).await;
    let bouncer = PgBouncer::start(&db.url, "session", 40).await;
    let relay = InProcessRelay::start(test_settings(&bouncer.url(), &[])).await;

    let sql = db.connect().await;
    let event: uuid::Uuid =
        sql.query_one("select postbox.emit('order.paid', '{\"n\": 1}')", &[]).await.unwrap().get(0);
    assert_eq!(receiver.recv().await.header("webhook-id"), event.to_string());
    let readyz = reqwest::get(format!("{}/readyz", relay.base)).await.unwrap();
    assert_eq!(readyz.status(), 200, "{}", readyz.text().await.unwrap());
    let listening: i64 = sql
        .query_one(
            "select count(*) from pg_stat_activity where datname = current_database() and query = 'listen postbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listening, 1, "the relay LISTENs through its pinned session");
    // Its session settings arrive by SET: PgBouncer refuses the `options`
    // startup parameter, or drops it when told to ignore it.
    let pool = postbox::db::relay_pool(&bouncer.url(), 1, false).unwrap();
    let client = pool.get().await.expect("a relay connection through pgbouncer");
    for (setting, value) in [("jit", "off"), ("enable_seqscan", "off"), ("synchronous_commit", "off")] {
        let row = client.query_one(&format!("show {setting}"), &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), value, "{setting}");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_through_transaction_pooling_refuses_to_start_and_says_why() {
    let receiver = Receiver::start().await;
    let db = database_for(&receiver).await;
    let bouncer = PgBouncer::start(&db.url, "transaction", 4).await;
    let settings = test_settings(&bouncer.url(), &[]);
    let relay = postbox::Relay::bind(settings).await.expect("relay binds");
    let readyz = format!("http://{}/readyz", relay.admin_addr());
    let started = std::time::Instant::now();
    let running = tokio::spawn(relay.run(tokio_util::sync::CancellationToken::new()));

    let outcome = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the relay gives up within 20 s instead of hanging")
        .unwrap();
    let message = outcome.expect_err("a transaction-mode pooler is an error").to_string();
    println!("refused after {:?}: {message}", started.elapsed());
    assert!(message.contains("transaction pooling"), "{message}");
    assert!(message.contains("session mode"), "says what to do: {message}");
    assert!(message.contains(&format!("127.0.0.1:{}", bouncer.port)), "names the address: {message}");
    assert!(reqwest::get(readyz).await.is_err(), "its admin HTTP has stopped: nothing reports it ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postbox_run_through_transaction_pooling_exits_non_zero_with_one_line_saying_why() {
    let receiver = Receiver::start().await;
    let db = database_for(&receiver).await;
    let bouncer = PgBouncer::start(&db.url, "transaction", 4).await;
    let mut relay = crate::support::process::RelayProcess::start(&bouncer.url(), &[]);
    let status = relay.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "exits non-zero: {status}");
    let log = relay.log_text();
    let line =
        log.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(line.contains("transaction pooling") && line.contains("session mode"), "{line}");
}
