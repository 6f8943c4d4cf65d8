//! Tenant tokens and credentials an operator set: a tenant cannot move them.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{app::test_settings, relay::InProcessRelay, Receiver, TestApp};

const ADMIN: &str = "tenant-credentials-admin-token";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn mint(&self, tenant: &str) -> String {
        let (status, body) =
            self.call(ADMIN, Method::POST, "/tenant-tokens", Some(json!({ "tenant": tenant }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

async fn endpoint(app: &TestApp, url: &str, tenant: &str, headers: Value) -> Uuid {
    app.sql
        .query_one(
            "insert into postbox.endpoints (url, event_types, tenant, headers, secret)
             values ($1, '{*}', $2, $3, postbox.generate_secret()) returning id",
            &[&url, &tenant, &headers],
        )
        .await
        .unwrap()
        .get(0)
}

async fn start(app: &TestApp, extra: &[(&str, &str)]) -> (InProcessRelay, Api) {
    let mut settings = vec![("POSTBOX_ADMIN__TOKEN", ADMIN)];
    settings.extend_from_slice(extra);
    let relay = InProcessRelay::start(test_settings(&app.db.url, &settings)).await;
    let api = Api { base: relay.base.clone(), http: reqwest::Client::new() };
    (relay, api)
}

/// An operator may put credentials on a tenant's endpoint (for a gateway in
/// front of the tenant's receiver); the tenant sees them masked. Pointing the
/// endpoint elsewhere must not take them along unseen.
#[tokio::test]
async fn a_tenant_cannot_point_credentials_it_cannot_see_at_a_url_of_its_choice() {
    let app = TestApp::new().await;
    let gateway = Receiver::start().await;
    let mut own = Receiver::start().await;
    let acme = endpoint(
        &app,
        &gateway.url("/gateway"),
        "acme",
        json!({ "Authorization": "Bearer operator-gateway-credential", "X-Team": "billing" }),
    )
    .await;
    let (relay, api) = start(&app, &[]).await;
    let token = api.mint("acme").await;
    let path = format!("/endpoints/{acme}");
    let (_, shown) = api.call(&token, Method::GET, &path, None).await;
    assert_eq!(shown["headers"]["Authorization"], "***", "masked: {shown}");

    let (status, body) =
        api.call(&token, Method::PATCH, &path, Some(json!({ "url": own.url("/mine") }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("credentials you cannot see (Authorization)"),
        "{body}"
    );

    // With its own headers in the same request, the move is its to make.
    let (status, body) = api
        .call(
            &token,
            Method::PATCH,
            &path,
            Some(json!({ "url": own.url("/mine"), "headers": { "X-Team": "billing" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.call(&token, Method::POST, &format!("{path}/test"), None).await;
    let got = own.recv().await;
    relay.stop().await;
    assert!(got.headers.get("authorization").is_none(), "the operator's credential stayed behind");
    assert_eq!(got.header("x-team"), "billing");
}
