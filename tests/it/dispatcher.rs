use serde_json::json;
use uuid::Uuid;

use crate::support::TestApp;

async fn endpoints_for(app: &TestApp, event: Uuid) -> Vec<Uuid> {
    app.sql
        .query(
            "select endpoint_id from postbox.deliveries where event_id = $1 order by endpoint_id",
            &[&event],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

#[tokio::test]
async fn events_fan_out_to_endpoints_by_exact_name_prefix_pattern_and_star() {
    let app = TestApp::new().await;
    for t in ["order.created", "order.paid", "invoice.created", "orders.created"] {
        app.register(t).await;
    }
    let all = app.subscribe("https://a.example/", &["*"]).await;
    let orders = app.subscribe("https://b.example/", &["order.*"]).await;
    let exact = app.subscribe("https://c.example/", &["order.paid", "invoice.created"]).await;

    let created = app.emit("order.created", json!({})).await;
    let paid = app.emit("order.paid", json!({})).await;
    let invoice = app.emit("invoice.created", json!({})).await;
    let plural = app.emit("orders.created", json!({})).await;
    let dispatched = app.dispatch().await;

    assert_eq!(dispatched.events, 4);
    assert_eq!(dispatched.deliveries, 8);
    assert_eq!(endpoints_for(&app, created).await, sorted(vec![all, orders]));
    assert_eq!(endpoints_for(&app, paid).await, sorted(vec![all, orders, exact]));
    assert_eq!(endpoints_for(&app, invoice).await, sorted(vec![all, exact]));
    assert_eq!(endpoints_for(&app, plural).await, vec![all], "order.* does not match orders.created");
}

#[tokio::test]
async fn tenant_endpoints_get_only_their_tenants_events() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let everyone = app.subscribe("https://a.example/", &["*"]).await;
    let acme: Uuid = app
        .sql
        .query_one("select postbox.subscribe('https://acme.example/', tenant => 'acme')", &[])
        .await
        .unwrap()
        .get(0);
    let for_acme: Uuid = app
        .sql
        .query_one("select postbox.emit('order.created', '{}', tenant => 'acme')", &[])
        .await
        .unwrap()
        .get(0);
    let for_globex: Uuid = app
        .sql
        .query_one("select postbox.emit('order.created', '{}', tenant => 'globex')", &[])
        .await
        .unwrap()
        .get(0);
    let untenanted = app.emit("order.created", json!({})).await;
    app.dispatch().await;
    assert_eq!(endpoints_for(&app, for_acme).await, sorted(vec![everyone, acme]));
    assert_eq!(endpoints_for(&app, for_globex).await, vec![everyone]);
    assert_eq!(endpoints_for(&app, untenanted).await, vec![everyone]);
}

#[tokio::test]
async fn filters_select_events_whose_payload_contains_them() {
    let app = TestApp::new().await;
    app.register("payment.succeeded").await;
    let big_eur: Uuid = app
        .sql
        .query_one(
            "select postbox.subscribe('https://a.example/', filter => '{\"currency\": \"EUR\", \"tags\": [\"big\"]}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let matching =
        app.emit("payment.succeeded", json!({"currency": "EUR", "tags": ["big", "x"], "n": 1})).await;
    let other_currency = app.emit("payment.succeeded", json!({"currency": "USD", "tags": ["big"]})).await;
    let missing_tag = app.emit("payment.succeeded", json!({"currency": "EUR"})).await;
    app.dispatch().await;
    assert_eq!(endpoints_for(&app, matching).await, vec![big_eur]);
    assert!(endpoints_for(&app, other_currency).await.is_empty());
    assert!(endpoints_for(&app, missing_tag).await.is_empty());
}

#[tokio::test]
async fn paused_endpoints_get_parked_deliveries_and_events_are_dispatched_once() {
    let app = TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://a.example/", &["*"]).await;
    app.sql
        .execute("update postbox.endpoints set enabled = false where id = $1", &[&endpoint])
        .await
        .unwrap();
    let event = app.emit("a.b", json!({})).await;
    assert_eq!(app.dispatch().await.events, 1);
    assert_eq!(endpoints_for(&app, event).await, vec![endpoint], "a paused endpoint keeps its deliveries");
    assert_eq!(
        app.count("select count(*) from postbox.deliveries where next_attempt_at = 'infinity' and status = 'pending'")
            .await,
        1,
        "parked until the endpoint is enabled"
    );
    assert!(app.deliverer.claim(10).await.unwrap().is_empty(), "and not sent meanwhile");
    assert_eq!(app.dispatch().await.events, 0, "a dispatched event is not claimed again");
    assert_eq!(
        app.count("select count(*) from postbox.outbox where dispatched_at is null").await,
        0,
        "events without subscribers are marked dispatched too"
    );
}

#[tokio::test]
async fn concurrent_dispatchers_share_the_outbox_without_double_deliveries() {
    let app = TestApp::with_settings(&[("POSTBOX_RELAY__BATCH_SIZE", "50")]).await;
    app.register("a.b").await;
    app.subscribe("https://a.example/", &["*"]).await;
    app.subscribe("https://b.example/", &["*"]).await;
    app.sql
        .batch_execute("insert into postbox.outbox (event_type, payload) select 'a.b', '{}' from generate_series(1, 1000)")
        .await
        .unwrap();

    let app = std::sync::Arc::new(app);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let mut events = 0;
                loop {
                    let dispatched = app.dispatch().await;
                    if dispatched.events == 0 {
                        return events;
                    }
                    events += dispatched.events;
                }
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    assert_eq!(total, 1000, "every event dispatched exactly once");
    assert_eq!(app.count("select count(*) from postbox.deliveries").await, 2000);
    assert_eq!(
        app.count("select count(distinct (event_id, endpoint_id)) from postbox.deliveries").await,
        2000
    );
}

/// A 200 for a first attempt sent straight from the outbox (dispatch batch
/// `lease_token`, event `event_id` at `outbox_id`), as the deliverer makes it.
fn first_attempt_succeeded(
    lease_token: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    outbox_id: i64,
) -> postbox::relay::deliverer::AttemptRecord {
    postbox::relay::deliverer::AttemptRecord {
        delivery_id: Uuid::new_v4(),
        lease_token,
        endpoint_id,
        event_id,
        from_outbox: Some(outbox_id),
        attempt_number: 1,
        started_at: std::time::SystemTime::now(),
        duration: std::time::Duration::from_millis(5),
        request_headers: json!({}),
        response_status: Some(200),
        response_headers: Some(json!({})),
        response_body: Some(String::new()),
        error: None,
        decision: postbox::delivery::retry::Decision::Succeeded,
        operational: false,
    }
}

/// Two events to `endpoint` that one dispatch pass sends at once: the
/// dispatcher, and the outcomes of both first attempts as the deliverer
/// would record them, in outbox order.
async fn two_first_attempts_in_one_batch(
    app: &TestApp,
    endpoint: Uuid,
) -> (
    postbox::relay::dispatcher::Dispatcher,
    postbox::relay::deliverer::AttemptRecord,
    postbox::relay::deliverer::AttemptRecord,
) {
    for n in 0..2 {
        app.emit("order.created", json!({ "n": n })).await;
    }
    let dispatcher = leasing_dispatcher(app);
    assert_eq!(dispatcher.run_once().await.unwrap().unleased, 0, "both sent at once, one batch");
    let rows = app
        .sql
        .query(
            "select b.lease_token, o.id, o.event_id from postbox.dispatch_batches b
             join postbox.outbox o on o.id = any(b.outbox_ids) order by o.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let outcome =
        |row: &tokio_postgres::Row| first_attempt_succeeded(row.get(0), endpoint, row.get(2), row.get(1));
    (dispatcher, outcome(&rows[0]), outcome(&rows[1]))
}

/// A dispatcher wired to the test app's deliverer, as `postbox run` wires them.
fn leasing_dispatcher(app: &TestApp) -> postbox::relay::dispatcher::Dispatcher {
    postbox::relay::dispatcher::Dispatcher::new(
        app.pool.clone(),
        app.settings.dispatcher_config(),
        Default::default(),
    )
    .lease_to(std::sync::Arc::clone(&app.deliverer))
}

#[tokio::test]
async fn a_pass_leases_what_its_relay_has_room_for_and_leaves_the_rest_to_claims() {
    // Three request slots in all, two per endpoint.
    let app = TestApp::with_settings(&[
        ("POSTBOX_RELAY__CONCURRENCY", "3"),
        ("POSTBOX_DELIVERY__ENDPOINT_CONCURRENCY", "2"),
    ])
    .await;
    app.register("order.created").await;
    let first = app.subscribe("http://127.0.0.1:9/first", &["order.created"]).await;
    let second = app.subscribe("http://127.0.0.1:9/second", &["order.created"]).await;
    for n in 0..3 {
        app.emit("order.created", json!({ "n": n })).await;
    }

    let dispatched = leasing_dispatcher(&app).run_once().await.unwrap();
    assert_eq!((dispatched.events, dispatched.deliveries, dispatched.unleased), (3, 6, 3));
    // The three sent at once have no delivery row until their outcome is
    // recorded: their dispatch batch stands for them.
    let created = app
        .sql
        .query(
            "select d.endpoint_id, (o.payload->>'n')::int from postbox.deliveries d join postbox.outbox o using (event_id)
             where d.lease_token is null and d.status = 'pending' and d.next_attempt_at <= now()
             order by 2, 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.len(), 3, "the rest are due for a claim");
    for endpoint in [first, second] {
        let sent_at_once = 3 - created.iter().filter(|r| r.get::<_, Uuid>(0) == endpoint).count();
        assert!(sent_at_once <= 2, "endpoint {endpoint} got {sent_at_once} requests, over its cap of 2");
    }
    assert!(
        created.iter().filter(|r| r.get::<_, i32>(1) == 2).count() == 2,
        "room goes to the oldest events first"
    );
    let batch: Vec<i64> = app
        .sql
        .query_one(
            "select array(select (o.payload->>'n')::int8 from postbox.outbox o
                          where o.id = any(b.outbox_ids) order by 1)
             from postbox.dispatch_batches b",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(batch, vec![0, 1], "the batch holds the events of the requests sent at once");
    // The handed-over deliveries hold all three slots until they are sent,
    // so a claim finds no room for the other three.
    assert!(app.deliverer.claim(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn nothing_is_leased_while_first_attempts_wait() {
    let app = TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "1s,5s")]).await;
    app.register("order.created").await;
    app.subscribe("http://127.0.0.1:9/hook", &["order.created"]).await;
    app.emit("order.created", json!({})).await;

    let dispatched = leasing_dispatcher(&app).run_once().await.unwrap();
    assert_eq!((dispatched.deliveries, dispatched.unleased), (1, 1));
    assert_eq!(app.count("select count(*) from postbox.deliveries where lease_token is null").await, 1);
}

#[tokio::test]
async fn first_attempts_whose_lease_ran_out_unrecorded_are_dispatched_again_and_only_those() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    app.subscribe("http://127.0.0.1:9/hook", &["order.created"]).await;
    for n in 0..2 {
        app.emit("order.created", json!({ "n": n })).await;
    }
    let dispatcher = leasing_dispatcher(&app);
    assert_eq!(dispatcher.run_once().await.unwrap().unleased, 0, "both sent at once");
    // One outcome is recorded; then the relay dies and the lease runs out.
    let recorded = app
        .sql
        .execute(
            "insert into postbox.deliveries (event_id, endpoint_id, status, attempt_count, next_attempt_at)
             select o.event_id, e.id, 'succeeded', 1, null
             from postbox.outbox o, postbox.endpoints e where o.payload->>'n' = '0'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    assert_eq!(dispatcher.recover_expired_batches().await.unwrap(), 0, "the lease has not run out");
    app.sql
        .batch_execute("update postbox.dispatch_batches set leased_until = now() - interval '1 s'")
        .await
        .unwrap();

    assert_eq!(dispatcher.recover_expired_batches().await.unwrap(), 2);
    assert_eq!(app.count("select count(*) from postbox.dispatch_batches").await, 0);
    // A dispatcher that leases nothing: what is sent again waits as a delivery.
    let again = app.dispatch().await;
    assert_eq!((again.events, again.deliveries), (2, 1), "the recorded outcome stands");
    let pending: String = app
        .sql
        .query_one(
            "select o.payload->>'n' from postbox.deliveries d join postbox.outbox o using (event_id)
             where d.status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, "1");
}

/// An outcome counts against its dispatch batch only once written: a batch
/// whose first outcome could not be written is not finished by its second.
#[tokio::test]
async fn a_first_attempt_whose_write_gave_up_is_sent_again_after_its_batch_finishes() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let endpoint = app.subscribe("http://127.0.0.1:9/hook", &["order.created"]).await;
    let (dispatcher, first, second) = two_first_attempts_in_one_batch(&app, endpoint).await;

    // The first outcome's write fails (the database is away longer than a
    // lease, say): the record loop gives up on it, as it is meant to.
    app.sql
        .batch_execute(
            "create function public.refuse() returns trigger language plpgsql as
               $$ begin raise exception 'database away'; end $$;
             create trigger refuse before insert on postbox.attempts
               for each row execute function public.refuse();",
        )
        .await
        .unwrap();
    assert!(app.deliverer.record(std::slice::from_ref(&first)).await.is_err());
    app.sql.batch_execute("drop trigger refuse on postbox.attempts").await.unwrap();

    // The second outcome is written; the first never was, so the batch
    // waits for its lease to run out.
    app.deliverer.record(std::slice::from_ref(&second)).await.unwrap();

    // The first event was never recorded: it must still be sent again,
    // either through its batch (lease runs out, recovered) or as a delivery.
    app.sql
        .batch_execute("update postbox.dispatch_batches set leased_until = now() - interval '1 s'")
        .await
        .unwrap();
    dispatcher.recover_expired_batches().await.unwrap();
    app.dispatch().await;
    let deliveries = app
        .count(&format!("select count(*) from postbox.deliveries where event_id = '{}'", first.event_id))
        .await;
    let in_flight = app.count("select count(*) from postbox.dispatch_batches").await;
    let undispatched = app.count("select count(*) from postbox.outbox where dispatched_at is null").await;
    assert!(
        deliveries + in_flight + undispatched > 0,
        "the first event's delivery is lost: no delivery row, no batch, and its event counts as dispatched"
    );
    assert_eq!(deliveries, 1, "sent again: its delivery waits for a claim");
}

/// A replay while a first attempt is out creates a delivery for the pair:
/// the outcome settles that delivery instead of being dropped, and it is
/// not sent a second time.
#[tokio::test]
async fn a_replay_while_a_first_attempt_is_out_is_settled_by_its_outcome() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let endpoint = app.subscribe("http://127.0.0.1:9/hook", &["order.created"]).await;
    let event = app.emit("order.created", json!({})).await;
    assert_eq!(leasing_dispatcher(&app).run_once().await.unwrap().unleased, 0, "sent at once");
    let row = app
        .sql
        .query_one("select b.lease_token, b.outbox_ids[1] from postbox.dispatch_batches b", &[])
        .await
        .unwrap();

    let replayed: i64 = app.replay(endpoint).await;
    assert_eq!(replayed, 1);
    let mut record = first_attempt_succeeded(row.get(0), endpoint, event, row.get(1));
    record.request_headers = json!({"webhook-signature": "v1,x"});
    let sent_id = record.delivery_id.to_string();
    assert_eq!(app.deliverer.record(&[record]).await.unwrap().attempts, 1, "the outcome is recorded");
    let headers: serde_json::Value =
        app.sql.query_one("select request_headers from postbox.attempts", &[]).await.unwrap().get(0);
    assert_eq!(headers["postbox-delivery-id"], sent_id, "the delivery id the request carried is kept");

    assert_eq!(app.delivery_state(event, endpoint).await, ("succeeded".into(), 1));
    assert_eq!(
        app.count(
            "select count(*) from postbox.attempts a join postbox.deliveries d on d.id = a.delivery_id"
        )
        .await,
        1,
        "its attempt belongs to that delivery"
    );
    assert_eq!(app.count("select count(*) from postbox.dispatch_batches").await, 0);
}

/// Relays commit asynchronously: a crash of the database can lose a write
/// the relay saw succeed. A batch is counted down in the write itself, so
/// such an outcome is sent again, not forgotten.
#[tokio::test]
async fn a_first_attempt_whose_written_outcome_the_database_lost_is_sent_again() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let endpoint = app.subscribe("http://127.0.0.1:9/hook", &["order.created"]).await;
    let (dispatcher, first, second) = two_first_attempts_in_one_batch(&app, endpoint).await;

    app.deliverer.record(std::slice::from_ref(&first)).await.unwrap();
    // The crash took that commit with it: the delivery and the count-down.
    app.sql.execute("delete from postbox.deliveries where event_id = $1", &[&first.event_id]).await.unwrap();
    app.sql.execute("update postbox.dispatch_batches set remaining = remaining + 1", &[]).await.unwrap();
    app.deliverer.record(std::slice::from_ref(&second)).await.unwrap();
    assert_eq!(
        app.count("select count(*) from postbox.dispatch_batches").await,
        1,
        "the batch stays while one of its requests has no delivery"
    );

    app.sql
        .batch_execute("update postbox.dispatch_batches set leased_until = now() - interval '1 s'")
        .await
        .unwrap();
    assert_eq!(dispatcher.recover_expired_batches().await.unwrap(), 2);
    app.dispatch().await;
    assert_eq!(app.delivery_state(first.event_id, endpoint).await, ("pending".into(), 0), "sent again");
}
