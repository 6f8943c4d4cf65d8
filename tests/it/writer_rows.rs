//! Property: whatever rows an app writes as `postbox_writer`, using every
//! column and value range its grants allow, the relay keeps delivering, and
//! every row the database accepted reaches a visible end (its deliveries
//! succeeded, or failed with a reason).

use std::time::Duration;

use proptest::{
    prelude::*,
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, TestApp};

/// One row as an app could write it: each column as SQL text, or NULL.
#[derive(Debug, Clone)]
struct WriterRow {
    event_id: Option<String>,
    event_type: String,
    payload: String,
    tenant: Option<String>,
    subject_type: Option<String>,
    subject_id: Option<String>,
    actor: Option<String>,
    occurred_at: Option<String>,
    previous: Option<String>,
}

/// Strings with what breaks naive code: quotes, control characters, RTL and
/// combining marks, emoji, very long ones.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{0,12}",
        Just(String::new()),
        Just("\u{1b}]52;c;aGk=\u{7}\u{1b}[2J".to_owned()),
        Just("'; drop table postbox.outbox; --".to_owned()),
        Just("\u{202e}evil\u{301}\u{1f4a5}".to_owned()),
        Just("1,k,\"2".to_owned()),
        Just("x".repeat(10_000)),
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        odd_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(odd_text(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// JSON text for a jsonb column: ordinary values, objects and non-objects,
/// nesting past any parser's recursion limit, and large documents.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => json_value().prop_map(|v| v.to_string()),
        6 => prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..8)
            .prop_map(|map| Value::Object(map.into_iter().collect()).to_string()),
        2 => (100usize..3000).prop_map(|depth| format!("{{\"deep\":{}1{}}}", "[".repeat(depth), "]".repeat(depth))),
        1 => (1usize..40).prop_map(|kb| json!({"blob": "y".repeat(kb * 1024)}).to_string()),
        1 => Just("{\"nul\": \"a\\u0000b\"}".to_owned()),
    ]
}

/// Times at the edges of timestamptz and of RFC 3339.
fn time_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "infinity",
        "-infinity",
        "4713-01-01 00:00:00+00 BC",
        "294276-12-31 23:59:59+00",
        "0001-01-01 00:00:00+00",
        "9999-12-31 23:59:59.999999+00",
        "10000-01-01 00:00:00+00",
        "1970-01-01 00:00:00+00",
        "2999-01-01 00:00:00+00",
        "2026-06-01 12:00:00+14",
    ])
    .prop_map(str::to_owned)
}

fn writer_row(event_ids: Vec<String>) -> impl Strategy<Value = WriterRow> {
    (
        prop::option::of(prop::sample::select(event_ids)),
        prop::sample::select(vec!["p.x", "p.y", "p.x", "p.y", "p.x", "p.y", "unknown.type", "postbox.ping"]),
        json_text(),
        prop::option::of(odd_text()),
        prop::option::of(odd_text()),
        prop::option::of(odd_text()),
        prop::option::of(json_text()),
        prop::option::weighted(0.3, time_text()),
        prop::option::of(json_text()),
    )
        .prop_map(
            |(
                event_id,
                event_type,
                payload,
                tenant,
                subject_type,
                subject_id,
                actor,
                occurred_at,
                previous,
            )| {
                WriterRow {
                    event_id,
                    event_type: event_type.to_owned(),
                    payload,
                    tenant,
                    subject_type,
                    subject_id,
                    actor,
                    occurred_at,
                    previous,
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_a_writer_inserts_the_relay_keeps_delivering_and_every_row_ends_visibly() {
    const CASES: usize = 8;
    const ROWS_PER_CASE: usize = 40;
    let app = TestApp::new().await;
    app.register("p.x").await;
    app.register("p.y").await;
    let mut receiver = Receiver::start().await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    let writer = app.db.connect().await;
    writer.batch_execute("set role postbox_writer").await.unwrap();

    // A few ids shared by all cases, so that duplicates happen.
    let event_ids: Vec<String> = (0..8).map(|_| Uuid::new_v4().to_string()).collect();
    let mut runner = TestRunner::deterministic();
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..CASES {
        let rows: Vec<WriterRow> = (0..ROWS_PER_CASE)
            .map(|_| writer_row(event_ids.clone()).new_tree(&mut runner).expect("a row").current())
            .collect();
        for row in &rows {
            let inserted = writer
                .execute(
                    "insert into postbox.outbox (event_id, event_type, payload, tenant, subject_type, subject_id,
                                                 actor, occurred_at, previous)
                     values (coalesce($1::text::uuid, gen_random_uuid()), $2, $3::text::jsonb, $4, $5, $6,
                             $7::text::jsonb, coalesce($8::text::timestamptz, now()), $9::text::jsonb)",
                    &[
                        &row.event_id,
                        &row.event_type,
                        &row.payload,
                        &row.tenant,
                        &row.subject_type,
                        &row.subject_id,
                        &row.actor,
                        &row.occurred_at,
                        &row.previous,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => accepted += 1,
                Err(err) => {
                    // Refused rows are the app's to see, with a reason.
                    assert!(err.as_db_error().is_some(), "{row:?} refused without a database error: {err}");
                    refused += 1;
                }
            }
        }

        // A normal event still arrives.
        let needle = format!("sentinel-of-case-{case}");
        app.emit("p.x", json!({ "sentinel": needle })).await;
        // Bodies are compared as bytes: some are nested too deeply to parse.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut arrived = false;
        while !arrived && tokio::time::Instant::now() < deadline {
            arrived = receiver.drain().iter().any(|r| String::from_utf8_lossy(&r.body).contains(&needle));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !arrived {
            let rows = app
                .sql
                .query(
                    "select concat_ws(' | ', o.id, o.dispatched_at is not null, o.event_type, d.status, d.attempt_count,
                            left(d.last_error, 200), d.leased_until > now(), octet_length(o.payload::text))
                     from postbox.outbox o left join postbox.deliveries d on d.event_id = o.event_id order by o.id",
                    &[],
                )
                .await
                .unwrap();
            for row in rows {
                eprintln!("{}", row.get::<_, String>(0));
            }
            panic!("the sentinel of case {case} did not arrive");
        }

        // Every accepted row ends visibly: dispatched, and each delivery
        // succeeded or failed with its reason.
        let pending_query = "select count(*) from postbox.outbox o
             where o.dispatched_at is null
                or exists (select 1 from postbox.deliveries d where d.event_id = o.event_id
                           and (d.status = 'pending' or (d.status = 'failed' and d.last_error is null)))";
        crate::support::eventually(Duration::from_secs(30), "every accepted row reaches an end", || async {
            app.count(pending_query).await == 0
        })
        .await;
    }
    println!("writer rows: {accepted} accepted, {refused} refused");
    assert!(accepted > 0 && refused > 0, "the cases exercised both: {accepted} accepted, {refused} refused");
    let deep = app.count("select count(*) from postbox.outbox where payload::text like '%[[[[[[[[[[%'").await;
    let large =
        app.count("select count(*) from postbox.outbox where octet_length(payload::text) > 10000").await;
    assert!(deep > 0 && large > 0, "accepted rows include deep ({deep}) and large ({large}) payloads");
    let http = reqwest::Client::new();
    let ready = http.get(format!("{}/readyz", relay.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    relay.stop().await;
}
