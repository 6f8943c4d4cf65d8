//! A private, migrated database per test, dropped when the test ends.

use std::time::Duration;

use deadpool_postgres::Pool;
use postbox::db::{self, schema};
use tokio_postgres::Client;
use uuid::Uuid;

/// Where the tests find PostgreSQL.
pub fn server_url() -> String {
    std::env::var("POSTBOX_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
    server_url: String,
}

impl TestDb {
    /// Creates `postbox_test_<uuid>` and installs the schema with `postbox migrate`'s code.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        let mut client = db.connect().await;
        schema::migrate(&mut client).await.expect("migrations apply to a fresh database");
        db
    }

    /// Creates an empty database (no schema).
    pub async fn empty() -> Self {
        let server_url = server_url();
        let admin = connect_or_explain(&server_url).await;
        let name = format!("postbox_test_{}", Uuid::new_v4().simple());
        admin.batch_execute(&format!("create database {name}")).await.expect("create test database");
        let mut url = url::Url::parse(&server_url).expect("test database URL is a postgres:// URL");
        url.set_path(&name);
        Self { name, url: url.to_string(), server_url }
    }

    /// The same database over the server's Unix socket, which also works from
    /// inside another network namespace.
    pub fn socket_url(&self) -> String {
        let dir =
            std::env::var("POSTBOX_TEST_DATABASE_SOCKET").unwrap_or_else(|_| "/var/run/postgresql".into());
        let server = url::Url::parse(&self.server_url).expect("test database URL is a postgres:// URL");
        let password = server.password().map(|p| format!(" password={p}")).unwrap_or_default();
        format!("host={dir} user={}{password} dbname={}", server.username(), self.name)
    }

    pub async fn connect(&self) -> Client {
        db::connect(&self.url).await.expect("connect to the test database")
    }

    pub fn pool(&self) -> Pool {
        db::pool(&self.url, 8).expect("test pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs outside async; a small runtime of its own does the cleanup.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let admin = db::connect(&server_url).await.expect("connect to drop the test database");
                admin
                    .batch_execute(&format!("drop database if exists {name} with (force)"))
                    .await
                    .expect("drop test database");
            });
        });
        let _ = cleanup.join();
    }
}

async fn connect_or_explain(url: &str) -> Client {
    match tokio::time::timeout(Duration::from_secs(10), db::connect(url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => panic!(
            "cannot reach PostgreSQL at {url} ({err}); start it or set POSTBOX_TEST_DATABASE_URL=postgres://user@host:port/db"
        ),
        Err(_) => panic!(
            "timed out connecting to PostgreSQL at {url}; start it or set POSTBOX_TEST_DATABASE_URL=postgres://user@host:port/db"
        ),
    }
}
