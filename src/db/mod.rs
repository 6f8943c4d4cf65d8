//! The database layer: the connection pool and the SQL the relay runs,
//! embedded from `sql/queries`; the schema's migrations ([`schema`]), TLS to
//! Postgres ([`pgtls`]) and a throwaway local server for `postbox dev` and the
//! tests ([`localpg`]).

pub mod localpg;
pub mod pgtls;
pub mod schema;
pub mod session;

use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Pool, PoolBuilder, RecyclingMethod, Runtime,
};
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) mod sql {
    pub const OUTBOX_DISPATCH_BATCH: &str = include_str!("../../sql/queries/outbox_dispatch_batch.sql");
    pub const DELIVERY_CLAIM_DUE: &str = include_str!("../../sql/queries/delivery_claim_due.sql");
    pub const DELIVERY_RECORD_ATTEMPTS: &str = include_str!("../../sql/queries/delivery_record_attempts.sql");
    pub const DELIVERY_RELEASE: &str = include_str!("../../sql/queries/delivery_release.sql");
    pub const DISPATCH_BATCHES_RECOVER: &str = include_str!("../../sql/queries/dispatch_batches_recover.sql");
    pub const WAKEUP_MARK_BUSY: &str = include_str!("../../sql/queries/wakeup_mark_busy.sql");
    pub const WAKEUP_MARK_IDLE: &str = include_str!("../../sql/queries/wakeup_mark_idle.sql");
    pub const WAKEUP_SET_MODE: &str = include_str!("../../sql/queries/wakeup_set_mode.sql");
    pub const OUTBOX_PRUNE: &str = include_str!("../../sql/queries/outbox_prune.sql");
    pub const NETWORK_POLICY_SET: &str = include_str!("../../sql/queries/network_policy_set.sql");
}

/// Runs `statement` under a generic plan: planned once per connection, not at
/// every run (for the relay's big statements planning costs three times what
/// running them does). Only for a statement whose every table is reached by
/// key from its own parameters, so that the plan it gets on empty tables is
/// still right on full ones, and that includes the statements of the
/// triggers it fires, which run under the same setting. The session goes
/// back to custom plans, which see the tables' current size, for everything
/// else (see [`relay_pool`]).
///
/// One round trip: the three messages go out pipelined, in this order, on
/// this connection, and the reset runs whatever the statement did.
pub async fn query_one_generic(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    let (set, row, reset) = tokio::join!(
        client.batch_execute("set plan_cache_mode = force_generic_plan"),
        client.query_one(statement, params),
        client.batch_execute("reset plan_cache_mode"),
    );
    set?;
    reset?;
    row
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
/// [`pool`], with session settings made by a `SET` on each new connection.
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
/// - No `plan_cache_mode = force_generic_plan`, though planning is a third
///   of a dispatch pass (1 to 2 ms): a generic plan is made once, often on
///   empty queue tables, and kept. Measured: a dispatch pass's check for
///   existing deliveries, planned while `deliveries` was empty, walked every
///   delivery of the endpoint by `deliveries_endpoint_idx` (0.3 to 1 s a
///   pass, a 50k drain at a twentieth of its speed). Custom plans see the
///   tables' current size at every run; [`query_one_generic`] runs a
///   statement whose plan cannot go wrong so without planning it each time.
/// - `default_transaction_isolation = read committed`, whatever the
///   database's default: ordered queues rely on each statement seeing what
///   committed before it (0010_per_key_order.sql).
///
/// A `SET`, not the `options` startup parameter: PgBouncer refuses a
/// connection that sends `options` unless `ignore_startup_parameters` lists
/// it, and then drops the settings without a word. A `SET` works directly and
/// through a session-mode pooler, which resets it when the relay lets go.
pub fn relay_pool(url: &str, size: usize, wait_for_commit: bool) -> Result<Pool, Error> {
    let (config, tls) = connection_config(url).map_err(Error::Url)?;
    let mut settings = "set enable_seqscan = off; set jit = off; \
                        set default_transaction_isolation = 'read committed';"
        .to_owned();
    if !wait_for_commit {
        settings.push_str(" set synchronous_commit = off;");
    }
    let settings: std::sync::Arc<str> = settings.into();
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(pool_builder(manager, size)
        .post_create(Hook::async_fn(move |client: &mut ClientWrapper, _| {
            let settings = std::sync::Arc::clone(&settings);
            Box::pin(async move { client.batch_execute(&settings).await.map_err(HookError::Backend) })
        }))
        .build()?)
}

fn pool_from(config: tokio_postgres::Config, tls: MakeRustlsConnect, size: usize) -> Result<Pool, Error> {
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(pool_builder(manager, size).build()?)
}

fn pool_builder(manager: Manager, size: usize) -> PoolBuilder {
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
}

/// What a valid connection string looks like, for errors about one.
pub const URL_FORMS: &str = "a URL, postgres://user:password@host:5432/database?sslmode=verify-full, \
                             or key=value pairs, host=db port=5432 dbname=app user=app";

/// Connecting failed, or the connection string is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    // The causes are in the message (not error sources), so that a chain
    // printed whole says them once.
    #[error("cannot connect to {target}: {}", explain(.cause))]
    Connect { target: String, cause: tokio_postgres::Error },
    #[error("{}", explain(.0))]
    Pg(tokio_postgres::Error),
    #[error("invalid connection string: {0}; expected {URL_FORMS}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] pgtls::Error),
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(err: tokio_postgres::Error) -> Self {
        ConnectError::Pg(err)
    }
}

/// Where a connection goes, for messages: `host:port/database as user`
/// (every host of a multi-host string), never the password.
pub fn target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_owned() } else { hosts.join(",") };
    let database = config.get_dbname().or(config.get_user()).unwrap_or("?");
    format!("{hosts}/{database} as {}", config.get_user().unwrap_or("?"))
}

/// [`target`] of a connection string (empty when it does not parse).
pub fn target_of(url: &str) -> String {
    connection_config(url).map(|(config, _)| target(&config)).unwrap_or_default()
}

/// The cause of a database error as Postgres or the OS said it
/// (`FATAL: database "x" does not exist`, `Connection refused`), without the
/// wrappers' generic words ("db error", deadpool's "while creating a new object").
pub fn explain(err: &(dyn std::error::Error + 'static)) -> String {
    use deadpool_postgres::PoolError;
    if let Some(PoolError::Backend(inner) | PoolError::PostCreateHook(HookError::Backend(inner))) =
        err.downcast_ref::<PoolError>()
    {
        return explain(inner);
    }
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(err) = current {
        let text = err.to_string();
        if text != "db error" && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// `url` parsed, with postbox's defaults where the URL sets none (the
/// application name operators see in pg_stat_activity, a connect timeout),
/// and the TLS connector its `sslmode` asks for (see [`pgtls`]).
pub fn connection_config(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), ConnectError> {
    if let Some((scheme, _)) = url.trim_start().split_once("://") {
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(ConnectError::Invalid(format!("the scheme is {scheme:?}, not postgres")));
        }
    }
    let (rest, tls) = pgtls::split(url)?;
    // tokio-postgres's own words ("unexpected EOF") are the parser's, not the user's.
    let mut config: tokio_postgres::Config = rest.parse().map_err(|err: tokio_postgres::Error| {
        let text = explain(&err);
        ConnectError::Invalid(text.trim_start_matches("invalid connection string: ").to_owned())
    })?;
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
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|cause| ConnectError::Connect { target: target(&config), cause })?;
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
