//! `postbox emit`, `postbox track`, `postbox replay`, `postbox recover`, `postbox status`.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{output, ACCESS};
use postbox::admin::{endpoints, status};

#[derive(Debug, Args)]
pub struct Emit {
    /// A registered event type (order.created)
    event_type: String,
    /// The payload, a JSON object
    payload: String,
    /// The tenant it belongs to: only endpoints of that tenant (or of all) get it
    #[arg(long)]
    tenant: Option<String>,
    /// What it is about (order), kept with the event for lookups
    #[arg(long)]
    subject_type: Option<String>,
    /// Which one (42), kept with the event for lookups
    #[arg(long)]
    subject_id: Option<String>,
    /// Who did it, a JSON object
    #[arg(long, value_name = "JSON")]
    actor: Option<String>,
    /// Events with one key reach each endpoint in order (order/42)
    #[arg(long, value_name = "KEY")]
    ordering_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct Track {
    /// Table name (optionally schema-qualified)
    table: String,
    /// Event name prefix (default: the table name)
    #[arg(long)]
    subject: Option<String>,
    /// Column whose value is the event's tenant
    #[arg(long)]
    tenant_column: Option<String>,
    /// Which of created, updated, destroyed (default all)
    #[arg(long, value_delimiter = ',')]
    actions: Vec<String>,
    /// Columns left out of the payload
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Each row's events reach each endpoint in order (keyed by subject and primary key)
    #[arg(long, conflicts_with = "untrack")]
    ordered: bool,
    /// Remove the triggers instead
    #[arg(long)]
    untrack: bool,
}

#[derive(Debug, Args)]
pub struct Replay {
    /// The endpoint's id
    endpoint: Uuid,
    /// A duration back from now (30m, 24h, 7d) or a time (2026-12-01T10:00:00Z)
    #[arg(long, value_name = "WHEN")]
    since: String,
}

pub async fn emit(client: &Client, emit: Emit, json: bool) -> anyhow::Result<()> {
    // The database lets owners and admins write these (postbox itself does);
    // from the CLI they would be forged operational events.
    if emit.event_type.to_ascii_lowercase().starts_with("postbox.") {
        anyhow::bail!(
            "event type {:?} is reserved: types beginning with \"postbox.\" are emitted by postbox itself",
            emit.event_type
        );
    }
    let payload = parse_json(&emit.payload)?;
    let actor = emit.actor.as_deref().map(parse_json).transpose()?;
    let event: Uuid = client
        .query_one(
            "select postbox.emit($1, $2, $3, $4, $5, $6, $7)",
            &[
                &emit.event_type,
                &payload,
                &emit.tenant,
                &emit.subject_type,
                &emit.subject_id,
                &actor,
                &emit.ordering_key,
            ],
        )
        .await
        .map_err(postbox::admin::Error::from)?
        .get(0);
    if json {
        output::json(&json!({ "event_id": event }))
    } else {
        output::line(event)
    }
}

pub async fn track(client: &Client, track: Track, json: bool) -> anyhow::Result<()> {
    let result = if track.untrack {
        client.execute("select postbox.untrack($1::text::regclass)", &[&track.table]).await
    } else {
        let actions = if track.actions.is_empty() {
            vec!["created".to_owned(), "updated".to_owned(), "destroyed".to_owned()]
        } else {
            track.actions
        };
        client
            .execute(
                "select postbox.track($1::text::regclass, $2, $3, $4, $5, $6)",
                &[
                    &track.table,
                    &track.subject,
                    &track.tenant_column,
                    &actions,
                    &track.exclude,
                    &track.ordered,
                ],
            )
            .await
    };
    result.map_err(postbox::admin::Error::from)?;
    let verb = if track.untrack { "untracked" } else { "tracking" };
    if json {
        output::json(&json!({ verb: track.table }))
    } else {
        output::line(format_args!("{verb} {}", track.table))
    }
}

pub async fn replay(client: &Client, replay: Replay, json: bool) -> anyhow::Result<()> {
    let spinner =
        (!json).then(|| Spinner::start(format!("replaying to {} since {}", replay.endpoint, replay.since)));
    let result = endpoints::replay(client, &ACCESS, replay.endpoint, &replay.since).await;
    drop(spinner);
    let replayed = result?;
    if json {
        output::json(&json!({ "replayed": replayed }))
    } else {
        output::line(format_args!("{replayed} deliveries scheduled for {}", replay.endpoint))
    }
}

#[derive(Debug, Args)]
pub struct Recover {
    /// The endpoint's id
    #[arg(long, value_name = "ID")]
    endpoint: Uuid,
    /// A duration back from now (30m, 24h, 7d) or a time (2026-12-01T10:00:00Z)
    #[arg(long, value_name = "WHEN")]
    since: String,
}

pub async fn recover(client: &Client, recover: Recover, json: bool) -> anyhow::Result<()> {
    let recovered = endpoints::recover(client, &ACCESS, recover.endpoint, &recover.since).await?;
    if json {
        output::json(&json!({ "recovered": recovered }))
    } else {
        output::line(format_args!(
            "{recovered} failed deliveries scheduled again for {} (they wait while it is disabled: `postbox endpoints enable`)",
            recover.endpoint
        ))
    }
}

pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let s = status::status(client, ACCESS.require_admin()?).await?;
    if json {
        return output::json(&s);
    }
    output::line("Backlog")?;
    output::fields(&[
        (
            "  events to dispatch",
            format!("{} (oldest {:.1}s)", s.undispatched_events, s.oldest_undispatched_age_seconds),
        ),
        (
            "  deliveries pending",
            format!(
                "{} ({} due now, lag {:.1}s)",
                s.pending_deliveries, s.due_deliveries, s.delivery_lag_seconds
            ),
        ),
    ])?;
    output::line("Last minute")?;
    output::fields(&[(
        "  attempts",
        format!(
            "{} ({} succeeded; {} failed: {} to be retried, {} ended their delivery as failed)",
            s.last_minute.attempts,
            s.last_minute.succeeded,
            s.last_minute.failed,
            s.last_minute.retrying,
            s.last_minute.deliveries_failed
        ),
    )])?;
    output::line(format_args!(
        "Endpoints: {} ({} failing, {} disabled)",
        s.endpoints,
        s.failing_endpoints.len(),
        s.disabled_endpoints.len()
    ))?;
    for (label, troubles) in [("FAILING ", &s.failing_endpoints), ("DISABLED", &s.disabled_endpoints)] {
        for t in troubles {
            let (url, detail) = (output::escape_line(&t.url), output::escape_line(&t.detail));
            output::line(format_args!("  {label} {}  {url}  {detail}", t.id))?;
        }
    }
    Ok(())
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

/// A one-line progress indicator on a terminal, for statements that take a while.
struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    fn start(message: String) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut interval = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                interval.tick().await;
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r{message} … {:.0}s", started.elapsed().as_secs_f64());
                let _ = stderr.flush();
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}
