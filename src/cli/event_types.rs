//! `postbox event-types …`

use clap::Subcommand;
use tokio_postgres::Client;

use super::output;
use postbox::admin::event_types::{self, EventType, NewEventType};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register an event type, so that apps may emit it
    Add {
        /// Dot-separated words (order.created)
        name: String,
        /// What it means, for the people who subscribe to it
        #[arg(long)]
        description: Option<String>,
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
        Command::Add { name, description } => {
            event_types::register(client, &NewEventType { name: name.clone(), description }).await?;
            if json {
                return output::json(&serde_json::json!({ "registered": name }));
            }
            output::line(format_args!("registered event type {name}"))
        }
        Command::List => {
            let types = event_types::list(client).await?;
            if json {
                return output::json(&types);
            }
            let rows: Vec<Vec<String>> = types.iter().map(row).collect();
            output::table(&["NAME", "DELIVERIES 24H", "ARCHIVED", "DESCRIPTION"], &rows)
        }
        Command::Archive { name, undo } => {
            let changed = event_types::set_archived(client, &name, !undo).await?;
            if json {
                return output::json(&changed);
            }
            let state = if changed.archived { "archived" } else { "offered again" };
            output::line(format_args!("event type {name} {state}"))
        }
    }
}

fn row(t: &EventType) -> Vec<String> {
    vec![
        t.name.clone(),
        t.deliveries_24h.to_string(),
        if t.archived { "yes".into() } else { "".into() },
        output::or_dash(t.description.as_ref()),
    ]
}
