//! The admin HTTP server of `postbox run`: health, readiness and metrics for
//! operators' tooling, and a JSON API under `/api/v1` behind a bearer token
//! (the admin token, or a tenant token scoped to one tenant).

mod auth;
mod deliveries;
mod endpoints;
mod event_types;
pub mod guard;
mod health;
mod tenant_tokens;
mod web;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{
        rejection::JsonRejection, rejection::PathRejection, rejection::QueryRejection, FromRequest,
        FromRequestParts,
    },
    http::{header, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{admin, config::Secret, metrics::Metrics, relay::supervisor::Liveness};

#[derive(Clone)]
pub struct ApiState {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// The bearer token for `/api/v1`, if configured.
    pub token: Option<Secret>,
    /// The address actually bound: without a token, only loopback serves the API.
    pub listen: SocketAddr,
    /// Host names served besides IP literals and localhost (`admin.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// The relay loops' heartbeats, for `/readyz`.
    pub liveness: Arc<Liveness>,
    /// Where the database is (host:port/database as user), for `/readyz`.
    pub database: String,
    /// Origins that may embed the page in a frame (`admin.frame_ancestors`).
    pub frame_ancestors: Vec<String>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/endpoints", get(endpoints::list).post(endpoints::create))
        .route("/endpoints/{id}", get(endpoints::show).patch(endpoints::update).delete(endpoints::delete))
        .route("/endpoints/{id}/enable", post(endpoints::enable))
        .route("/endpoints/{id}/disable", post(endpoints::disable))
        .route("/endpoints/{id}/rotate-secret", post(endpoints::rotate_secret))
        .route("/endpoints/{id}/test", post(endpoints::send_test_event))
        .route("/endpoints/{id}/replay", post(endpoints::replay))
        .route("/endpoints/{id}/recover", post(endpoints::recover))
        .route("/event-types", get(event_types::list).post(event_types::register))
        .route("/event-types/{name}", patch(event_types::describe))
        .route("/event-types/{name}/archive", post(event_types::archive))
        .route("/event-types/{name}/unarchive", post(event_types::unarchive))
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{id}", get(deliveries::show))
        .route("/deliveries/{id}/redeliver", post(deliveries::redeliver))
        .route("/status", get(health::status))
        .route("/history", get(health::history))
        .route("/tenant-tokens", post(tenant_tokens::mint))
        .route("/access", get(tenant_tokens::access))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .merge(web::routes(&state.frame_ancestors))
        .layer(middleware::from_fn_with_state(state.clone(), guard::same_site_only))
        .with_state(state)
}

/// The OpenAPI document for `/api/v1`, kept true by a test that calls every route in it.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// The one place that turns errors into HTTP answers. 4xx carry a message for
/// the caller; 5xx are logged with their cause and answered generically.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl From<admin::Error> for ApiError {
    fn from(err: admin::Error) -> Self {
        match err {
            admin::Error::NotFound(message) => ApiError::NotFound(message),
            admin::Error::Invalid(message) => ApiError::BadRequest(message),
            admin::Error::Conflict(message) => ApiError::Conflict(message),
            admin::Error::Forbidden(message) => ApiError::Forbidden(message),
            admin::Error::Db(err) => ApiError::Internal(err.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(format!("database unavailable: {err}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "admin request failed");
                (StatusCode::SERVICE_UNAVAILABLE, "database unavailable".to_owned())
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "admin request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the relay's log".to_owned())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Path` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

type ApiResult<T> = Result<T, ApiError>;
