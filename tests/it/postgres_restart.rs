//! PostgreSQL stopped and started under a running relay: it reconnects,
//! listens again and loses nothing.

use std::time::{Duration, Instant};

use postbox::db::{localpg::LocalPostgres, schema};
use tokio_util::sync::CancellationToken;

use crate::support::{app::test_settings, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_survives_postgres_restarts_and_loses_nothing() {
    // Polling once a minute: prompt deliveries after a restart need the
    // LISTEN connection back. Synchronous commits: every relay write that
    // returned is on disk, so nothing waits for a lease to run out.
    restarts_lose_nothing(&[
        ("POSTBOX_RELAY__POLL_INTERVAL", "60s"),
        ("POSTBOX_RELAY__SYNCHRONOUS_COMMIT", "true"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_asynchronous_relay_commits_an_immediate_stop_costs_resends_not_events() {
    // The default: an immediate stop may lose the relay's last writes (a
    // recorded attempt, say); those deliveries go out again once their lease
    // ends, at the next poll.
    restarts_lose_nothing(&[
        ("POSTBOX_RELAY__POLL_INTERVAL", "200ms"),
        ("POSTBOX_RELAY__LEASE", "3s"),
        ("POSTBOX_RELAY__SYNCHRONOUS_COMMIT", "false"),
    ])
    .await;
}

async fn restarts_lose_nothing(overrides: &[(&str, &str)]) {
    const PER_ROUND: usize = 200;
    let cluster = LocalPostgres::start(None).expect("a private PostgreSQL cluster starts");
    let url = cluster.url();
    let mut receiver = Receiver::start().await;
    {
        let mut client = postbox::db::connect(&url).await.unwrap();
        schema::migrate(&mut client).await.unwrap();
        client
            .batch_execute(
                "select postbox.register_event_type('a.b');
                 update postbox.network_policy set allow_private = true;",
            )
            .await
            .unwrap();
        client.execute("select postbox.subscribe($1)", &[&receiver.url("/")]).await.unwrap();
    }
    let settings = test_settings(&url, overrides);
    let shutdown = CancellationToken::new();
    let relay = postbox::Relay::bind(settings).await.unwrap();
    let readyz = format!("http://{}/readyz", relay.admin_addr());
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let ready = |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };

    let mut delivered = 0;
    for (round, mode) in ["fast", "immediate", "fast", "immediate"].into_iter().enumerate() {
        let client = postbox::db::connect(&url).await.unwrap();
        client
            .execute(
                "insert into postbox.outbox (event_type, payload)
                 select 'a.b', jsonb_build_object('round', $1::int, 'n', n) from generate_series(1, $2::int) as n",
                &[&(round as i32), &(PER_ROUND as i32)],
            )
            .await
            .unwrap();
        drop(client);
        // Stop mid-run: some of this round is still on its way.
        receiver.recv().await;
        delivered += 1;
        cluster.down(mode).expect("the server stops");
        assert_eq!(ready(readyz.clone()).await, 503, "not ready while the database is away");
        assert!(!relay.is_finished(), "the relay keeps running while the database is away");
        cluster.up().expect("the server starts again");
        let back = Instant::now();

        let client = postbox::db::connect(&url).await.unwrap();
        let probe: uuid::Uuid =
            client.query_one("select postbox.emit('a.b', '{\"probe\": true}')", &[]).await.unwrap().get(0);
        let mut seen_probe = false;
        while !seen_probe {
            let request = receiver.recv().await;
            seen_probe = request.header("webhook-id") == probe.to_string();
            delivered += 1;
        }
        assert_eq!(ready(readyz.clone()).await, 200, "ready again");
        println!(
            "after a {mode} restart the next event arrived {:?} after the database was back",
            back.elapsed()
        );
        assert!(back.elapsed() < Duration::from_secs(5), "reconnected within 5 s");
    }

    let client = postbox::db::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = client
            .query_one(
                "select (select count(*) from postbox.deliveries where status <> 'succeeded')
                      + (select count(*) from postbox.outbox where dispatched_at is null)
                      + (select count(*) from postbox.dispatch_batches)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} deliveries or events still open 30 s after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events: i64 = client.query_one("select count(*) from postbox.outbox", &[]).await.unwrap().get(0);
    let delivered_ids: i64 = client
        .query_one("select count(distinct event_id) from postbox.deliveries where status = 'succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered_ids, events, "every event delivered");
    delivered += receiver.drain().len();
    println!("events={events} requests={delivered} after 4 restarts");
    assert!(delivered as i64 >= events);
    shutdown.cancel();
    relay.await.unwrap().unwrap();
}
