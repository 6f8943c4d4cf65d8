//! The admin web page at `/`: static assets embedded in the binary. The page
//! fetches everything it shows from `/api/v1`, so the token guards the data,
//! not the page.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// Scripts and styles from this origin only: payloads and response bodies
/// are untrusted, and a strict policy backs up the page's own escaping.
/// `frame-ancestors` comes last, from [`content_security_policy`].
macro_rules! page_policy {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         connect-src 'self'; img-src 'self'; form-action 'none'; base-uri 'none'"
    };
}
const CONTENT_SECURITY_POLICY: &str = page_policy!();
/// The policy when no site may frame the page: the default, and the fallback.
const FRAMING_FORBIDDEN: &str = concat!(page_policy!(), "; frame-ancestors 'none'");

/// The page's policy: no site may frame it (clickjacking) unless
/// `admin.frame_ancestors` names it, as an app embedding its tenant portal does.
/// The origins were checked when the configuration was read (scheme, host and
/// port only), so nothing else can reach the header.
pub fn content_security_policy(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() { "'none'".to_owned() } else { frame_ancestors.join(" ") };
    format!("{CONTENT_SECURITY_POLICY}; frame-ancestors {ancestors}")
}

pub fn routes<S: Clone + Send + Sync + 'static>(frame_ancestors: &[String]) -> Router<S> {
    let policy = HeaderValue::from_str(&content_security_policy(frame_ancestors))
        // Unreachable with checked origins; if it were reached, framing stays forbidden.
        .unwrap_or_else(|_| HeaderValue::from_static(FRAMING_FORBIDDEN));
    let serve = move |content_type: &'static str, body: &'static str| {
        let policy = policy.clone();
        move || async move { asset(content_type, body, policy) }
    };
    Router::new()
        .route("/", get(serve("text/html; charset=utf-8", INDEX_HTML)))
        .route("/assets/app.js", get(serve("text/javascript; charset=utf-8", APP_JS)))
        .route("/assets/app.css", get(serve("text/css; charset=utf-8", APP_CSS)))
}

fn asset(content_type: &'static str, body: &'static str, policy: HeaderValue) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            // The page is opened as /?token=… from a tenant's app: no
            // Referer may carry that URL anywhere.
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_forbidden_unless_origins_are_configured() {
        assert!(content_security_policy(&[]).ends_with("frame-ancestors 'none'"));
        assert_eq!(content_security_policy(&[]), FRAMING_FORBIDDEN);
        let allowed = ["https://app.example".to_owned(), "http://localhost:3000".to_owned()];
        assert!(content_security_policy(&allowed)
            .ends_with("frame-ancestors https://app.example http://localhost:3000"));
    }
}
