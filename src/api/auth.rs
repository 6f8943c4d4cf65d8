//! Who a request under `/api/v1` is from: the middleware turns its bearer
//! token into an [`Access`] in the request's extensions, and handlers take it
//! (or [`AdminAccess`]) as an extractor, to hand to the admin layer. A handler
//! on a route outside the middleware finds none and answers 500: it fails
//! closed.

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{request::Parts, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{guard, ApiError, ApiState};
use crate::admin::{
    tenant_tokens::{self, Check},
    Access, AdminAccess,
};

/// `/api/v1` needs `Authorization: Bearer <admin.token>` or a tenant token;
/// without an admin token configured it serves admins on a loopback address only.
pub async fn require_token(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(access) => {
            request.extensions_mut().insert(access);
            next.run(request).await
        }
        Err(refused) => refused.into_response(),
    }
}

async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Access, ApiError> {
    let given = guard::bearer(headers);
    if let (Some(expected), Some(given)) = (&state.token, given) {
        if guard::token_matches(given, expected.expose()) {
            return Ok(Access::Admin);
        }
    }
    if let Some(given) = given.filter(|given| tenant_tokens::looks_like_one(given)) {
        let client = state.pool.get().await?;
        return match tenant_tokens::check(&client, given).await? {
            Check::Valid(access) => Ok(access),
            Check::Expired { expires_at } => Err(ApiError::Unauthorized(format!(
                "the tenant token expired at {expires_at}: ask the app for a new link"
            ))),
            Check::Unknown => Err(ApiError::Unauthorized("unknown tenant token".into())),
        };
    }
    match &state.token {
        Some(_) => Err(ApiError::Unauthorized("missing or wrong bearer token".into())),
        None if !state.listen.ip().is_loopback() => Err(ApiError::Unauthorized(
            "admin.token is not set: /api/v1 is served without a token only on a loopback address".into(),
        )),
        None => Ok(Access::Admin),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("a route outside require_token asked who is calling".into()))
    }
}

/// For routes only admins may use: a tenant token gets 403, saying why.
impl<S: Send + Sync> FromRequestParts<S> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Access::from_request_parts(parts, state).await?.require_admin()?)
    }
}
