//! The admin web page at `/`, in a real headless Chromium.

use std::time::Duration;

use serde_json::json;

use crate::support::{app::test_settings, browser::Browser, relay::InProcessRelay, Receiver, Reply, TestApp};

const TOKEN: &str = "page-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_is_debugged_and_redelivered_from_the_web_page() {
    let app = TestApp::new().await;
    app.sql
        .execute("select postbox.register_event_type('order.created', 'An order was placed')", &[])
        .await
        .unwrap();
    let mut receiver = Receiver::start().await;
    // The receiver fails, and its answer tries to inject markup into the page.
    receiver.answer_all(
        Reply::status(500).body(r#"{"error":"database is down"} <img src=x onerror="window.injected=1">"#),
    );
    let settings = test_settings(
        &app.db.url,
        &[("POSTBOX_ADMIN__TOKEN", TOKEN), ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,1h,1h")],
    );
    let relay = InProcessRelay::start(settings).await;
    let base = relay.base.clone();
    let browser = Browser::start().await;

    // Sign in: the token stays in the tab, not in the URL.
    browser.goto(&format!("{base}/")).await;
    browser.fill("#token", "not-the-token").await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_until(
            "document.querySelector('#login .notice.error')?.textContent.includes('wrong bearer token')",
            "a wrong token is refused with the reason",
            Duration::from_secs(10),
        )
        .await;
    browser.fill("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_for("#stat-pending").await;
    assert!(!browser.script("return location.href", json!([])).await.to_string().contains(TOKEN));

    // Create an endpoint from the page; its secret is shown once.
    browser.click("nav a[data-view=endpoints]").await;
    browser.fill("#new-url", &receiver.url("/hooks")).await;
    browser.fill("#new-description", "orders service").await;
    browser.click("#create-endpoint").await;
    browser.wait_for("#secret-once").await;
    assert!(browser.text("#secret-once").await.starts_with("whsec_"));
    assert!(browser.text("#endpoints").await.contains(&receiver.url("/hooks")));
    browser.screenshot("endpoints").await;

    // An order is placed; the receiver answers 500.
    app.emit("order.created", json!({"id": 42, "note": "<script>window.injected=2</script>"})).await;
    app.wait_for_count("select count(*) from postbox.attempts", 1, Duration::from_secs(15)).await;

    // Find it in the deliveries list and open it.
    browser.click("nav a[data-view=deliveries]").await;
    browser.click("#deliveries tr[data-delivery]").await;
    browser.wait_for(".attempt .response-status").await;
    assert_eq!(browser.text(".attempt .response-status").await, "HTTP 500");
    let body = browser.text(".attempt .response-body").await;
    assert!(body.contains("database is down"), "response body shown: {body}");
    assert!(body.contains("<img src=x"), "markup shown as text: {body}");
    assert!(browser.text("#request-body").await.contains("<script>window.injected=2</script>"));
    // The exact bytes that were signed (the receiver got them), then a pretty view.
    let sent = receiver.recv().await;
    assert_eq!(browser.text("#request-body").await, String::from_utf8_lossy(&sent.body), "exactly as signed");
    browser.click("#request-body-view").await;
    assert!(
        browser.text("#request-body").await.contains("\n  \"type\": \"order.created\""),
        "pretty on request"
    );
    browser.click("#request-body-view").await;
    let injected = browser
        .script(
            "return [window.injected, document.querySelectorAll('#main img, #main script').length]",
            json!([]),
        )
        .await;
    assert_eq!(injected, json!([null, 0]), "untrusted text must never become markup");
    assert_eq!(browser.text("#delivery-status").await, "pending");
    let waiting = browser.text("#delivery-waiting").await;
    assert!(waiting.starts_with("waiting: attempt 2 at") && waiting.contains("after HTTP 500"), "{waiting}");
    assert!(!waiting.contains('Z'), "times in the page's own format: {waiting}");
    browser.screenshot("delivery-failed").await;

    // The receiver recovers; redeliver from the page and watch it succeed.
    receiver.answer_all(Reply::status(200).body("thanks"));
    browser.click("#redeliver").await;
    browser
        .wait_until(
            "document.getElementById('delivery-status').textContent === 'succeeded'",
            "the delivery page shows success after redelivery",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(browser.text(".attempt .response-status").await, "HTTP 200", "newest attempt first");
    browser.screenshot("delivery-succeeded").await;

    // The endpoint's health at a glance: one of two attempts succeeded.
    browser.click("nav a[data-view=endpoints]").await;
    browser.wait_for("#endpoints td.health").await;
    assert_eq!(browser.text("#endpoints td.health").await, "50% of 2");
    assert!(browser.text("#endpoints td.last-failure").await.starts_with("HTTP 500"));

    // The overview updates itself; the catalog shows recent volume.
    browser.click("nav a[data-view=overview]").await;
    browser
        .wait_until(
            "document.querySelector('#stat-attempts .value').textContent === '2'",
            "overview counts both attempts",
            Duration::from_secs(10),
        )
        .await;
    browser.screenshot("overview").await;
    app.sql
        .execute(
            "select postbox.describe_event_type('order.created', example => '{\"id\": 42, \"total_cents\": 1250}')",
            &[],
        )
        .await
        .unwrap();
    browser.click("nav a[data-view=event-types]").await;
    browser.wait_for("#event-types").await;
    let row = browser
        .script(
            "return [...document.querySelectorAll('#event-types tbody tr')]
                 .map(tr => [...tr.cells].slice(0, 3).map(td => td.textContent))
                 .find(cells => cells[0] === 'order.created')",
            json!([]),
        )
        .await;
    assert_eq!(row[0], "order.created");
    let described = row[1].as_str().unwrap();
    assert!(
        described.starts_with("An order was placed") && described.contains("\"total_cents\": 1250"),
        "{row}"
    );
    assert_eq!(row[2], "1");
    // Add a type from the page, with an example; a bad example is refused with the reason.
    browser.fill("#type-name", "invoice.paid").await;
    browser.fill("#type-example", "{not json").await;
    browser.click("#new-event-type button[type=submit]").await;
    browser
        .wait_until(
            "document.querySelector('#event-type-message .notice.error')?.textContent.includes('not JSON')",
            "a bad example is refused",
            Duration::from_secs(10),
        )
        .await;
    browser.fill("#type-example", r#"{"invoice": "INV-1"}"#).await;
    browser.fill("#type-description", "An invoice was paid").await;
    browser.click("#new-event-type button[type=submit]").await;
    browser.wait_for("#event-types tr[data-event-type='invoice.paid']").await;
    let added = browser.text("#event-types tr[data-event-type='invoice.paid']").await;
    assert!(added.contains("An invoice was paid") && added.contains("INV-1"), "{added}");
    browser.click("#event-types tr[data-event-type='order.created'] button.archive").await;
    browser
        .wait_until(
            "document.querySelector(\"#event-types tr[data-event-type='order.created'] .badge\")?.textContent === 'archived'",
            "the type is archived",
            Duration::from_secs(10),
        )
        .await;

    browser.close().await;
    relay.stop().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let app = TestApp::new().await;
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
    let base = relay.base.clone();

    for (path, content_type) in
        [("/", "text/html"), ("/assets/app.js", "text/javascript"), ("/assets/app.css", "text/css")]
    {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(header("content-security-policy").contains("script-src 'self'"), "{path}");
        assert!(header("content-security-policy").ends_with("frame-ancestors 'none'"), "no framing: {path}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(
            header("referrer-policy"),
            "no-referrer",
            "a portal link's token never leaves in a Referer"
        );
    }
    // No third-party assets: the page works without internet.
    let html = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(!html.contains("://"), "the page loads nothing from elsewhere");
    relay.stop().await;

    // An app that embeds its tenants' portal names its origin.
    let settings = test_settings(&app.db.url, &[("POSTBOX_ADMIN__FRAME_ANCESTORS", "https://app.example")]);
    let relay = InProcessRelay::start(settings).await;
    let response = reqwest::get(format!("{}/", relay.base)).await.unwrap();
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.ends_with("frame-ancestors https://app.example"), "{policy}");
    relay.stop().await;
}

/// An app links a tenant's users to `/?token=…`: the page takes the token out
/// of the URL and shows that tenant's endpoints, deliveries and attempts, and
/// nothing of another tenant's, of the global endpoints or of the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_opens_its_portal_from_a_link_and_sees_only_its_own() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let receiver = Receiver::start().await;
    for (path, tenant, description) in [
        ("/acme-hooks", Some("acme"), "acme's hooks"),
        ("/globex-hooks", Some("globex"), "globex's private hooks"),
        ("/global-hooks", None, "everyone's hooks"),
    ] {
        app.sql
            .execute(
                "insert into postbox.endpoints (url, event_types, tenant, description, secret)
                 values ($1, '{*}', $2, $3, postbox.generate_secret())",
                &[&receiver.url(path), &tenant, &description],
            )
            .await
            .unwrap();
    }
    for tenant in ["acme", "globex"] {
        app.sql
            .execute("select postbox.emit('order.created', '{\"id\": 1}', tenant => $1)", &[&tenant])
            .await
            .unwrap();
    }
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[("POSTBOX_ADMIN__TOKEN", TOKEN)])).await;
    let succeeded = "select count(*) from postbox.deliveries where status = 'succeeded'";
    app.wait_for_count(succeeded, 4, Duration::from_secs(15)).await;
    let minted = reqwest::Client::new()
        .post(format!("{}/api/v1/tenant-tokens", relay.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(json!({"tenant": "acme"}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let minted: serde_json::Value = serde_json::from_str(&minted).unwrap();
    let token = minted["token"].as_str().unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/?token={token}", relay.base)).await;
    browser.wait_for("#endpoints tr[data-endpoint]").await;
    let url = browser.script("return location.href", json!([])).await;
    assert!(!url.as_str().unwrap().contains(token) && !url.as_str().unwrap().contains("token="), "{url}");
    assert_eq!(
        browser.script("return sessionStorage.getItem('postbox.token')", json!([])).await,
        json!(token)
    );
    let foreign = ["/globex-hooks", "globex's private hooks", "/global-hooks", "everyone's hooks"];
    let shown = page_text(&browser).await;
    assert!(shown.contains(&receiver.url("/acme-hooks")) && shown.contains("acme's hooks"), "{shown}");
    for text in foreign {
        assert!(!shown.contains(text), "the portal shows {text:?}:\n{shown}");
    }
    assert!(browser.text("#scope").await.starts_with("Tenant acme"));
    let overview_hidden =
        browser.script("return document.querySelector('nav a[data-view=overview]').hidden", json!([])).await;
    assert_eq!(overview_hidden, json!(true), "the relay's overview is not the tenant's");
    assert_eq!(browser.script("return document.getElementById('new-tenant')", json!([])).await, json!(null));

    // Its deliveries, and each one's attempts; nobody else's.
    browser.click("nav a[data-view=deliveries]").await;
    browser.wait_for("#deliveries tr[data-delivery]").await;
    let rows = browser
        .script("return document.querySelectorAll('#deliveries tr[data-delivery]').length", json!([]))
        .await;
    assert_eq!(rows, json!(1), "acme's one delivery");
    let shown = page_text(&browser).await;
    for text in foreign {
        assert!(!shown.contains(text), "the deliveries show {text:?}:\n{shown}");
    }
    browser.click("#deliveries tr[data-delivery]").await;
    browser.wait_for(".attempt .response-status").await;
    assert_eq!(browser.text(".attempt .response-status").await, "HTTP 200");

    // The catalog, to read.
    browser.click("nav a[data-view=event-types]").await;
    browser.wait_for("#event-types tr[data-event-type='order.created']").await;
    let writable = browser
        .script("return [document.getElementById('new-event-type'), document.querySelector('#event-types button.archive')]", json!([]))
        .await;
    assert_eq!(writable, json!([null, null]), "no forms for what a tenant may not change");

    // A new endpoint from the portal is the tenant's.
    browser.click("nav a[data-view=endpoints]").await;
    browser.fill("#new-url", &receiver.url("/acme-more")).await;
    browser.click("#create-endpoint").await;
    browser.wait_for("#secret-once").await;
    let tenant: Option<String> = app
        .sql
        .query_one("select tenant from postbox.endpoints where url = $1", &[&receiver.url("/acme-more")])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant.as_deref(), Some("acme"));
    browser.screenshot("tenant-portal").await;

    browser.close().await;
    relay.stop().await;
}

/// An operator who opens the page after an incident sees it: the overview
/// draws the last hour (and day) from the database, not from since it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_an_incident_from_before_the_page_was_opened() {
    let app = TestApp::new().await;
    app.register("order.created").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    // An hour of traffic: successes every minute, and 25 minutes ago a
    // receiver outage whose failed deliveries are still pending.
    app.sql
        .batch_execute(&format!(
            "insert into postbox.outbox (event_type, payload, dispatched_at)
                 select 'order.created', jsonb_build_object('minute', m), now() - make_interval(mins => m)
                 from generate_series(1, 59) m, generate_series(1, 4) n;
             insert into postbox.deliveries (event_id, endpoint_id, status, attempt_count, next_attempt_at,
                                             created_at, updated_at)
                 select o.event_id, '{endpoint}',
                        case when (o.payload->>'minute')::int between 20 and 30 then 'pending' else 'succeeded' end,
                        1, case when (o.payload->>'minute')::int between 20 and 30 then now() + interval '1 hour' end,
                        o.dispatched_at, o.dispatched_at
                 from postbox.outbox o;
             insert into postbox.attempts (delivery_id, attempt_number, started_at, duration_ms, response_status)
                 select d.id, 1, d.created_at, 12, case when d.status = 'pending' then 503 else 200 end
                 from postbox.deliveries d;"
        ))
        .await
        .unwrap();
    let relay = InProcessRelay::start(test_settings(&app.db.url, &[("POSTBOX_ADMIN__TOKEN", TOKEN)])).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", relay.base)).await;
    browser.fill("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_for("#history rect.bar.failed").await;
    let bars = browser
        .script(
            "return [document.querySelectorAll('#history rect.bar.succeeded').length,
                     document.querySelectorAll('#history rect.bar.failed').length]",
            json!([]),
        )
        .await;
    assert_eq!(bars[1], 11, "the eleven minutes of the outage: {bars}");
    assert!(bars[0].as_u64().unwrap() >= 45, "the hour around it: {bars}");
    browser.screenshot("overview-history").await;
    browser.click("#history button[data-window='24h']").await;
    browser
        .wait_until(
            "document.querySelector('#history button.current')?.dataset.window === '24h'",
            "the day view",
            Duration::from_secs(10),
        )
        .await;
    assert!(browser.text("#history .legend").await.contains("15 min per bar"));

    // A customer quotes a webhook-id: the page finds its delivery; a delivery id opens it.
    let (event, delivery): (uuid::Uuid, uuid::Uuid) = app
        .sql
        .query_one("select event_id, id from postbox.deliveries where status = 'pending' limit 1", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    browser.click("nav a[data-view=deliveries]").await;
    browser.fill("#filter-lookup", &event.to_string()).await;
    browser.click("#delivery-filters button[type=submit]").await;
    browser
        .wait_until(
            "document.querySelectorAll('#deliveries tr[data-delivery]').length === 1",
            "the one delivery of that event",
            Duration::from_secs(10),
        )
        .await;
    assert!(browser.script("return location.hash", json!([])).await.to_string().contains(&event.to_string()));
    browser.fill("#filter-lookup", &delivery.to_string()).await;
    browser.click("#delivery-filters button[type=submit]").await;
    browser.wait_for("#delivery-status").await;
    assert_eq!(browser.text("#delivery-status").await, "pending");

    // The outage's deliveries gave up; Recover sends just those again.
    app.sql.batch_execute("update postbox.deliveries set status = 'failed', next_attempt_at = null where status = 'pending'")
        .await
        .unwrap();
    browser.click("nav a[data-view=endpoints]").await;
    browser.wait_for("#endpoints input.since").await;
    browser.fill("#endpoints input.since", "2h").await;
    browser
        .script("[...document.querySelectorAll('#endpoints button')].find(b => b.textContent === 'Recover').click()", json!([]))
        .await;
    browser
        .wait_until(
            "document.querySelector('#endpoint-message')?.textContent.includes('44 failed deliveries queued again')",
            "recover's answer",
            Duration::from_secs(10),
        )
        .await;
    // (The relay then tries them again at once, so their states move on; the
    // answer above is what the page shows.)
    browser.close().await;
    relay.stop().await;
}

async fn page_text(browser: &Browser) -> String {
    let text = browser.script("return document.body.innerText", json!([])).await;
    text.as_str().unwrap_or_default().to_owned()
}
