//! `/api/v1/deliveries`

use axum::{extract::State, http::StatusCode, Json};
use uuid::Uuid;

use super::{ApiPath, ApiQuery, ApiResult, ApiState};
use crate::admin::{
    deliveries::{self, Delivery, DeliveryDetail, Filter},
    Access,
};

pub async fn list(
    State(state): State<ApiState>,
    access: Access,
    ApiQuery(filter): ApiQuery<Filter>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let client = state.pool.get().await?;
    Ok(Json(deliveries::list(&client, &access, &filter).await?))
}

pub async fn show(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DeliveryDetail>> {
    let client = state.pool.get().await?;
    Ok(Json(deliveries::get(&client, &access, id).await?))
}

pub async fn redeliver(
    State(state): State<ApiState>,
    access: Access,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let client = state.pool.get().await?;
    deliveries::redeliver(&client, &access, id).await?;
    Ok(StatusCode::ACCEPTED)
}
