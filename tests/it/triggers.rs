use serde_json::{json, Value};

use crate::support::TestApp;

/// (event_type, payload, previous, actor, tenant, subject_type, subject_id) in order.
type Event = (String, Value, Option<Value>, Option<Value>, Option<String>, Option<String>, Option<String>);

async fn events(app: &TestApp) -> Vec<Event> {
    app.sql
        .query(
            "select event_type, payload, previous, actor, tenant, subject_type, subject_id
             from postbox.outbox order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
        .collect()
}

async fn tracked_posts() -> TestApp {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table posts (id int primary key, title text, body text, password_hash text, org text);
             select postbox.track('posts', tenant_column => 'org', exclude_columns => '{password_hash}');",
        )
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn track_registers_event_types_for_its_subject() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table users (id int primary key); select postbox.track('users', subject => 'user');",
        )
        .await
        .unwrap();
    let names: Vec<String> = app
        .sql
        .query("select name from postbox.event_types where name like 'user.%' order by name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["user.created", "user.destroyed", "user.updated"]);
}

#[tokio::test]
async fn insert_emits_created_with_the_row_minus_excluded_columns() {
    let app = tracked_posts().await;
    app.sql
        .batch_execute("insert into posts values (1, 'Hello', 'World', 'secret-hash', 'acme')")
        .await
        .unwrap();
    let events = events(&app).await;
    assert_eq!(events.len(), 1);
    let (event_type, payload, previous, actor, tenant, subject_type, subject_id) = &events[0];
    assert_eq!(event_type, "posts.created");
    assert_eq!(payload, &json!({"id": 1, "title": "Hello", "body": "World", "org": "acme"}));
    assert_eq!((previous, actor), (&None, &None));
    assert_eq!(tenant.as_deref(), Some("acme"));
    assert_eq!(subject_type.as_deref(), Some("posts"));
    assert_eq!(subject_id.as_deref(), Some("1"));
}

#[tokio::test]
async fn update_emits_updated_with_previous_values_of_changed_columns_only() {
    let app = tracked_posts().await;
    app.sql.batch_execute("insert into posts values (1, 'Hello', 'World', 'h', 'acme')").await.unwrap();
    app.sql.batch_execute("update posts set title = 'Hi', password_hash = 'h2' where id = 1").await.unwrap();
    let events = events(&app).await;
    assert_eq!(events.len(), 2);
    let (event_type, payload, previous, ..) = &events[1];
    assert_eq!(event_type, "posts.updated");
    assert_eq!(payload, &json!({"id": 1, "title": "Hi", "body": "World", "org": "acme"}));
    assert_eq!(previous, &Some(json!({"title": "Hello"})));
}

#[tokio::test]
async fn update_that_changes_only_excluded_columns_or_nothing_emits_nothing() {
    let app = tracked_posts().await;
    app.sql.batch_execute("insert into posts values (1, 'Hello', 'World', 'h', 'acme')").await.unwrap();
    app.sql.batch_execute("update posts set password_hash = 'rotated'").await.unwrap();
    app.sql.batch_execute("update posts set title = title").await.unwrap();
    assert_eq!(events(&app).await.len(), 1, "only the insert emitted");
}

#[tokio::test]
async fn delete_emits_destroyed_with_the_old_row() {
    let app = tracked_posts().await;
    app.sql.batch_execute("insert into posts values (1, 'Hello', 'World', 'h', 'acme')").await.unwrap();
    app.sql.batch_execute("delete from posts").await.unwrap();
    let events = events(&app).await;
    let (event_type, payload, previous, ..) = &events[1];
    assert_eq!(event_type, "posts.destroyed");
    assert_eq!(payload, &json!({"id": 1, "title": "Hello", "body": "World", "org": "acme"}));
    assert_eq!(previous, &None);
}

#[tokio::test]
async fn actor_comes_from_set_local_postbox_actor() {
    let app = tracked_posts().await;
    app.sql
        .batch_execute(
            "begin;
             set local postbox.actor = '{\"type\": \"user\", \"id\": 42}';
             insert into posts values (1, 'a', 'b', 'h', 'acme');
             commit;
             insert into posts values (2, 'c', 'd', 'h', 'acme');",
        )
        .await
        .unwrap();
    let events = events(&app).await;
    assert_eq!(events[0].3, Some(json!({"type": "user", "id": 42})));
    assert_eq!(events[1].3, None, "SET LOCAL ends with its transaction");

    let err = app
        .sql
        .batch_execute(
            "begin; set local postbox.actor = 'not json'; insert into posts values (3, 'e', 'f', 'h', 'x');",
        )
        .await
        .unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("postbox.actor must be JSON"), "{err}");
    app.sql.batch_execute("rollback").await.unwrap();
}

#[tokio::test]
async fn actions_limit_what_is_emitted_and_untrack_stops_it() {
    let app = TestApp::new().await;
    app.sql
        .batch_execute(
            "create table tags (id int primary key, name text);
             select postbox.track('tags', actions => '{created}');
             insert into tags values (1, 'a');
             update tags set name = 'b';
             delete from tags;",
        )
        .await
        .unwrap();
    let types: Vec<String> = events(&app).await.into_iter().map(|e| e.0).collect();
    assert_eq!(types, ["tags.created"]);

    app.sql.batch_execute("select postbox.untrack('tags'); insert into tags values (2, 'c');").await.unwrap();
    assert_eq!(events(&app).await.len(), 1, "untracked tables emit nothing");
}

#[tokio::test]
async fn track_rejects_unknown_columns_and_actions() {
    let app = TestApp::new().await;
    app.sql.batch_execute("create table t (id int primary key)").await.unwrap();
    for (call, expected) in [
        ("select postbox.track('t', exclude_columns => '{nope}')", "has no column 'nope'"),
        ("select postbox.track('t', tenant_column => 'org')", "has no column 'org'"),
        ("select postbox.track('t', actions => '{created,exploded}')", "unknown action 'exploded'"),
        ("select postbox.track('missing_table')", "missing_table"),
    ] {
        let err = app.sql.batch_execute(call).await.unwrap_err();
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(message.contains(expected), "{call}: {message}");
    }
}

#[tokio::test]
async fn rows_changed_in_a_rolled_back_transaction_emit_nothing() {
    let app = tracked_posts().await;
    app.sql
        .batch_execute("begin; insert into posts values (1, 'a', 'b', 'h', 'acme'); rollback;")
        .await
        .unwrap();
    assert!(events(&app).await.is_empty());
}
