//! `/api/v1/tenant-tokens` (admins mint a tenant's portal token) and
//! `/api/v1/access` (what the caller's token may do, for the page).

use axum::{extract::State, http::StatusCode, Json};

use super::{ApiJson, ApiResult, ApiState};
use crate::admin::{
    tenant_tokens::{self, NewTenantToken, TenantToken},
    Access, AdminAccess,
};

pub async fn mint(
    State(state): State<ApiState>,
    admin: AdminAccess,
    ApiJson(new): ApiJson<NewTenantToken>,
) -> ApiResult<(StatusCode, Json<TenantToken>)> {
    let client = state.pool.get().await?;
    Ok((StatusCode::CREATED, Json(tenant_tokens::mint(&client, admin, &new).await?)))
}

pub async fn access(access: Access) -> Json<Access> {
    Json(access)
}
