//! The event type catalog.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{Access, AdminAccess, Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    pub archived: bool,
    /// An example payload, for the people who subscribe.
    #[serde(default)]
    pub example: Option<serde_json::Value>,
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
    /// An example payload (a JSON object).
    #[serde(default)]
    pub example: Option<serde_json::Value>,
}

/// What `describe` changes; what is absent stays.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub example: Option<serde_json::Value>,
}

/// The whole catalog (a tenant reads it too, to subscribe); the recent
/// volume counts only the deliveries `access` may see.
pub async fn list(client: &Client, access: &Access) -> Result<Vec<EventType>> {
    select(client, access, None).await
}

/// One type, as [`list`] shows it.
pub async fn get(client: &Client, access: &Access, name: &str) -> Result<EventType> {
    select(client, access, Some(name))
        .await?
        .pop()
        .ok_or_else(|| Error::NotFound(format!("no event type {name:?}")))
}

/// Every type, or the one named.
async fn select(client: &Client, access: &Access, name: Option<&str>) -> Result<Vec<EventType>> {
    // Recent volume through deliveries_created_idx; the outbox has no time index
    // to keep app inserts cheap.
    let rows = client
        .query(
            "with recent as (
                 select o.event_type, count(*) as deliveries
                 from postbox.deliveries d join postbox.outbox o on o.event_id = d.event_id
                 join postbox.endpoints e on e.id = d.endpoint_id
                 where d.created_at > now() - interval '24 hours'
                   and ($1::text is null or o.event_type = $1)
                   and ($2::text is null or e.tenant = $2)
                 group by o.event_type)
             select t.name, t.description, t.archived, coalesce(recent.deliveries, 0) as deliveries, t.example
             from postbox.event_types t left join recent on recent.event_type = t.name
             where $1::text is null or t.name = $1
             order by t.name",
            &[&name, &access.tenant()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(EventType {
                name: r.try_get(0)?,
                description: r.try_get(1)?,
                archived: r.try_get(2)?,
                example: r.try_get(4)?,
                deliveries_24h: r.try_get(3)?,
            })
        })
        .collect()
}

pub async fn register(client: &Client, admin: AdminAccess, new: &NewEventType) -> Result<()> {
    client.execute("select postbox.register_event_type($1, $2)", &[&new.name, &new.description]).await?;
    if new.example.is_some() {
        let example = Description { description: None, example: new.example.clone() };
        describe(client, admin, &new.name, &example).await?;
    }
    Ok(())
}

/// Changes a type's description or example payload.
pub async fn describe(
    client: &Client,
    _: AdminAccess,
    name: &str,
    change: &Description,
) -> Result<EventType> {
    client
        .execute(
            "select postbox.describe_event_type($1, $2, $3)",
            &[&name, &change.description, &change.example],
        )
        .await?;
    get(client, &Access::Admin, name).await
}

/// Archives a type (or brings it back): an archived type is no longer offered
/// for new subscriptions; apps may still emit it, so nothing breaks.
pub async fn set_archived(client: &Client, _: AdminAccess, name: &str, archived: bool) -> Result<EventType> {
    let updated = client
        .execute("update postbox.event_types set archived = $2 where name = $1", &[&name, &archived])
        .await?;
    if updated == 0 {
        return Err(Error::NotFound(format!("no event type {name:?}")));
    }
    get(client, &Access::Admin, name).await
}
