//! `/api/v1/event-types`

use axum::{extract::State, http::StatusCode, Json};

use super::{ApiJson, ApiPath, ApiResult, ApiState};
use crate::admin::{
    event_types::{self, Description, EventType, NewEventType},
    Access, AdminAccess,
};

pub async fn list(State(state): State<ApiState>, access: Access) -> ApiResult<Json<Vec<EventType>>> {
    let client = state.pool.get().await?;
    Ok(Json(event_types::list(&client, &access).await?))
}

pub async fn register(
    State(state): State<ApiState>,
    admin: AdminAccess,
    ApiJson(new): ApiJson<NewEventType>,
) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    event_types::register(&client, admin, &new).await?;
    Ok(StatusCode::CREATED)
}

pub async fn archive(
    State(state): State<ApiState>,
    admin: AdminAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<EventType>> {
    let client = state.pool.get().await?;
    Ok(Json(event_types::set_archived(&client, admin, &name, true).await?))
}

pub async fn unarchive(
    State(state): State<ApiState>,
    admin: AdminAccess,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<EventType>> {
    let client = state.pool.get().await?;
    Ok(Json(event_types::set_archived(&client, admin, &name, false).await?))
}

pub async fn describe(
    State(state): State<ApiState>,
    admin: AdminAccess,
    ApiPath(name): ApiPath<String>,
    ApiJson(change): ApiJson<Description>,
) -> ApiResult<Json<EventType>> {
    let client = state.pool.get().await?;
    Ok(Json(event_types::describe(&client, admin, &name, &change).await?))
}
