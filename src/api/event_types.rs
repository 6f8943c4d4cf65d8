//! `/api/v1/event-types`

use axum::{extract::State, http::StatusCode, Json};

use super::{ApiJson, ApiResult, ApiState};
use crate::admin::event_types::{self, EventType, NewEventType};

pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<EventType>>> {
    let client = state.pool.get().await?;
    Ok(Json(event_types::list(&client).await?))
}

pub async fn register(
    State(state): State<ApiState>,
    ApiJson(new): ApiJson<NewEventType>,
) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    event_types::register(&client, &new).await?;
    Ok(StatusCode::CREATED)
}
