//! What the relay writes to its log: never a secret, a signature or a payload.

use std::time::Duration;

use serde_json::json;

use crate::support::{process::RelayProcess, Receiver, Reply, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_secret_signature_or_payload() {
    let app = TestApp::new().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::status(500).body("receiver-body-marker")]);
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let secret = app.secret(endpoint).await;
    let mut relay = RelayProcess::start(
        &app.db.url,
        &[
            ("RUST_LOG", "debug"),
            ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s"),
            ("POSTBOX_ADMIN__TOKEN", "admin-token-marker"),
        ],
    );
    app.emit("a.b", json!({"card": "payload-marker-4242"})).await;
    let failed = receiver.recv().await;
    let delivered = receiver.recv().await;
    app.wait_for_count("select count(*) from postbox.attempts", 2, Duration::from_secs(10)).await;
    relay.signal(libc::SIGTERM);
    assert!(relay.wait_exit(Duration::from_secs(20)).await.success());

    let log = relay.log_text();
    assert!(log.contains("delivery failed"), "the failure is logged:\n{log}");
    let failure = log.lines().find(|line| line.contains("delivery failed")).unwrap();
    let host = receiver.url("/").trim_start_matches("http://").trim_end_matches('/').to_owned();
    assert!(
        failure.contains(&format!("endpoint.id={endpoint}"))
            && failure.contains(&format!("endpoint.host={host}")),
        "the failure names its endpoint: {failure}"
    );
    let key = secret.trim_start_matches("whsec_");
    for (what, needle) in [
        ("the endpoint secret", key),
        ("the admin token", "admin-token-marker"),
        ("the payload", "payload-marker-4242"),
        ("the response body", "receiver-body-marker"),
        ("a signature", failed.header("webhook-signature").trim_start_matches("v1,")),
        ("a signature", delivered.header("webhook-signature").trim_start_matches("v1,")),
    ] {
        assert!(!log.contains(needle), "the log holds {what}:\n{log}");
    }
}
