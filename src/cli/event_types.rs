//! `postbox event-types …`

use clap::Subcommand;
use tokio_postgres::Client;

use super::{output, ACCESS};
use anyhow::Context;
use postbox::admin::event_types::{self, Description, EventType, NewEventType};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register an event type, so that apps may emit it (again: unarchives it)
    Add {
        /// Dot-separated words (order.created)
        name: String,
        /// What it means, for the people who subscribe to it
        #[arg(long)]
        description: Option<String>,
        /// An example payload, a JSON object
        #[arg(long, value_name = "JSON")]
        example: Option<String>,
    },
    /// Change a type's description or example payload
    Describe {
        /// The event type's name
        name: String,
        /// What it means, for the people who subscribe to it
        #[arg(long)]
        description: Option<String>,
        /// An example payload, a JSON object
        #[arg(long, value_name = "JSON")]
        example: Option<String>,
    },
    /// Every registered type, with its deliveries in the last 24 h
    List,
    /// Stop offering a type for new subscriptions (apps may still emit it)
    Archive {
        /// The event type's name
        name: String,
        /// Offer it again instead
        #[arg(long)]
        undo: bool,
    },
}

pub async fn run(client: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Add { name, description, example } => {
            let example = example.as_deref().map(parse_example).transpose()?;
            event_types::register(
                client,
                ACCESS.require_admin()?,
                &NewEventType { name: name.clone(), description, example },
            )
            .await?;
            if json {
                return output::json(&serde_json::json!({ "registered": name }));
            }
            output::line(format_args!("registered event type {name}"))
        }
        Command::List => {
            let types = event_types::list(client, &ACCESS).await?;
            if json {
                return output::json(&types);
            }
            let rows: Vec<Vec<String>> = types.iter().map(row).collect();
            output::table(&["NAME", "DELIVERIES 24H", "ARCHIVED", "DESCRIPTION"], &rows)
        }
        Command::Describe { name, description, example } => {
            let example = example.as_deref().map(parse_example).transpose()?;
            let changed = event_types::describe(
                client,
                ACCESS.require_admin()?,
                &name,
                &Description { description, example },
            )
            .await?;
            if json {
                return output::json(&changed);
            }
            output::line(format_args!("event type {name} described"))
        }
        Command::Archive { name, undo } => {
            let changed = event_types::set_archived(client, ACCESS.require_admin()?, &name, !undo).await?;
            if json {
                return output::json(&changed);
            }
            let state = if changed.archived { "archived" } else { "offered again" };
            output::line(format_args!("event type {name} {state}"))
        }
    }
}

fn parse_example(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).context("the example is not JSON")
}

fn row(t: &EventType) -> Vec<String> {
    vec![
        t.name.clone(),
        t.deliveries_24h.to_string(),
        if t.archived { "yes".into() } else { "".into() },
        output::or_dash(t.description.as_ref()),
    ]
}
