//! Rolling upgrade from the previous release: its relay keeps working while
//! `postbox migrate` installs this release's schema, then relays are replaced
//! one by one. Nothing is lost, and a clean hand-over sends nothing twice.
//!
//! The previous release's binary is built once by `.ci/build-previous-release`
//! (which `.ci/run` calls) from the commit named in `.ci/previous-release`.

use std::{collections::HashMap, path::PathBuf, process::Command, time::Duration};

use postbox::db::schema;
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, process::RelayProcess, Receiver, TestDb};

fn previous_release_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let commit = std::fs::read_to_string(root.join(".ci/previous-release"))
        .expect(".ci/previous-release names the previous release's commit");
    let cache = std::env::var("POSTBOX_CI_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/postbox-ci")
    });
    let binary = cache.join("previous-release").join(commit.trim()).join("target/debug/postbox");
    assert!(
        binary.exists(),
        "the previous release's binary is not built ({}): .ci/run builds it with .ci/build-previous-release",
        binary.display()
    );
    binary
}

const RELAY: &[(&str, &str)] = &[
    ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
    ("POSTBOX_RELAY__LEASE", "5s"),
    ("POSTBOX_DELIVERY__TIMEOUT", "2s"),
    ("POSTBOX_RELAY__SHUTDOWN_GRACE", "10s"),
    ("POSTBOX_DATABASE__POOL_SIZE", "4"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_from_the_previous_release_loses_nothing_and_sends_nothing_twice() {
    let previous = previous_release_binary();
    let db = TestDb::empty().await;
    // The previous release installs its own schema.
    let migrated = Command::new(&previous).arg("migrate").env("DATABASE_URL", &db.url).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let mut receiver = Receiver::start().await;
    let sql = db.connect().await;
    sql.batch_execute(
        "select postbox.register_event_type('a.b');
         update postbox.network_policy set allow_private = true;",
    )
    .await
    .unwrap();
    sql.execute("select postbox.subscribe($1)", &[&receiver.url("/")]).await.unwrap();

    let mut old_relays: Vec<RelayProcess> =
        (0..2).map(|_| RelayProcess::start_binary(&previous, &db.url, RELAY)).collect();

    // The app writes all along, with calls both releases' schemas take.
    let writing = CancellationToken::new();
    let writer = {
        let (url, writing) = (db.url.clone(), writing.clone());
        tokio::spawn(async move {
            let client = postbox::db::connect(&url).await.unwrap();
            let mut written = 0u32;
            while !writing.is_cancelled() {
                let statement = if written % 2 == 0 {
                    "select postbox.emit('a.b', '{\"via\": \"emit\"}')"
                } else {
                    "insert into postbox.outbox (event_type, payload) values ('a.b', '{\"via\": \"insert\"}')"
                };
                client.batch_execute(statement).await.expect("the app's writes work throughout");
                written += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let count = |query: &'static str| {
        let sql = &sql;
        async move { sql.query_one(query, &[]).await.unwrap().get::<_, i64>(0) }
    };
    eventually(Duration::from_secs(20), "the previous release delivers", || async {
        count("select count(*) from postbox.deliveries where status = 'succeeded'").await >= 50
    })
    .await;

    // 1. This release's schema, while the old relays work.
    let mut client = db.connect().await;
    let applied = schema::migrate(&mut client).await.expect("the new schema installs under running relays");
    assert!(!applied.is_empty(), "migrations newer than the previous release's apply");
    let before = count("select count(*) from postbox.deliveries where status = 'succeeded'").await;
    eventually(
        Duration::from_secs(20),
        "the previous release keeps delivering on the new schema",
        || async {
            count("select count(*) from postbox.deliveries where status = 'succeeded'").await >= before + 50
        },
    )
    .await;

    // 2. Relays replaced one at a time.
    let mut new_relays = Vec::new();
    for mut old in old_relays.drain(..) {
        new_relays.push(RelayProcess::start(&db.url, RELAY));
        old.signal(libc::SIGTERM);
        let status = old.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "the old relay stops cleanly: {status}; log:\n{}", old.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    writing.cancel();
    let written = writer.await.unwrap() as i64;
    eventually(Duration::from_secs(60), "every event is delivered", || async {
        count("select count(*) from postbox.deliveries where status = 'succeeded'").await == written
    })
    .await;
    for relay in &new_relays {
        relay.signal(libc::SIGTERM);
    }
    for relay in &mut new_relays {
        assert!(relay.wait_exit(Duration::from_secs(20)).await.success());
    }

    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver.drain() {
        *seen.entry(request.header("webhook-id").to_owned()).or_default() += 1;
    }
    let twice = seen.values().filter(|&&n| n > 1).count();
    println!(
        "rolling upgrade: {written} events written across the upgrade, {} delivered, {twice} twice",
        seen.len()
    );
    assert_eq!(seen.len() as i64, written, "every event arrived");
    assert_eq!(twice, 0, "a clean hand-over sends nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_blocked_by_a_busy_table_gives_way_and_tries_again() {
    let previous = previous_release_binary();
    let db = TestDb::empty().await;
    let migrated = Command::new(&previous).arg("migrate").env("DATABASE_URL", &db.url).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    // A long transaction holds the deliveries table, as a relay's statement
    // would for a moment: the next migration's ALTER waits for it.
    let mut holder = db.connect().await;
    let holding = holder.transaction().await.unwrap();
    holding.batch_execute("lock table postbox.deliveries in share mode").await.unwrap();
    let started = std::time::Instant::now();
    let migrating = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let mut client = postbox::db::connect(&url).await.unwrap();
            schema::migrate(&mut client).await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Meanwhile others still get the table: the migration is not queued in front of them.
    let mut other = db.connect().await;
    let reading = other.transaction().await.unwrap();
    reading.batch_execute("set local lock_timeout = '3s'; select count(*) from postbox.deliveries").await.expect(
        "a migration waiting for a lock gives way within its lock_timeout instead of blocking everyone behind it",
    );
    reading.rollback().await.unwrap();
    holding.rollback().await.unwrap();
    let applied = migrating.await.unwrap().expect("the migration applies once the table is free");
    assert!(applied.contains(&10), "{applied:?}");
    assert!(started.elapsed() >= Duration::from_secs(3));
}
