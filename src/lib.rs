//! postbox: a Postgres-native outbox relay for outgoing webhooks.
//!
//! Apps write events into `postbox.outbox`; the [dispatcher] fans them out
//! into `postbox.deliveries`; the [deliverer] POSTs them, signed per the
//! Standard Webhooks spec, and records every attempt.
//!
//! The layers, top to bottom (a module may use those below it, never above):
//!
//! ```text
//! cli/ (binary)   the commands; main.rs parses and hands over
//! api/            the admin HTTP surface: axum routes, web page, health, metrics
//! admin/          what operators do (endpoints, deliveries, status) as SQL, shared by api/ and cli/
//! relay/          the loops that move work: dispatcher, deliverer, retention, wakeup, capacity, backoff
//! delivery/       one attempt on the wire: webhook, signing, netpolicy, sender, retry; no database
//! db/             the pool, the embedded SQL, schema migrations, TLS to Postgres, a local server
//! config, metrics, telemetry   settings, counters and logs, used by every layer
//! ```
//!
//! Two rules hold the design together:
//! - The database is the only interface between the dispatcher (outbox to
//!   deliveries) and the deliverer (deliveries to HTTP). The one exception:
//!   deliveries the dispatcher has already leased in the database may be
//!   handed to its own relay's deliverer in memory, because a crash then
//!   leaves nothing but leases that run out.
//! - No transaction and no pooled connection is held across an HTTP call:
//!   claim in a short transaction with a lease, send, record in one round trip.
//!
//! [dispatcher]: relay::dispatcher
//! [deliverer]: relay::deliverer

pub mod admin;
pub mod api;
pub mod config;
pub mod db;
pub mod delivery;
pub mod metrics;
pub mod relay;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc};

use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    api::ApiState,
    config::{Settings, Wakeup as WakeupMode},
    db::schema,
    delivery::{
        netpolicy::NetworkPolicy,
        retry::RetryPolicy,
        sender::{Sender, SenderConfig},
    },
    metrics::Metrics,
    relay::{
        backoff,
        deliverer::{Deliverer, DelivererConfig},
        dispatcher::{Dispatcher, DispatcherConfig},
        retention::{self, RetentionConfig},
        supervisor::{self, Liveness},
        wakeup::Wakeup,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "cannot listen on {address}: {cause}; set admin.listen (or POSTBOX_ADMIN__LISTEN) to a free address"
    )]
    Listen { address: SocketAddr, cause: std::io::Error },
    #[error(transparent)]
    TaskFailed(#[from] supervisor::TaskFailed),
    #[error(transparent)]
    NotASession(db::session::Error),
}

impl Settings {
    pub fn dispatcher_config(&self) -> DispatcherConfig {
        DispatcherConfig {
            batch_size: self.relay.batch_size,
            poll_interval: self.relay.poll_interval,
            first_delay: self.retry_policy().first_delay(),
            notify: self.relay.wakeup == WakeupMode::Notify,
            max_request_body: self.delivery.max_request_body,
        }
    }

    pub fn deliverer_config(&self) -> DelivererConfig {
        DelivererConfig {
            batch_size: self.relay.batch_size as usize,
            concurrency: self.relay.concurrency,
            poll_interval: self.relay.poll_interval,
            lease: self.relay.lease,
            shutdown_grace: self.relay.shutdown_grace,
            endpoint_concurrency: self.delivery.endpoint_concurrency,
            disable_endpoint_after: self.delivery.disable_endpoint_after,
            retry: self.retry_policy(),
            max_request_body: self.delivery.max_request_body,
        }
    }

    pub fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            timeout: self.delivery.timeout,
            connect_timeout: self.delivery.connect_timeout,
            max_response_body: self.delivery.max_response_body,
            policy: NetworkPolicy {
                allow_private: self.network.allow_private,
                allow_cidrs: self.network.allow_cidrs.clone(),
            },
        }
    }

    pub fn retention_config(&self) -> RetentionConfig {
        RetentionConfig { period: self.retention.period, interval: self.retention.interval }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            schedule: self.delivery.retry_schedule.clone(),
            jitter: self.delivery.retry_jitter,
            max_retry_after: self.delivery.max_retry_after,
        }
    }
}

/// Connections for the admin HTTP API, beside `database.pool_size`.
const ADMIN_POOL_SIZE: usize = 4;

/// A relay whose admin address is bound, ready to [`Relay::run`].
pub struct Relay {
    settings: Settings,
    /// The dispatcher's, deliverer's and pruner's connections.
    pool: Pool,
    /// The admin API's: operators' writes (a new endpoint, a rotated secret
    /// shown once) always wait for the WAL flush, whatever
    /// `relay.synchronous_commit` says. Connections are made on demand.
    admin_pool: Pool,
    sender: Sender,
    admin: TcpListener,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Checks the settings, builds the pool and HTTP client and binds
    /// `admin.listen`, so that a bad address fails start-up at once.
    pub async fn bind(settings: Settings) -> Result<Self, Error> {
        let url = settings.database_url()?;
        let pool = db::relay_pool(url, settings.database.pool_size, settings.relay.synchronous_commit)?;
        let admin_pool = db::pool(url, ADMIN_POOL_SIZE)?;
        let sender = Sender::new(settings.sender_config())?;
        let admin = TcpListener::bind(settings.admin.listen)
            .await
            .map_err(|cause| Error::Listen { address: settings.admin.listen, cause })?;
        Ok(Self { settings, pool, admin_pool, sender, admin, metrics: Arc::default() })
    }

