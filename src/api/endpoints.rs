//! `/api/v1/endpoints`

use axum::{extract::State, http::StatusCode, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiResult, ApiState};
use crate::admin::{
    endpoints::{self, Created, Endpoint, EndpointUpdate, NewEndpoint},
    Access,
};

pub async fn list(State(state): State<ApiState>, access: Access) -> ApiResult<Json<Vec<Endpoint>>> {
    let client = state.pool.get().await?;
    Ok(Json(endpoints::list(&client, &access).await?))
}

pub async fn create(
    State(state): State<ApiState>,
    access: Access,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let client = state.pool.get().await?;
    Ok((StatusCode::CREATED, Json(endpoints::create(&client, &access, &new).await?)))
}

pub async fn show(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Endpoint>> {
    let client = state.pool.get().await?;
    Ok(Json(endpoints::get(&client, &access, id).await?))
}

pub async fn update(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<EndpointUpdate>,
) -> ApiResult<Json<Endpoint>> {
    let client = state.pool.get().await?;
    Ok(Json(endpoints::update(&client, &access, id, &change).await?))
}

pub async fn delete(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    endpoints::delete(&client, &access, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Endpoint>> {
    let client = state.pool.get().await?;
    Ok(Json(endpoints::set_enabled(&client, &access, id, true).await?))
}

pub async fn disable(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Endpoint>> {
    let client = state.pool.get().await?;
    Ok(Json(endpoints::set_enabled(&client, &access, id, false).await?))
}

pub async fn rotate_secret(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Value>> {
    let client = state.pool.get().await?;
    let secret = endpoints::rotate_secret(&client, &access, id).await?;
    Ok(Json(json!({ "secret": secret, "previous_secret_valid_for": "24h" })))
}

pub async fn send_test_event(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let client = state.pool.get().await?;
    let event_id = endpoints::ping(&client, &access, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": event_id }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The body of replay and recover.
pub struct Since {
    /// A duration back from now (`24h`) or a time.
    since: String,
}

pub async fn recover(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(recover): ApiJson<Since>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let client = state.pool.get().await?;
    let recovered = endpoints::recover(&client, &access, id, &recover.since).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "recovered": recovered }))))
}

pub async fn replay(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(replay): ApiJson<Since>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let client = state.pool.get().await?;
    let replayed = endpoints::replay(&client, &access, id, &replay.since).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))))
}
