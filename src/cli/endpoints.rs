//! `postbox endpoints …`

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{output, ACCESS};
use postbox::admin::endpoints::{self, Endpoint, EndpointUpdate, NewEndpoint};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe a URL; prints its signing secret once
    Add(Add),
    /// List endpoints
    List,
    /// Show one endpoint
    Show {
        /// The endpoint's id
        id: Uuid,
    },
    /// Change an endpoint (only what is given changes)
    Update(Update),
    /// Resume deliveries to an endpoint
    Enable {
        /// The endpoint's id
        id: Uuid,
    },
    /// Pause deliveries to an endpoint
    Disable {
        /// The endpoint's id
        id: Uuid,
    },
    /// Delete an endpoint with its deliveries and their attempts
    Rm {
        /// The endpoint's id
        id: Uuid,
        /// Delete without asking (needed when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// New secret; the old one keeps signing alongside it for 24 h
    RotateSecret {
        /// The endpoint's id
        id: Uuid,
    },
    /// Send a postbox.ping test event to this endpoint only
    Test {
        /// The endpoint's id
        id: Uuid,
    },
}

#[derive(Debug, Args)]
pub struct Add {
    /// Where to POST: an http(s) URL
    url: String,
    /// Event type or pattern (`order.*`, `*`); repeat for several (default `*`)
    #[arg(long = "event-type", short = 'e', value_name = "TYPE")]
    event_types: Vec<String>,
    /// Only this tenant's events
    #[arg(long)]
    tenant: Option<String>,
    /// Only events whose payload contains this JSON object
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// Extra request header NAME=VALUE; repeat for several
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// What it is, for the people reading the list
    #[arg(long)]
    description: Option<String>,
    /// At most this many requests per second, across all relays
    #[arg(long, value_name = "PER_SECOND", value_parser = clap::value_parser!(i32).range(1..), allow_negative_numbers = true)]
    rate_limit: Option<i32>,
    /// Use this `whsec_…` secret instead of a generated one
    #[arg(long)]
    secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct Update {
    /// The endpoint's id
    id: Uuid,
    /// A new http(s) URL
    #[arg(long)]
    url: Option<String>,
    /// Replace the event types; repeat for several
    #[arg(long = "event-type", short = 'e', value_name = "TYPE")]
    event_types: Vec<String>,
    /// Only this tenant's events from now on
    #[arg(long, conflicts_with = "no_tenant")]
    tenant: Option<String>,
    /// Receive every tenant's events
    #[arg(long)]
    no_tenant: bool,
    /// Only events whose payload contains this JSON object
    #[arg(long, value_name = "JSON", conflicts_with = "no_filter")]
    filter: Option<String>,
    /// Drop the payload filter
    #[arg(long)]
    no_filter: bool,
    /// Replace the extra headers; repeat for several
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// A new description
    #[arg(long)]
    description: Option<String>,
    /// At most this many requests per second, across all relays
    #[arg(long, value_name = "PER_SECOND", value_parser = clap::value_parser!(i32).range(1..), allow_negative_numbers = true, conflicts_with = "no_rate_limit")]
    rate_limit: Option<i32>,
    /// Send as fast as the receiver answers
    #[arg(long)]
    no_rate_limit: bool,
}

pub async fn run(client: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Add(add) => {
            let new = NewEndpoint {
                url: add.url,
                event_types: (!add.event_types.is_empty()).then_some(add.event_types),
                tenant: add.tenant,
                filter: add.filter.as_deref().map(parse_json).transpose()?,
                headers: (!add.headers.is_empty()).then(|| parse_headers(&add.headers)).transpose()?,
                description: add.description,
                rate_limit: add.rate_limit,
                secret: add.secret,
            };
            let created = endpoints::create(client, &ACCESS, &new).await?;
            warn_unmatched(&created.endpoint);
            if json {
                output::json(&created)?;
            } else {
                show(&created.endpoint)?;
                output::line(format_args!(
                    "\nsecret  {}\n(shown once: store it with the receiver now)",
                    created.secret
                ))?;
            }
        }
        Command::List => {
            let all = endpoints::list(client, &ACCESS).await?;
            if json {
                output::json(&all)?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.to_string(),
                            state(e),
                            success_rate(e),
                            e.event_types.join(","),
                            output::or_dash(e.tenant.as_ref()),
                            e.url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "STATE", "LAST 24H", "EVENT TYPES", "TENANT", "URL"], &rows)?;
            }
        }
        Command::Show { id } => print(&endpoints::get(client, &ACCESS, id).await?, json)?,
        Command::Update(update) => {
            let change = EndpointUpdate {
                url: update.url,
                event_types: (!update.event_types.is_empty()).then_some(update.event_types),
                tenant: if update.no_tenant { Some(None) } else { update.tenant.map(Some) },
                filter: if update.no_filter {
                    Some(None)
                } else {
                    update.filter.as_deref().map(parse_json).transpose()?.map(Some)
                },
                headers: (!update.headers.is_empty()).then(|| parse_headers(&update.headers)).transpose()?,
                description: update.description.map(Some),
                rate_limit: if update.no_rate_limit { Some(None) } else { update.rate_limit.map(Some) },
                enabled: None,
            };
            print(&endpoints::update(client, &ACCESS, update.id, &change).await?, json)?;
        }
        Command::Enable { id } => print(&endpoints::set_enabled(client, &ACCESS, id, true).await?, json)?,
        Command::Disable { id } => print(&endpoints::set_enabled(client, &ACCESS, id, false).await?, json)?,
        Command::Rm { id, yes } => {
            if !yes {
                confirm_delete(client, id).await?;
            }
            endpoints::delete(client, &ACCESS, id).await?;
            if json {
                output::json(&serde_json::json!({ "deleted": id }))?;
            } else {
                output::line(format_args!("deleted endpoint {id}"))?;
            }
        }
        Command::RotateSecret { id } => {
            let secret = endpoints::rotate_secret(client, &ACCESS, id).await?;
            if json {
                output::json(&serde_json::json!({ "secret": secret, "previous_secret_valid_for": "24h" }))?;
            } else {
                output::line(format_args!(
                    "secret  {secret}\n(shown once; the previous secret keeps signing for 24 h)"
                ))?;
            }
        }
        Command::Test { id } => {
            let event = endpoints::ping(client, &ACCESS, id).await?;
            if json {
                output::json(&serde_json::json!({ "event_id": event }))?;
            } else {
                output::line(format_args!(
                    "sent postbox.ping {event}; see `postbox deliveries list --endpoint {id}`"
                ))?;
            }
        }
    }
    Ok(())
}