    /// The admin HTTP address actually bound (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("a bound listener has an address")
    }

    /// Runs until `shutdown` is cancelled: serves the admin HTTP API at once,
    /// waits for the database and a current schema, checks that its
    /// connections are sessions (fails if not), then runs the dispatcher,
    /// the deliverer and (in notify mode) the LISTEN connection side by side.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Relay { settings, pool, admin_pool, sender, admin, metrics } = self;
        let liveness = Arc::new(Liveness::new(settings.relay.poll_interval));
        let state = ApiState {
            pool: admin_pool.clone(),
            metrics: Arc::clone(&metrics),
            token: settings.admin.token.clone(),
            listen: admin.local_addr().expect("a bound listener has an address"),
            allowed_hosts: settings.admin.allowed_hosts.clone(),
            liveness: Arc::clone(&liveness),
            database: settings.database_url().map(db::target_of).unwrap_or_default(),
            frame_ancestors: settings.admin.frame_ancestors.clone(),
        };
        info!(address = %state.listen, "admin HTTP listening");
        let admin_server = tokio::spawn(api::serve(admin, state, shutdown.clone()));

        let mut outcome = Ok(());
        let ready = wait_for_database(&pool, &settings, &shutdown).await;
        if let Ok(true) = ready {
            liveness.start();
            let url = settings.database_url()?.to_owned();
            let wakeup = Wakeup::default();
            let deliverer = Arc::new(
                Deliverer::new(pool.clone(), sender, settings.deliverer_config(), Arc::clone(&metrics))
                    .watched_by(Arc::clone(&liveness))
                    .rings_on_events(wakeup.dispatcher.clone()),
            );
            let dispatcher =
                Dispatcher::new(pool.clone(), settings.dispatcher_config(), Arc::clone(&metrics))
                    .lease_to(Arc::clone(&deliverer))
                    .watched_by(Arc::clone(&liveness));
            info!(wakeup = ?settings.relay.wakeup, concurrency = settings.relay.concurrency, "relay started");

            let mut tasks = vec![
                (
                    "dispatcher",
                    tokio::spawn(dispatcher.run(
                        wakeup.dispatcher.clone(),
                        wakeup.deliverer.clone(),
                        shutdown.clone(),
                    )),
                ),
                ("deliverer", tokio::spawn(deliverer.run(wakeup.deliverer.clone(), shutdown.clone()))),
                (
                    "retention",
                    tokio::spawn(retention::run(
                        pool.clone(),
                        settings.retention_config(),
                        Arc::clone(&metrics),
                        shutdown.clone(),
                    )),
                ),
            ];
            if settings.relay.wakeup == WakeupMode::Notify {
                tasks.push(("listener", tokio::spawn(wakeup.clone().listen(url, shutdown.clone()))));
            }
            outcome = supervisor::supervise(tasks, &shutdown).await.map_err(Error::from);
        } else if let Err(err) = ready {
            outcome = Err(err);
        }
        shutdown.cancel(); // stops the admin server too, if the loops ended on their own
        if let Ok(Err(err)) = admin_server.await {
            warn!(error = %err, "admin HTTP server failed");
        }
        pool.close();
        admin_pool.close();
        info!("relay stopped");
        outcome
    }
}

/// Binds and runs a relay until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    Relay::bind(settings).await?.run(shutdown).await
}

/// Records what apps' inserts and subscriptions need to know of this relay:
/// whether it listens for NOTIFY, and its outbound network policy.
pub async fn publish_relay_settings(
    client: &tokio_postgres::Client,
    settings: &Settings,
    notify: bool,
) -> Result<(), tokio_postgres::Error> {
    client.execute(db::sql::WAKEUP_SET_MODE, &[&notify]).await?;
    let cidrs: Vec<String> = settings.network.allow_cidrs.iter().map(ToString::to_string).collect();
    client.execute(db::sql::NETWORK_POLICY_SET, &[&settings.network.allow_private, &cidrs]).await?;
    Ok(())
}

/// Waits until the database answers with the schema this binary expects,
/// records the wake-up mode and checks that the relay's connections are
/// sessions ([`db::session`]). False when shut down while waiting; an error
/// when they are not sessions, which waiting does not mend.
async fn wait_for_database(
    pool: &Pool,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    let notify = settings.relay.wakeup == WakeupMode::Notify;
    let url = settings.database_url()?;
    let database = db::target_of(url);
    let mut failures = 0;
    loop {
        // The session check first: it uses no prepared statement, so it
        // answers through transaction pooling too, where the others may not.
        let problem = match pool.get().await {
            Err(err) => format!("cannot connect to {database}: {}", db::explain(&err)),
            Ok(client) => match db::session::check(url, db::session::WAIT).await {
                Err(db::session::Error::Connect(err)) => format!("session check failed: {err}"),
                Err(err) => return Err(Error::NotASession(err)),
                Ok(()) => match schema::installed_version(&**client).await {
                    Err(err) => format!("cannot read the schema version: {}", db::explain(&err)),
                    Ok(version) if version < schema::latest_version() => format!(
                        "schema version {version} installed, {} needed: run `postbox migrate`",
                        schema::latest_version()
                    ),
                    Ok(_) => match publish_relay_settings(&client, settings, notify).await {
                        Ok(()) => return Ok(true),
                        Err(err) => format!("cannot record the relay's settings: {}", db::explain(&err)),
                    },
                },
            },
        };
        failures += 1;
        let retry_in = backoff::backoff(failures);
        warn!(%problem, retry_in = ?retry_in, "waiting for the database");
        backoff::sleep_or_cancel(retry_in, shutdown).await;
        if shutdown.is_cancelled() {
            return Ok(false);
        }
    }
}
