//! The command line: `postbox <command>`.

mod deliveries;
mod dev;
mod endpoints;
mod event_types;
mod events;
pub mod output;
mod tenants;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use postbox::{
    admin::Access,
    config::Settings,
    db::{self, schema},
    telemetry::LogFormat,
};

/// The CLI connects with the database's own credentials, so it acts as an
/// admin: it sees every tenant.
const ACCESS: Access = Access::Admin;

#[derive(Debug, Parser)]
#[command(name = "postbox", version, about = "A Postgres-native outbox relay for outgoing webhooks")]
pub struct Cli {
    /// Configuration file (default: ./postbox.toml if present)
    #[arg(long, global = true, env = "POSTBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The database: postgres://user:password@host:5432/database, or
    /// key=value pairs (also DATABASE_URL, POSTBOX_DATABASE__URL, or
    /// database.url in the configuration file)
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Log output format
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Print JSON for scripts instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Migrate {
    /// Install without the roles postbox_writer, postbox_relay and
    /// postbox_admin (for a role without CREATEROLE): everything then runs as
    /// the schema's owner, and the grants to the roles wait until a later
    /// `postbox migrate` finds them
    #[arg(long)]
    pub skip_roles: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade the schema (safe to run again, and concurrently)
    Migrate(Migrate),
    /// Run the relay until SIGTERM or SIGINT
    Run,
    /// Print the effective configuration, secrets masked
    Config,
    /// Try it locally: a throwaway PostgreSQL, the relay, its web page and an
    /// echo receiver; Ctrl-C removes everything
    Dev(dev::Dev),
    /// Manage endpoints (subscriptions)
    #[command(subcommand)]
    Endpoints(endpoints::Command),
    /// Inspect and redeliver deliveries
    #[command(subcommand)]
    Deliveries(deliveries::Command),
    /// Register, describe, list and archive event types
    #[command(subcommand)]
    EventTypes(event_types::Command),
    /// Send an endpoint every matching event since a time again
    Replay(events::Replay),
    /// Send an endpoint's failed deliveries since a time again (not the successes)
    Recover(events::Recover),
    /// Tenant tokens: a portal that sees one tenant's endpoints and deliveries
    #[command(subcommand)]
    Tenants(tenants::Command),
    /// Write an event into the outbox
    Emit(events::Emit),
    /// Emit created/updated/destroyed events from a table's rows
    Track(events::Track),
    /// Backlog, throughput and failing endpoints at a glance
    Status,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref()).context("invalid configuration")?;
    if let Some(url) = cli.database_url {
        settings.database.url = Some(postbox::config::Secret::new(url));
    }
    match cli.command {
        Command::Migrate(options) => migrate(&settings, &options).await,
        Command::Run => {
            let shutdown = CancellationToken::new();
            stop_on_signal(shutdown.clone());
            postbox::run(settings, shutdown).await?;
            Ok(())
        }
        Command::Config => print_config(&settings, cli.json),
        Command::Dev(options) => {
            let shutdown = CancellationToken::new();
            stop_on_signal(shutdown.clone());
            dev::run(options, settings, shutdown).await
        }
        Command::Endpoints(command) => endpoints::run(&connect(&settings).await?, command, cli.json).await,
        Command::Deliveries(command) => deliveries::run(&connect(&settings).await?, command, cli.json).await,
        Command::EventTypes(command) => event_types::run(&connect(&settings).await?, command, cli.json).await,
        Command::Replay(replay) => events::replay(&connect(&settings).await?, replay, cli.json).await,
        Command::Recover(recover) => events::recover(&connect(&settings).await?, recover, cli.json).await,
        Command::Tenants(command) => tenants::run(&connect(&settings).await?, command, cli.json).await,
        Command::Emit(emit) => events::emit(&connect(&settings).await?, emit, cli.json).await,
        Command::Track(track) => events::track(&connect(&settings).await?, track, cli.json).await,
        Command::Status => events::status(&connect(&settings).await?, cli.json).await,
    }
}

/// A connection for a command that needs the schema: says to migrate first
/// when it is missing or older than this binary.
async fn connect(settings: &Settings) -> anyhow::Result<tokio_postgres::Client> {
    let client = connect_only(settings).await?;
    let installed = schema::installed_version(&client).await?;
    if installed == 0 {
        anyhow::bail!("schema not installed: run `postbox migrate` first");
    }
    if installed < schema::latest_version() {
        anyhow::bail!(
            "schema version {installed} installed, {} needed: run `postbox migrate`",
            schema::latest_version()
        );
    }
    Ok(client)
}

async fn connect_only(settings: &Settings) -> anyhow::Result<tokio_postgres::Client> {
    Ok(db::connect(settings.database_url()?).await?)
}

async fn migrate(settings: &Settings, options: &Migrate) -> anyhow::Result<()> {
    let mut client = connect_only(settings).await?;
    let report =
        schema::migrate_with(&mut client, schema::Options { skip_roles: options.skip_roles }).await?;
    let version = schema::installed_version(&client).await?;
    if report.granted > 0 {
        output::line(format_args!(
            "granted to the postbox roles: {} statements deferred by --skip-roles",
            report.granted
        ))?;
    }
    if report.applied.is_empty() {
        output::line(format_args!("schema is up to date (version {version})"))?;
    } else {
        output::line(format_args!(
            "applied migrations {:?}; schema is at version {version}",
            report.applied
        ))?;
    }
    if report.deferred > 0 {
        output::line(format_args!(
            "skipped the postbox roles: {} grant statements wait in postbox.deferred_grants; \
             run postbox migrate again once the roles exist",
            report.deferred
        ))?;
    }
    Ok(())
}

fn print_config(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let values = settings.masked();
    if json {
        return output::json(&values);
    }
    for (key, value) in values {
        let shown = match value {
            serde_json::Value::Null => "(not set)".to_owned(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        output::line(format_args!("{key} = {shown}"))?;
    }
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at
/// once. The handlers are in place when this returns.
fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler works at startup");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler works at startup");
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        shutdown.cancel();
        tracing::info!("shutting down: finishing in-flight deliveries (signal again to exit now)");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
