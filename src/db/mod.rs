//! The database layer: the connection pool and the SQL the relay runs,
//! embedded from `sql/queries`; the schema's migrations ([`schema`]), TLS to
//! Postgres ([`pgtls`]) and a throwaway local server for `postbox dev` and the
//! tests ([`localpg`]).

pub mod localpg;
pub mod pgtls;
pub mod schema;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) mod sql {
    pub const OUTBOX_DISPATCH_BATCH: &str = include_str!("../../sql/queries/outbox_dispatch_batch.sql");
    pub const DELIVERY_CLAIM_DUE: &str = include_str!("../../sql/queries/delivery_claim_due.sql");
    pub const DELIVERY_RECORD_ATTEMPTS: &str = include_str!("../../sql/queries/delivery_record_attempts.sql");
    pub const DELIVERY_RELEASE: &str = include_str!("../../sql/queries/delivery_release.sql");
    pub const WAKEUP_MARK_BUSY: &str = include_str!("../../sql/queries/wakeup_mark_busy.sql");
    pub const WAKEUP_MARK_IDLE: &str = include_str!("../../sql/queries/wakeup_mark_idle.sql");
    pub const WAKEUP_SET_MODE: &str = include_str!("../../sql/queries/wakeup_set_mode.sql");
    pub const OUTBOX_PRUNE: &str = include_str!("../../sql/queries/outbox_prune.sql");
    pub const NETWORK_POLICY_SET: &str = include_str!("../../sql/queries/network_policy_set.sql");
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database.url: {0}")]
    Url(#[source] ConnectError),
    #[error(transparent)]
    Build(#[from] deadpool_postgres::BuildError),
}

/// A pool of at most `size` connections. Connections are made lazily, so this
/// succeeds while the database is down; the first query reports it.
pub fn pool(url: &str, size: usize) -> Result<Pool, Error> {
    let (config, tls) = connection_config(url).map_err(Error::Url)?;
    pool_from(config, tls, size)
}

/// The relay's own pool (dispatch, claims, attempt records, pruning): like
/// [`pool`], with three session settings.
///
/// - Unless `wait_for_commit`, `synchronous_commit = off`: commits return
///   before the WAL reaches disk (see `relay.synchronous_commit`). Apps'
///   events stay as durable as their own transactions made them.
/// - `enable_seqscan = off`: every statement of the relay finds its rows by
///   index, but its prepared plans are made once per connection, often while
///   the queue tables are nearly empty (a new install, or right after
///   retention), and then kept while the tables grow. Measured: attempt
///   records hash-joining a sequential scan of all deliveries, 60% more
///   buffers per batch, until autoanalyze came round.
/// - `jit = off`: the relay's statements are short, and a sequential scan
///   that has no alternative (a small table without a fitting index) now
///   costs enough on paper to be compiled: measured, a 10 ms dispatch pass
///   took 650 ms.
pub fn relay_pool(url: &str, size: usize, wait_for_commit: bool) -> Result<Pool, Error> {
    let (mut config, tls) = connection_config(url).map_err(Error::Url)?;
    let mut options = config.get_options().map_or(String::new(), |o| format!("{o} "));
    options.push_str("-c enable_seqscan=off -c jit=off");
    if !wait_for_commit {
        options.push_str(" -c synchronous_commit=off");
    }
    config.options(options);
    pool_from(config, tls, size)
}

fn pool_from(config: tokio_postgres::Config, tls: MakeRustlsConnect, size: usize) -> Result<Pool, Error> {
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()?)
}

/// Connecting failed, or the connection string is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Tls(#[from] pgtls::Error),
}

/// `url` parsed, with postbox's defaults where the URL sets none (the
/// application name operators see in pg_stat_activity, a connect timeout),
/// and the TLS connector its `sslmode` asks for (see [`pgtls`]).
pub fn connection_config(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), ConnectError> {
    let (rest, tls) = pgtls::split(url)?;
    let mut config: tokio_postgres::Config = rest.parse()?;
    config.ssl_mode(tls.ssl_mode());
    if config.get_application_name().is_none() {
        config.application_name("postbox");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok((config, tls.connector()?))
}

/// A single connection outside the pool (migrations, LISTEN). Its driver task
/// runs until the client is dropped.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (config, tls) = connection_config(url)?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "database connection closed");
        }
    });
    Ok(client)
}

/// A failed query: our own fault or the database's, never an endpoint's.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
}
