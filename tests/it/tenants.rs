//! Tenant tokens: a portal that sees and manages one tenant's endpoints and
//! deliveries, and nothing of any other tenant's, nor of the global endpoints.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{app::test_settings, process::RelayProcess, relay::InProcessRelay, Receiver, TestApp};

const ADMIN_TOKEN: &str = "tenant-test-admin-token";

/// A relay in this process and an HTTP client for its API.
struct Api {
    base: String,
    http: reqwest::Client,
    relay: InProcessRelay,
}

impl Api {
    async fn start(database_url: &str, overrides: &[(&str, &str)]) -> Self {
        let relay = InProcessRelay::start(test_settings(database_url, overrides)).await;
        Self { base: relay.base.clone(), http: reqwest::Client::new(), relay }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A token for `tenant`, minted with `admin` (None: loopback without admin.token).
    async fn mint(&self, admin: Option<&str>, tenant: &str) -> String {
        let (status, minted) =
            self.call(admin, Method::POST, "/tenant-tokens", Some(json!({ "tenant": tenant }))).await;
        assert_eq!(status, StatusCode::CREATED, "{minted}");
        minted["token"].as_str().expect("a token").to_owned()
    }

    async fn stop(self) {
        self.relay.stop().await;
    }
}

/// Two tenants and a global endpoint, each with delivered events.
struct Tenants {
    acme_endpoint: Uuid,
    globex_endpoint: Uuid,
    global_endpoint: Uuid,
    /// acme's events at acme's endpoint.
    acme_deliveries: Vec<Uuid>,
    /// globex's at globex's endpoint.
    globex_delivery: Uuid,
    /// acme's event at the global endpoint: not acme's to see.
    global_delivery: Uuid,
}

/// Text that only globex's and the global endpoint's data hold.
const FOREIGN_MARKERS: [&str; 4] =
    ["/globex-hooks", "globex's private hooks", "/global-hooks", "everyone's hooks"];

async fn two_tenants(app: &TestApp, receiver: &Receiver) -> Tenants {
    app.register("order.created").await;
    let subscribe = |path: &str, tenant: Option<&str>, description: &str| {
        let url = receiver.url(path);
        let description = description.to_owned();
        let tenant = tenant.map(str::to_owned);
        async move {
            let row = app
                .sql
                .query_one(
                    "insert into postbox.endpoints (url, event_types, tenant, description, secret)
                     values ($1, '{*}', $2, $3, postbox.generate_secret()) returning id",
                    &[&url, &tenant, &description],
                )
                .await
                .unwrap();
            row.get::<_, Uuid>(0)
        }
    };
    let acme_endpoint = subscribe("/acme-hooks", Some("acme"), "acme's hooks").await;
    let globex_endpoint = subscribe("/globex-hooks", Some("globex"), "globex's private hooks").await;
    let global_endpoint = subscribe("/global-hooks", None, "everyone's hooks").await;
    for (tenant, n) in [("acme", 1), ("acme", 2), ("globex", 3)] {
        app.sql
            .execute(
                "select postbox.emit('order.created', jsonb_build_object('n', $1::int), tenant => $2)",
                &[&n, &tenant],
            )
            .await
            .unwrap();
    }
    app.dispatch().await;
    app.deliver().await;
    let deliveries = |endpoint: Uuid| async move {
        app.sql
            .query(
                "select id from postbox.deliveries where endpoint_id = $1 order by created_at, id",
                &[&endpoint],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Uuid>(0))
            .collect::<Vec<_>>()
    };
    let acme_deliveries = deliveries(acme_endpoint).await;
    assert_eq!(acme_deliveries.len(), 2);
    let global_delivery = deliveries(global_endpoint).await[0];
    let globex_delivery = deliveries(globex_endpoint).await[0];
    assert_eq!(
        app.count("select count(*) from postbox.deliveries where status <> 'succeeded'").await,
        0,
        "every delivery done before the test looks"
    );
    Tenants {
        acme_endpoint,
        globex_endpoint,
        global_endpoint,
        acme_deliveries,
        globex_delivery,
        global_delivery,
    }
}

fn assert_no_foreign_data(what: &str, body: &Value) {
    let text = body.to_string();
    for marker in FOREIGN_MARKERS {
        assert!(
            !text.contains(marker),
            "{what} shows another tenant's or a global endpoint ({marker}): {text}"
        );
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|item| item[key].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_tenant_token_lists_shows_and_manages_only_its_tenants_endpoints_and_deliveries() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    let t = two_tenants(&app, &receiver).await;
    let api = Api::start(&app.db.url, &[]).await;
    let token = api.mint(None, "acme").await;
    assert!(token.starts_with("pbt_"), "{token}");
    let acme = Some(token.as_str());

    let (status, access) = api.call(acme, Method::GET, "/access", None).await;
    assert_eq!(
        (status, access["scope"].clone(), access["tenant"].clone()),
        (StatusCode::OK, json!("tenant"), json!("acme"))
    );
    assert_eq!(api.call(None, Method::GET, "/access", None).await.1, json!({"scope": "admin"}));

    // Listings hold acme's only: not globex's, not the global endpoint.
    let (status, endpoints) = api.call(acme, Method::GET, "/endpoints", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&endpoints, "id"), [t.acme_endpoint.to_string()]);
    let (_, deliveries) = api.call(acme, Method::GET, "/deliveries", None).await;
    let mut listed = ids(&deliveries, "id");
    listed.sort();
    let mut expected: Vec<String> = t.acme_deliveries.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_no_foreign_data("the delivery list", &deliveries);
    for filter in [
        format!("endpoint_id={}", t.globex_endpoint),
        format!("endpoint_id={}", t.global_endpoint),
        "tenant=globex".to_owned(),
        format!("before={}", t.globex_delivery),
        format!(
            "event_id={}",
            app.sql
                .query_one("select event_id from postbox.deliveries where id = $1", &[&t.globex_delivery])
                .await
                .unwrap()
                .get::<_, Uuid>(0)
        ),
    ] {
        let (status, found) = api.call(acme, Method::GET, &format!("/deliveries?{filter}"), None).await;
        assert_eq!((status, found), (StatusCode::OK, json!([])), "{filter}");
    }
    // The catalog is readable; its volume counts acme's deliveries only (2, not 5).
    let (status, types) = api.call(acme, Method::GET, "/event-types", None).await;
    assert_eq!(status, StatusCode::OK);
    let order = types.as_array().unwrap().iter().find(|t| t["name"] == "order.created").unwrap();
    assert_eq!(order["deliveries_24h"], 2, "{order}");

    // Its own delivery opens with the attempts.
    let (status, detail) =
        api.call(acme, Method::GET, &format!("/deliveries/{}", t.acme_deliveries[0]), None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1);

    // A new endpoint is acme's, given or not; another tenant, or none, is refused.
    let url = receiver.url("/acme-new");
    let (status, created) = api.call(acme, Method::POST, "/endpoints", Some(json!({"url": url}))).await;
    assert_eq!((status, created["tenant"].clone()), (StatusCode::CREATED, json!("acme")), "{created}");
    let (status, _) =
        api.call(acme, Method::POST, "/endpoints", Some(json!({"url": url, "tenant": "acme"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) =
        api.call(acme, Method::POST, "/endpoints", Some(json!({"url": url, "tenant": "globex"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["error"].as_str().unwrap().contains("tenant-scoped"), "{refused}");

    let own = format!("/endpoints/{}", t.acme_endpoint);
    for change in [json!({"tenant": null}), json!({"tenant": "globex"})] {
        let (status, refused) = api.call(acme, Method::PATCH, &own, Some(change.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{change}: {refused}");
    }
    let (status, changed) =
        api.call(acme, Method::PATCH, &own, Some(json!({"description": "acme's new hooks"}))).await;
    assert_eq!((status, changed["description"].clone()), (StatusCode::OK, json!("acme's new hooks")));
    let (_, disabled) = api.call(acme, Method::POST, &format!("{own}/disable"), None).await;
    assert_eq!(disabled["disabled_reason"], "disabled from the tenant portal");
    let (_, enabled) = api.call(acme, Method::POST, &format!("{own}/enable"), None).await;
    assert_eq!(enabled["enabled"], true);
    let (status, _) =
        api.call(acme, Method::POST, &format!("{own}/replay"), Some(json!({"since": "1h"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    api.stop().await;
}

/// Every route of the OpenAPI document, called with acme's token on globex's
/// and the global endpoint's ids: each answers exactly as for a missing id,
/// or 403 where only admins may go, and nothing of theirs changes.
#[tokio::test]
async fn every_route_keeps_a_tenant_token_out_of_other_tenants_and_global_endpoints() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    let t = two_tenants(&app, &receiver).await;
    let api = Api::start(
        &app.db.url,
        &[("POSTBOX_RELAY__WAKEUP", "poll"), ("POSTBOX_RELAY__POLL_INTERVAL", "60s")],
    )
    .await;
    let token = api.mint(None, "acme").await;
    let acme = Some(token.as_str());
    let snapshot = || async {
        app.sql
            .query(
                "select e.id::text || e.url || coalesce(e.description, '') || e.enabled || e.secret
                        || coalesce(string_agg(d.id::text || d.status || d.attempt_count || d.updated_at, ',' order by d.id), '')
                 from postbox.endpoints e left join postbox.deliveries d on d.endpoint_id = e.id
                 where e.tenant is distinct from 'acme' group by e.id order by e.id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let before = snapshot().await;

    let document: Value = serde_json::from_str(postbox::api::OPENAPI).unwrap();
    let admin_only = [
        "POST /event-types",
        "PATCH /event-types/{name}",
        "POST /event-types/{name}/archive",
        "POST /event-types/{name}/unarchive",
        "GET /status",
        "GET /history",
        "POST /tenant-tokens",
    ];
    let readable =
        ["GET /endpoints", "GET /deliveries", "GET /event-types", "GET /access", "GET /openapi.json"];
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let route = format!("{} {path}", method.to_uppercase());
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let documented = |status: StatusCode| {
                operation["responses"].as_object().unwrap().contains_key(status.as_str())
            };
            // A body that would be accepted, so that only the scope refuses.
            let body = match route.as_str() {
                "POST /endpoints" => Some(json!({"url": receiver.url("/x"), "tenant": "globex"})),
                "PATCH /endpoints/{id}" => Some(json!({"description": "hijacked"})),
                "POST /endpoints/{id}/replay" | "POST /endpoints/{id}/recover" => {
                    Some(json!({"since": "1h"}))
                }
                "POST /event-types" => Some(json!({"name": "hijack.ed"})),
                "PATCH /event-types/{name}" => Some(json!({"description": "hijacked"})),
                "POST /tenant-tokens" => Some(json!({"tenant": "globex"})),
                _ => operation.get("requestBody").map(|_| json!({})),
            };
            if path.contains("{id}") {
                let foreign = if path.starts_with("/endpoints/") {
                    [t.globex_endpoint, t.global_endpoint]
                } else if path.starts_with("/deliveries/") {
                    [t.globex_delivery, t.global_delivery]
                } else {
                    panic!("{route}: a new route with an id; say which ids it takes here");
                };
                let missing = Uuid::new_v4();
                let (status, answer) = api
                    .call(
                        acme,
                        http_method.clone(),
                        &path.replace("{id}", &missing.to_string()),
                        body.clone(),
                    )
                    .await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{route} with a missing id: {answer}");
                let as_missing = answer["error"].as_str().unwrap().replace(&missing.to_string(), "ID");
                for id in foreign {
                    let (status, answer) = api
                        .call(acme, http_method.clone(), &path.replace("{id}", &id.to_string()), body.clone())
                        .await;
                    assert_eq!(status, StatusCode::NOT_FOUND, "{route} on {id}: {answer}");
                    assert_eq!(
                        answer["error"].as_str().unwrap().replace(&id.to_string(), "ID"),
                        as_missing,
                        "{route}"
                    );
                    assert!(documented(status), "{route} answered {status}, undocumented");
                }
            } else {
                let concrete = path.replace("{name}", "order.created");
                let (status, answer) = api.call(acme, http_method, &concrete, body).await;
                if admin_only.contains(&route.as_str()) || route == "POST /endpoints" {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{route}: {answer}");
                    assert!(answer["error"].as_str().unwrap().contains("tenant-scoped"), "{route}: {answer}");
                } else if readable.contains(&route.as_str()) {
                    assert_eq!(status, StatusCode::OK, "{route}: {answer}");
                    assert_no_foreign_data(&route, &answer);
                } else {
                    panic!("{route}: a new route; say what a tenant token may do with it here");
                }
                assert!(documented(status), "{route} answered {status}, undocumented");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations checked");
    assert_eq!(snapshot().await, before, "nothing of globex's or the global endpoint's changed");
    assert_eq!(app.count("select count(*) from postbox.outbox where event_type = 'postbox.ping'").await, 0);
    assert_eq!(app.count("select count(*) from postbox.event_types where name = 'hijack.ed'").await, 0);
    assert_eq!(
        app.count("select count(*) from postbox.tenant_tokens").await,
        1,
        "no token minted by a token"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_tenant_token_cannot_mint_tokens_and_bad_requests_say_why() {
    let app = TestApp::new().await;
    let api = Api::start(&app.db.url, &[("POSTBOX_ADMIN__TOKEN", ADMIN_TOKEN)]).await;
    let admin = Some(ADMIN_TOKEN);
    let (status, minted) = api
        .call(admin, Method::POST, "/tenant-tokens", Some(json!({"tenant": "acme", "expires_in": "2h"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();
    assert_eq!(minted["tenant"], "acme");
    let seconds: f64 = app
        .sql
        .query_one(
            "select extract(epoch from $1::text::timestamptz - now())::float8",
            &[&minted["expires_at"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!((7100.0..=7200.0).contains(&seconds), "expires in 2h: {seconds}");

    // Only the digest is stored.
    let stored: String = app
        .sql
        .query_one("select string_agg(t::text, ',') from postbox.tenant_tokens t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains(token.trim_start_matches("pbt_")), "{stored}");
    assert_eq!(
        app.count(&format!(
            "select count(*) from postbox.tenant_tokens where token_sha256 = sha256('{token}'::bytea)"
        ))
        .await,
        1
    );

    // The token works beside the admin token, but mints nothing.
    assert_eq!(api.call(Some(&token), Method::GET, "/endpoints", None).await.0, StatusCode::OK);
    let (status, refused) =
        api.call(Some(&token), Method::POST, "/tenant-tokens", Some(json!({"tenant": "acme"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["error"].as_str().unwrap().contains("tenant-scoped"), "{refused}");
    let (status, _) = api.call(None, Method::POST, "/tenant-tokens", Some(json!({"tenant": "acme"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, default) = api.call(admin, Method::POST, "/tenant-tokens", Some(json!({"tenant": "acme"}))).await;
    let default_expiry: f64 = app
        .sql
        .query_one(
            "select extract(epoch from $1::text::timestamptz - now())::float8",
            &[&default["expires_at"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!((3500.0..=3600.0).contains(&default_expiry), "an hour by default: {default_expiry}");
    for (body, expected) in [
        (json!({"tenant": ""}), "tenant must not be empty"),
        (json!({"tenant": "  "}), "tenant must not be empty"),
        (json!({"tenant": "acme", "expires_in": "soon"}), "expires_in"),
        (json!({"tenant": "acme", "expires_in": "31d"}), "at most 30d"),
        (json!({"tenant": "acme", "expires_in": "0s"}), "more than 0s"),
        (json!({"tenant": "acme", "scope": "all"}), "unknown field"),
        (json!({}), "missing field"),
    ] {
        let (status, answer) = api.call(admin, Method::POST, "/tenant-tokens", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(expected), "{body}: {answer}");
    }
    api.stop().await;
}

#[tokio::test]
async fn an_expired_tenant_token_is_refused_with_401_saying_so_and_deleted_later() {
    let app = TestApp::new().await;
    let api = Api::start(&app.db.url, &[]).await;
    let token = api.mint(None, "acme").await;
    assert_eq!(api.call(Some(&token), Method::GET, "/endpoints", None).await.0, StatusCode::OK);
    app.sql
        .execute(
            "update postbox.tenant_tokens set created_at = now() - interval '2 hours',
                                              expires_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    let (status, refused) = api.call(Some(&token), Method::GET, "/endpoints", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(refused["error"].as_str().unwrap().contains("tenant token expired at"), "{refused}");
    // Even where no admin token is needed (loopback without one), a tenant
    // token that fails is refused, never taken as an admin.
    let (status, refused) = api.call(Some("pbt_not-a-token"), Method::GET, "/endpoints", None).await;
    assert_eq!((status, refused["error"].clone()), (StatusCode::UNAUTHORIZED, json!("unknown tenant token")));

    // A day after expiry the retention round deletes it.
    postbox::relay::retention::round(&app.sql, Duration::ZERO, &CancellationToken::new()).await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.tenant_tokens").await, 1, "kept for a day");
    app.sql
        .execute(
            "update postbox.tenant_tokens set created_at = now() - interval '3 days',
                                              expires_at = now() - interval '25 hours'",
            &[],
        )
        .await
        .unwrap();
    postbox::relay::retention::round(&app.sql, Duration::ZERO, &CancellationToken::new()).await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.tenant_tokens").await, 0);
    api.stop().await;
}

#[tokio::test]
async fn postbox_tenants_token_prints_a_token_that_sees_that_tenant() {
    let app = TestApp::new().await;
    let receiver = Receiver::start().await;
    let t = two_tenants(&app, &receiver).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_postbox"))
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run postbox")
    };
    let text = run(&["tenants", "token", "acme", "--expires", "2h"]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let stdout = String::from_utf8(text.stdout).unwrap();
    let mut lines = stdout.lines();
    let token = lines.next().unwrap().to_owned();
    assert!(token.starts_with("pbt_"), "{stdout}");
    assert!(lines.next().unwrap().contains("expires at"), "{stdout}");

    let json = run(&["--json", "tenants", "token", "globex"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let minted: BTreeMap<String, String> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(minted.keys().collect::<Vec<_>>(), ["expires_at", "tenant", "token"]);
    assert_eq!(minted["tenant"], "globex");

    let api = Api::start(&app.db.url, &[]).await;
    let (_, endpoints) = api.call(Some(&token), Method::GET, "/endpoints", None).await;
    assert_eq!(ids(&endpoints, "id"), [t.acme_endpoint.to_string()]);
    let (_, endpoints) = api.call(Some(&minted["token"]), Method::GET, "/endpoints", None).await;
    assert_eq!(ids(&endpoints, "id"), [t.globex_endpoint.to_string()]);
    api.stop().await;

    for (args, expected) in [
        (&["tenants", "token", "acme", "--expires", "0s"][..], "expires_in"),
        (&["tenants", "token", "acme", "--expires", "60d"][..], "at most 30d"),
        (&["tenants", "token", ""][..], "tenant must not be empty"),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The relay logs no tenant token: not when it is used, refused, or opened
/// in the page's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_tokens_never_reach_the_relays_log() {
    let app = TestApp::new().await;
    let mut relay =
        RelayProcess::start(&app.db.url, &[("RUST_LOG", "debug"), ("POSTBOX_ADMIN__TOKEN", ADMIN_TOKEN)]);
    let mut address = None;
    crate::support::eventually(Duration::from_secs(20), "the relay's admin address in its log", || {
        address = relay
            .log_text()
            .lines()
            .find(|line| line.contains("admin HTTP listening"))
            .and_then(|line| line.split("address=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned());
        std::future::ready(address.is_some())
    })
    .await;
    let base = format!("http://{}", address.unwrap());
    let http = reqwest::Client::new();
    let minted = http
        .post(format!("{base}/api/v1/tenant-tokens"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(json!({"tenant": "acme"}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let minted: Value = serde_json::from_str(&minted).unwrap();
    let token = minted["token"].as_str().expect("minted").to_owned();
    let used = http.get(format!("{base}/api/v1/endpoints")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(used.status(), StatusCode::OK);
    let page = http.get(format!("{base}/?token={token}")).send().await.unwrap();
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    app.sql.execute("update postbox.tenant_tokens set created_at = now() - interval '2h', expires_at = now() - interval '1h'", &[]).await.unwrap();
    let expired = http.get(format!("{base}/api/v1/endpoints")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    relay.signal(libc::SIGTERM);
    assert!(relay.wait_exit(Duration::from_secs(20)).await.success());
    let log = relay.log_text();
    assert!(log.contains("relay stopped"), "{log}");
    assert!(!log.contains(token.trim_start_matches("pbt_")), "the log holds a tenant token:\n{log}");
}
