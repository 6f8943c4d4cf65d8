//! `since`, as the CLI's `--since` and the API's `since` take it everywhere:
//! a duration back from now (`90s`, `30m`, `24h`, `7d`) or a time Postgres
//! reads (`2026-12-01T10:00:00Z`, `2026-12-01`).

use tokio_postgres::{error::SqlState, Client};

use super::{Error, Result};

const FORMS: &str = "a duration back from now (30m, 24h, 7d) or a time (2026-12-01T10:00:00Z)";

/// The absolute time `since` names, in RFC 3339, as the database reckons it.
pub async fn resolve(client: &Client, since: &str) -> Result<String> {
    let resolved = match crate::config::parse_duration(since.trim()) {
        Ok(ago) => {
            client
                .query_one("select postbox.rfc3339(now() - make_interval(secs => $1))", &[&ago.as_secs_f64()])
                .await
        }
        Err(_) => client.query_one("select postbox.rfc3339($1::text::timestamptz)", &[&since.trim()]).await,
    };
    let row = resolved.map_err(|err| match err.code() {
        Some(code) if code.code().starts_with("22") || *code == SqlState::DATETIME_FIELD_OVERFLOW => {
            Error::Invalid(format!("since {since:?} is neither {FORMS}"))
        }
        _ => err.into(),
    })?;
    row.try_get::<_, Option<String>>(0)?
        .ok_or_else(|| Error::Invalid(format!("since {since:?} is out of range: give {FORMS}")))
}