/// On stderr, so that scripts reading stdout get the endpoint alone.
fn warn_unmatched(endpoint: &Endpoint) {
    use std::io::Write;
    for pattern in &endpoint.unmatched_patterns {
        // A closed stderr loses the warning, not the command.
        let _ = writeln!(
            std::io::stderr(),
            "warning: {} matches no registered event type yet (check its spelling; types registered later will match it)",
            output::escape_line(pattern)
        );
    }
}

fn print(endpoint: &Endpoint, json: bool) -> anyhow::Result<()> {
    warn_unmatched(endpoint);
    if json {
        output::json(endpoint)
    } else {
        show(endpoint)
    }
}

fn show(e: &Endpoint) -> anyhow::Result<()> {
    output::fields(&[
        ("id", e.id.to_string()),
        ("url", e.url.clone()),
        ("state", state(e)),
        ("event types", e.event_types.join(", ")),
        ("tenant", output::or_dash(e.tenant.as_ref())),
        ("filter", output::or_dash(e.filter.as_ref())),
        ("headers", e.headers.to_string()),
        ("description", output::or_dash(e.description.as_ref())),
        ("rate limit", e.rate_limit.map_or_else(|| "-".to_owned(), |limit| format!("{limit} requests/s"))),
        ("failing since", output::or_dash(e.failing_since.as_ref())),
        ("last 24 h", success_rate(e)),
        (
            "last failure",
            match e.health.as_ref().and_then(|h| h.last_failure.as_ref().zip(h.last_failure_at.as_ref())) {
                Some((failure, at)) => format!("{failure} at {at}"),
                None => "-".into(),
            },
        ),
        ("created", e.created_at.clone()),
        ("updated", e.updated_at.clone()),
    ])
}

/// "97% of 120 attempts" over the endpoint's deliveries of the last 24 hours.
fn success_rate(e: &Endpoint) -> String {
    match &e.health {
        Some(h) if h.attempts_24h > 0 => {
            format!("{}% of {} attempts", h.succeeded_24h * 100 / h.attempts_24h, h.attempts_24h)
        }
        _ => "no attempts".into(),
    }
}

fn state(e: &Endpoint) -> String {
    match (e.enabled, &e.disabled_reason, &e.failing_since) {
        (false, Some(reason), _) => format!("disabled ({reason})"),
        (false, None, _) => "disabled".into(),
        (true, _, Some(_)) => "failing".into(),
        (true, _, None) => "enabled".into(),
    }
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

fn parse_headers(pairs: &[String]) -> anyhow::Result<Value> {
    let mut headers = Map::new();
    for pair in pairs {
        let (name, value) =
            pair.split_once('=').with_context(|| format!("expected NAME=VALUE, got {pair:?}"))?;
        headers.insert(name.trim().to_owned(), Value::from(value.trim()));
    }
    Ok(Value::Object(headers))
}

/// Asks on a terminal before deleting an endpoint's whole history; refuses
/// without a terminal, so that a script says `--yes` on purpose.
async fn confirm_delete(client: &Client, id: Uuid) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let endpoint = endpoints::get(client, &ACCESS, id).await?;
    let deliveries: i64 = client
        .query_one("select count(*) from postbox.deliveries where endpoint_id = $1", &[&id])
        .await?
        .try_get(0)?;
    let what =
        format!("endpoint {id} ({}) with its {deliveries} deliveries and their attempts", endpoint.url);
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("this deletes {what}; pass --yes to confirm (stdin is not a terminal)");
    }
    output::prompt(format_args!("Delete {what}? [y/N] "))?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not deleted");
    }
    Ok(())
}
