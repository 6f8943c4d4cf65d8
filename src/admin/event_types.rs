//! The event type catalog.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::Result;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    pub archived: bool,
    /// Deliveries of this type created in the last 24 hours.
    #[serde(default)]
    pub deliveries_24h: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventType {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

pub async fn list(client: &Client) -> Result<Vec<EventType>> {
    // Recent volume through deliveries_created_idx; the outbox has no time index
    // to keep app inserts cheap.
    let rows = client
        .query(
            "with recent as (
                 select o.event_type, count(*) as deliveries
                 from postbox.deliveries d join postbox.outbox o on o.event_id = d.event_id
                 where d.created_at > now() - interval '24 hours'
                 group by o.event_type)
             select t.name, t.description, t.archived, coalesce(recent.deliveries, 0) as deliveries
             from postbox.event_types t left join recent on recent.event_type = t.name
             order by t.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EventType {
            name: r.get(0),
            description: r.get(1),
            archived: r.get(2),
            deliveries_24h: r.get(3),
        })
        .collect())
}

pub async fn register(client: &Client, new: &NewEventType) -> Result<()> {
    client.execute("select postbox.register_event_type($1, $2)", &[&new.name, &new.description]).await?;
    Ok(())
}
