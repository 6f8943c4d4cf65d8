//! What a web page in the operator's browser must not do to the admin HTTP
//! server: reach it under a name of its own (DNS rebinding), change anything
//! from another site (cross-site requests), or guess the token piece by piece.
//! Pure checks plus the middleware that applies them to every route.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiState;

/// Whether a request for `host` (the Host header, port included) may be
/// served. IP literals and `localhost` are always fine: DNS rebinding needs a
/// name the attacker controls. Any other name must be configured.
pub fn host_allowed(host: &str, allowed_names: &[String]) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    let name = name.as_str();
    if name.is_empty() {
        return false;
    }
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed_names.iter().any(|allowed| allowed.trim_end_matches('.').eq_ignore_ascii_case(name))
}

/// `host` without its port and brackets, without a final dot.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.trim_end_matches('.')
}

/// Why a state-changing request looks cross-site, if it does: browsers send
/// `Sec-Fetch-Site`, and `Origin` on every POST, PATCH and DELETE.
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = value("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site is {site}"));
        }
    }
    if let Some(origin) = value("origin") {
        let host = value("host").unwrap_or_default();
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if !origin_host.eq_ignore_ascii_case(host) {
            return Some(format!("Origin {origin} is not this server"));
        }
    }
    None
}

/// The token from `Authorization: Bearer <token>`, the scheme in any case.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares digests, so that neither the contents nor the length of the
/// expected token shows in how long a comparison takes.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (given, expected) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    given.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Refuses unknown host names on every route, and cross-site requests that
/// would change something.
pub async fn same_site_only(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !host_allowed(host, &state.allowed_hosts) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!("host {host:?} is not served here: add it to admin.allowed_hosts"),
        );
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(reason) = cross_site(headers) {
            return refuse(StatusCode::FORBIDDEN, format!("cross-site request refused: {reason}"));
        }
    }
    next.run(request).await
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn ip_literals_and_localhost_are_served_other_names_only_when_configured() {
        let none: &[String] = &[];
        for host in
            ["127.0.0.1:8080", "[::1]:8080", "10.1.2.3", "localhost:8080", "app.localhost", "LOCALHOST."]
        {
            assert!(host_allowed(host, none), "{host}");
        }
        for host in ["rebind.attacker.example:8080", "", "localhost.attacker.example", "127.0.0.1.nip.io"] {
            assert!(!host_allowed(host, none), "{host}");
        }
        let configured = ["postbox.internal.example".to_owned()];
        assert!(host_allowed("Postbox.Internal.Example:443", &configured));
    }

    #[test]
    fn cross_site_is_told_by_sec_fetch_site_or_a_foreign_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert_eq!(cross_site(&headers(&[("host", "127.0.0.1:8080")])), None, "curl sends neither");
        assert_eq!(
            cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])),
            None
        );
        assert_eq!(cross_site(&headers(&[("sec-fetch-site", "same-origin")])), None);
        assert!(
            cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])).is_some()
        );
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(
            cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_some(),
            "another port is another app"
        );
    }

    #[test]
    fn bearer_in_any_case_and_tokens_compared_whole() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bEaReR  s3cret-token "));
        assert_eq!(bearer(&headers), Some("s3cret-token"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic czNjcmV0"));
        assert_eq!(bearer(&headers), None);
        assert!(token_matches("s3cret-token", "s3cret-token"));
        assert!(!token_matches("s3cret", "s3cret-token"));
        assert!(!token_matches("", "s3cret-token"));
    }
}
