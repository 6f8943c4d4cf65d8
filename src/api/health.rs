//! Liveness, readiness, metrics and status.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde_json::json;

use super::{ApiResult, ApiState};
use crate::{
    admin,
    db::{self, schema},
};

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database answers within 2 s and holds the schema this binary needs,
/// and the dispatcher and deliverer loops are making progress.
pub async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    let check = async {
        let client = state
            .pool
            .get()
            .await
            .map_err(|err| format!("cannot connect to {}: {}", state.database, db::explain(&err)))?;
        // A standby answers, but the relay cannot write there: after a
        // failover that has not reached this relay's hosts, say so.
        let read_only: bool = client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|err| {
                format!("cannot ask {} whether it is a standby: {}", state.database, db::explain(&err))
            })?;
        if read_only {
            return Err(format!(
                "{} is read-only (a standby in recovery): waiting for a primary; give the relay every host \
                 with target_session_attrs=read-write so that it finds the new one",
                state.database
            ));
        }
        let installed = schema::installed_version(&**client)
            .await
            .map_err(|err| format!("cannot read the schema version: {}", db::explain(&err)))?;
        if installed < schema::latest_version() {
            return Err(format!(
                "schema version {installed}, {} needed: run postbox migrate",
                schema::latest_version()
            ));
        }
        state.liveness.stalled().map_or(Ok(()), Err)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(2), check)
        .await
        .unwrap_or_else(|_| Err("database did not answer within 2 s".into()));
    match outcome {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason })))
        }
    }
}

/// Prometheus text: this relay's counters, plus backlog gauges when the
/// database answers.
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let backlog = async {
        let client = state.pool.get().await.ok()?;
        admin::status::backlog(&client).await.ok()
    };
    let backlog = tokio::time::timeout(Duration::from_secs(2), backlog).await.ok().flatten();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render(backlog.as_ref()))
}

pub async fn status(
    State(state): State<ApiState>,
    admin: admin::AdminAccess,
) -> ApiResult<Json<admin::status::Status>> {
    let client = state.pool.get().await?;
    Ok(Json(admin::status::status(&client, admin).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// `1h` (per minute, the default) or `24h` (per 15 minutes).
    window: Option<String>,
}

pub async fn history(
    State(state): State<ApiState>,
    admin: admin::AdminAccess,
    super::ApiQuery(query): super::ApiQuery<HistoryQuery>,
) -> ApiResult<Json<admin::status::History>> {
    let client = state.pool.get().await?;
    Ok(Json(admin::status::history(&client, admin, query.window.as_deref().unwrap_or("1h")).await?))
}
