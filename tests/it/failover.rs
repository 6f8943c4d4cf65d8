//! Failover: a primary and a streaming standby on this machine. The relay and
//! the app are given both hosts with `target_session_attrs=read-write`; the
//! primary dies mid-run and the standby is promoted. The relay must find the
//! new primary by itself and deliver every committed event.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use postbox::db::{localpg::LocalPostgres, schema};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{app::test_settings, eventually, Receiver};

struct Run {
    committed: Vec<String>,
    present_after: HashSet<String>,
    received: HashSet<String>,
    /// From the primary's death to the first delivery of an event written
    /// to the new primary.
    failover: Duration,
    /// What /readyz said while there was no primary.
    unready_reason: String,
}

async fn fail_over(synchronous: bool) -> Run {
    let primary = LocalPostgres::start(None).expect("a private primary starts");
    let standby = LocalPostgres::standby_of(&primary).expect("a streaming standby starts");
    if synchronous {
        // On the primary only (after the base backup): the promoted standby
        // then has no standby of its own to wait for.
        let client = postbox::db::connect(&primary.url()).await.unwrap();
        client.simple_query("alter system set synchronous_standby_names = '*'").await.unwrap();
        client.simple_query("select pg_reload_conf()").await.unwrap();
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let mut receiver = Receiver::start().await;
    {
        let mut client = postbox::db::connect(&primary.url()).await.unwrap();
        schema::migrate(&mut client).await.unwrap();
        client
            .batch_execute(
                "select postbox.register_event_type('a.b');
                 update postbox.network_policy set allow_private = true;",
            )
            .await
            .unwrap();
        client.execute("select postbox.subscribe($1)", &[&receiver.url("/")]).await.unwrap();
        let wanted = if synchronous { "sync" } else { "async" };
        eventually(Duration::from_secs(20), "the standby streams from the primary", || async {
            client
                .query_one("select count(*) from pg_stat_replication where sync_state = $1", &[&wanted])
                .await
                .map(|row| row.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        })
        .await;
    }

    let received: Arc<Mutex<HashSet<String>>> = Arc::default();
    let first_after_promotion: Arc<Mutex<Option<Instant>>> = Arc::default();
    let promoted_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let collecting = {
        let (received, first, promoted) =
            (Arc::clone(&received), Arc::clone(&first_after_promotion), Arc::clone(&promoted_at));
        tokio::spawn(async move {
            loop {
                let request = receiver.recv_within(Duration::from_secs(120)).await;
                let Some(request) = request else { break };
                let id = request.header("webhook-id").to_owned();
                let written_after = request.json()["data"]["after_promotion"] == Value::Bool(true);
                if written_after && promoted.lock().unwrap().is_some() {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
                received.lock().unwrap().insert(id);
            }
        })
    };

    let settings = test_settings(
        &url,
        &[
            ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
            ("POSTBOX_RELAY__LEASE", "3s"),
            ("POSTBOX_DELIVERY__TIMEOUT", "2s"),
            ("POSTBOX_RELAY__SYNCHRONOUS_COMMIT", "true"),
        ],
    );
    let shutdown = CancellationToken::new();
    let relay = postbox::Relay::bind(settings).await.unwrap();
    let readyz = format!("http://{}/readyz", relay.admin_addr());
    let relay = tokio::spawn(relay.run(shutdown.clone()));

    // The app: an event every few milliseconds through the same two hosts;
    // it notes what committed, and reconnects when its connection breaks.
    let writing = CancellationToken::new();
    let after_promotion = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, writing, after) = (url.clone(), writing.clone(), Arc::clone(&after_promotion));
        tokio::spawn(async move {
            let mut committed = Vec::new();
            let mut client = None;
            while !writing.is_cancelled() {
                if client.is_none() {
                    client = postbox::db::connect(&url).await.ok();
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                let flag = after.load(std::sync::atomic::Ordering::Relaxed);
                let written = client
                    .as_ref()
                    .unwrap()
                    .query_one(
                        "select postbox.emit('a.b', jsonb_build_object('after_promotion', $1::bool))::text",
                        &[&flag],
                    )
                    .await;
                match written {
                    Ok(row) => committed.push(row.get::<_, String>(0)),
                    Err(_) => client = None, // unknown outcome: not counted as committed
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            committed
        })
    };

    eventually(Duration::from_secs(20), "deliveries flow before the failover", || async {
        received.lock().unwrap().len() >= 100
    })
    .await;
    primary.down("immediate").expect("the primary stops");
    let died = Instant::now();
    // While there is no primary, readiness says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    let unready_reason = loop {
        if let Ok(response) = reqwest::get(&readyz).await {
            if response.status() == 503 {
                let body: Value =
                    serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or_default();
                break body["reason"].as_str().unwrap_or_default().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "/readyz still ready 10 s after the primary died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // An operator's (or Patroni's) promotion, a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    standby.promote().expect("the standby is promoted");
    *promoted_at.lock().unwrap() = Some(Instant::now());
    after_promotion.store(true, std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(30), "an event written to the new primary is delivered", || async {
        first_after_promotion.lock().unwrap().is_some()
    })
    .await;
    let failover = first_after_promotion.lock().unwrap().unwrap() - died;
    tokio::time::sleep(Duration::from_millis(300)).await;
    writing.cancel();
    let committed = writer.await.unwrap();

    let new_primary = postbox::db::connect(&url).await.unwrap();
    let present_after: HashSet<String> = new_primary
        .query("select event_id::text from postbox.outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    eventually(Duration::from_secs(60), "every event on the new primary is delivered", || async {
        let received = received.lock().unwrap();
        present_after.iter().all(|id| received.contains(id))
    })
    .await;
    eventually(Duration::from_secs(10), "/readyz is ready again", || async {
        reqwest::get(&readyz).await.map(|r| r.status() == 200).unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap().unwrap();
    collecting.abort();
    let received = received.lock().unwrap().clone();
    Run { committed, present_after, received, failover, unready_reason }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_failover_loses_no_committed_event() {
    let run = fail_over(true).await;
    let missing: Vec<&String> = run.committed.iter().filter(|id| !run.received.contains(*id)).collect();
    println!(
        "failover (synchronous): {} events committed, all delivered; first delivery from the new primary {:.2} s after the old one died (promotion 0.5 s after it); /readyz meanwhile: {}",
        run.committed.len(),
        run.failover.as_secs_f64(),
        run.unready_reason
    );
    assert!(missing.is_empty(), "{} committed events were never delivered: {missing:?}", missing.len());
    assert!(
        run.unready_reason.contains("cannot connect") || run.unready_reason.contains("read-only"),
        "{}",
        run.unready_reason
    );
    assert!(
        run.failover < Duration::from_secs(10),
        "the relay took {:?} to find the new primary",
        run.failover
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_asynchronous_replication_only_unreplicated_commits_are_lost() {
    let run = fail_over(false).await;
    // What the standby had not received when the primary died is gone from
    // the database, webhook and all; everything it has is delivered.
    let lost = run.committed.iter().filter(|id| !run.present_after.contains(*id)).count();
    let undelivered = run.present_after.iter().filter(|id| !run.received.contains(*id)).count();
    println!(
        "failover (asynchronous): {} events committed, {lost} lost with the old primary (not yet replicated), \
         the rest delivered; first delivery from the new primary {:.2} s after the old one died",
        run.committed.len(),
        run.failover.as_secs_f64()
    );
    assert_eq!(undelivered, 0, "every event the new primary has is delivered");
}
