//! The event type catalog.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::Result;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    pub archived: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventType {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

pub async fn list(client: &Client) -> Result<Vec<EventType>> {
    let rows = client
        .query("select t.name, t.description, t.archived from postbox.event_types t order by t.name", &[])
        .await?;
    Ok(rows.iter().map(|r| EventType { name: r.get(0), description: r.get(1), archived: r.get(2) }).collect())
}

pub async fn register(client: &Client, new: &NewEventType) -> Result<()> {
    client.execute("select postbox.register_event_type($1, $2)", &[&new.name, &new.description]).await?;
    Ok(())
}
