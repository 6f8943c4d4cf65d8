//! `postbox deliveries …`

use clap::{Args, Subcommand};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use super::{output, ACCESS};
use postbox::admin::deliveries::{self, Filter};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deliveries, newest first
    List(List),
    /// One delivery with every attempt: request headers, response, error
    Show {
        /// The delivery's id (postbox-delivery-id on the wire)
        id: Uuid,
    },
    /// Schedule one more attempt now
    Redeliver {
        /// The delivery's id (postbox-delivery-id on the wire)
        id: Uuid,
    },
}

#[derive(Debug, Args)]
pub struct List {
    /// Only this endpoint's
    #[arg(long = "endpoint", value_name = "ID")]
    endpoint_id: Option<Uuid>,
    /// Only this event's: the id a receiver saw as webhook-id
    #[arg(long = "event", value_name = "EVENT_ID")]
    event_id: Option<Uuid>,
    /// pending, succeeded, failed or cancelled
    #[arg(long)]
    status: Option<String>,
    /// Only this event type
    #[arg(long)]
    event_type: Option<String>,
    /// Only this tenant's
    #[arg(long)]
    tenant: Option<String>,
    /// Created since: a duration back from now (30m, 24h, 7d) or a time
    /// (2026-12-01T10:00:00Z)
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Continue after this delivery id (the last one of the previous page)
    #[arg(long, value_name = "ID")]
    before: Option<Uuid>,
    /// At most this many (1 to 1000)
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

pub async fn run(client: &Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::List(list) => {
            let filter = Filter {
                endpoint_id: list.endpoint_id,
                event_id: list.event_id,
                status: list.status,
                event_type: list.event_type,
                tenant: list.tenant,
                since: list.since,
                before: list.before,
                limit: Some(list.limit),
            };
            let found = deliveries::list(client, &ACCESS, &filter).await?;
            if json {
                return output::json(&found);
            }
            let rows: Vec<Vec<String>> = found
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.created_at.clone(),
                        state(d.status.as_str(), d.waiting.as_deref()),
                        d.attempt_count.to_string(),
                        d.event_type.clone(),
                        d.endpoint_url.clone(),
                        output::or_dash(d.last_error.as_ref()),
                    ]
                })
                .collect();
            output::table(
                &["ID", "CREATED", "STATUS", "ATTEMPTS", "EVENT TYPE", "ENDPOINT", "LAST ERROR"],
                &rows,
            )?;
        }
        Command::Show { id } => {
            let detail = deliveries::get(client, &ACCESS, id).await?;
            if json {
                return output::json(&detail);
            }
            let d = &detail.delivery;
            output::fields(&[
                ("delivery", d.id.to_string()),
                ("event", format!("{} ({})", d.event_id, d.event_type)),
                ("endpoint", format!("{} {}", d.endpoint_id, d.endpoint_url)),
                ("status", d.status.clone()),
                ("attempts", d.attempt_count.to_string()),
                ("next attempt", output::or_dash(d.next_attempt_at.as_ref())),
                ("why pending", output::or_dash(d.waiting.as_ref())),
                ("created", d.created_at.clone()),
                (
                    "payload",
                    match &detail.payload {
                        Value::Null => "(nested too deeply to show here; see the request body)".to_owned(),
                        payload => payload.to_string(),
                    },
                ),
                ("request body", detail.request_body.clone()),
            ])?;
            for attempt in &detail.attempts {
                output::line(format_args!(
                    "\n--- attempt {} at {} ({} ms)",
                    attempt.attempt_number, attempt.started_at, attempt.duration_ms
                ))?;
                output::line("request headers:")?;
                print_headers(attempt.request_headers.as_ref())?;
                match (attempt.response_status, &attempt.error) {
                    (Some(status), _) => {
                        output::line(format_args!("response: HTTP {status}"))?;
                        print_headers(attempt.response_headers.as_ref())?;
                        match attempt.response_body.as_deref() {
                            Some("") | None => output::line("  (empty body)")?,
                            Some(body) => output::line(body)?,
                        }
                    }
                    (None, error) => {
                        let error = output::escape_line(error.as_deref().unwrap_or("-"));
                        output::line(format_args!("error: {error}"))?
                    }
                }
            }
        }
        Command::Redeliver { id } => {
            deliveries::redeliver(client, &ACCESS, id).await?;
            if json {
                output::json(&serde_json::json!({ "redelivering": id }))?;
            } else {
                output::line(format_args!("delivery {id} will be attempted again now"))?;
            }
        }
    }
    Ok(())
}

fn print_headers(headers: Option<&Value>) -> anyhow::Result<()> {
    if let Some(Value::Object(map)) = headers {
        for (name, value) in map {
            let value = value.as_str().unwrap_or_default();
            output::line(format_args!("  {}: {}", output::escape_line(name), output::escape_line(value)))?;
        }
    }
    Ok(())
}

/// The status, and for a pending delivery why in a word or two (`show`
/// gives the whole sentence).
fn state(status: &str, waiting: Option<&str>) -> String {
    let Some(waiting) = waiting else { return status.to_owned() };
    let why = if waiting.starts_with("waiting: behind") {
        "held by its key"
    } else if waiting.starts_with("waiting: endpoint disabled") {
        "endpoint disabled"
    } else if waiting.starts_with("waiting: attempt") {
        "retry scheduled"
    } else if waiting.starts_with("in flight") {
        "in flight"
    } else {
        "due"
    };
    format!("{status} ({why})")
}

#[cfg(test)]
mod tests {
    use super::state;

    #[test]
    fn a_pending_delivery_says_why_in_a_word_or_two() {
        assert_eq!(state("succeeded", None), "succeeded");
        assert_eq!(
            state("pending", Some("waiting: behind an earlier delivery of ordering key k; sent once ...")),
            "pending (held by its key)"
        );
        assert_eq!(
            state("pending", Some("waiting: endpoint disabled (paused by hand); enable it")),
            "pending (endpoint disabled)"
        );
        assert_eq!(
            state("pending", Some("due now: waiting for a relay with a free request slot")),
            "pending (due)"
        );
    }
}
