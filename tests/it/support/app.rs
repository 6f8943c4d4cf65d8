//! A relay wired to a private database, driven step by step (no sleeps).

use std::sync::Arc;

use deadpool_postgres::Pool;
use postbox::{
    config::Settings,
    delivery::sender::Sender,
    relay::{
        deliverer::Deliverer,
        dispatcher::{Dispatched, Dispatcher},
    },
};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use super::db::TestDb;

pub struct TestApp {
    pub settings: Settings,
    pub pool: Pool,
    /// A plain connection for the test's own SQL.
    pub sql: Client,
    pub dispatcher: Dispatcher,
    pub deliverer: Arc<Deliverer>,
    // Last, so that connections close before the database is dropped.
    pub db: TestDb,
}

impl TestApp {
    /// Loopback allowed, three immediate attempts, short timeouts.
    pub async fn new() -> Self {
        Self::with_settings(&[]).await
    }

    /// Like [`TestApp::new`], with `POSTBOX_*` settings overridden.
    pub async fn with_settings(overrides: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let settings = test_settings(&db.url, overrides);
        let pool = db.pool();
        let sender = Sender::new(settings.sender_config()).expect("HTTP client builds");
        let sql = db.connect().await;
        // What `postbox run` does at start: subscriptions see its network policy.
        let notify = settings.relay.wakeup == postbox::config::Wakeup::Notify;
        postbox::publish_relay_settings(&sql, &settings, notify).await.expect("publish relay settings");
        Self {
            dispatcher: Dispatcher::new(pool.clone(), settings.dispatcher_config(), Arc::default()),
            deliverer: Arc::new(Deliverer::new(
                pool.clone(),
                sender,
                settings.deliverer_config(),
                Arc::default(),
            )),
            sql,
            settings,
            pool,
            db,
        }
    }

    pub async fn dispatch(&self) -> Dispatched {
        self.dispatcher.run_once().await.expect("dispatch")
    }

    /// Attempts every due delivery once; returns how many were attempted.
    pub async fn deliver(&self) -> usize {
        self.deliverer.run_once().await.expect("deliver")
    }

    pub async fn register(&self, event_type: &str) {
        self.sql.execute("select postbox.register_event_type($1)", &[&event_type]).await.unwrap();
    }

    pub async fn subscribe(&self, url: &str, event_types: &[&str]) -> Uuid {
        let row = self
            .sql
            .query_one("select postbox.subscribe($1, $2)", &[&url, &event_types])
            .await
            .expect("subscribe");
        row.get(0)
    }

    pub async fn emit(&self, event_type: &str, payload: Value) -> Uuid {
        let row =
            self.sql.query_one("select postbox.emit($1, $2)", &[&event_type, &payload]).await.expect("emit");
        row.get(0)
    }

    pub async fn secret(&self, endpoint: Uuid) -> String {
        self.sql
            .query_one("select secret from postbox.endpoints where id = $1", &[&endpoint])
            .await
            .unwrap()
            .get(0)
    }

    /// (status, attempt_count) of the delivery of `event` to `endpoint`.
    pub async fn delivery_state(&self, event: Uuid, endpoint: Uuid) -> (String, i32) {
        let row = self
            .sql
            .query_one(
                "select status, attempt_count from postbox.deliveries where event_id = $1 and endpoint_id = $2",
                &[&event, &endpoint],
            )
            .await
            .expect("delivery exists");
        (row.get(0), row.get(1))
    }

    /// (response_status, error) of each attempt of a delivery, in order.
    pub async fn attempts(&self, event: Uuid, endpoint: Uuid) -> Vec<(Option<i32>, Option<String>)> {
        self.sql
            .query(
                "select a.response_status, a.error from postbox.attempts a
                 join postbox.deliveries d on d.id = a.delivery_id
                 where d.event_id = $1 and d.endpoint_id = $2 order by a.attempt_number",
                &[&event, &endpoint],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// `postbox.replay` of the last day's events to `endpoint`: how many.
    pub async fn replay(&self, endpoint: Uuid) -> i64 {
        self.sql
            .query_one("select postbox.replay($1, now() - interval '1 day')", &[&endpoint])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn count(&self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).await.unwrap().get(0)
    }

    /// Bounded wait until `query` (a count) reaches `at_least`.
    pub async fn wait_for_count(&self, query: &str, at_least: i64, limit: std::time::Duration) {
        super::eventually(limit, &format!("`{query}` reaching {at_least}"), || async {
            self.count(query).await >= at_least
        })
        .await;
    }

    /// Bounded wait until `relays` relays LISTEN on this database.
    pub async fn wait_for_listeners(&self, relays: i64) {
        let query = format!(
            "select count(*) from pg_stat_activity where datname = '{}'
             and application_name = 'postbox-listen' and query ilike 'listen%'",
            self.db.name
        );
        self.wait_for_count(&query, relays, std::time::Duration::from_secs(20)).await;
    }
}

pub fn test_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("POSTBOX_NETWORK__ALLOW_PRIVATE".to_owned(), "true".to_owned()),
        ("POSTBOX_ADMIN__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("POSTBOX_RELAY__POLL_INTERVAL".to_owned(), "100ms".to_owned()),
        ("POSTBOX_RELAY__LEASE".to_owned(), "10s".to_owned()),
        ("POSTBOX_DELIVERY__TIMEOUT".to_owned(), "2s".to_owned()),
        ("POSTBOX_DELIVERY__RETRY_SCHEDULE".to_owned(), "0s,0s,0s".to_owned()),
    ];
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    Settings::load_from(None, env).expect("test settings are valid")
}
