//! The `postbox` binary as users run it.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::support::TestDb;

fn postbox(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_postbox"));
    command.args(args).env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run postbox")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn migrate_installs_then_reports_up_to_date() {
    let db = TestDb::empty().await;
    let first = postbox(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("applied migrations [1]"), "{}", stdout(&first));
    let second = postbox(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(second.status.success());
    assert!(stdout(&second).contains("up to date"), "{}", stdout(&second));
}

#[test]
fn bad_configuration_stops_with_one_line_naming_the_key() {
    let output = postbox(&["config"], &[("POSTBOX_RELAY__BATCH_SIZE", "lots")]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("relay.batch_size"), "{err}");

    let output = postbox(&["run"], &[("POSTBOX_DELIVERY__TIMOUT", "5s")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("unknown configuration key `delivery.timout`"), "{}", stderr(&output));

    let output = postbox(&["migrate"], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("database.url"), "{}", stderr(&output));
}

#[test]
fn config_prints_the_effective_settings_with_secrets_masked() {
    let env = [
        ("DATABASE_URL", "postgres://app:hunter2@db.internal/app"),
        ("POSTBOX_ADMIN__TOKEN", "s3cr3t-token"),
        ("POSTBOX_RELAY__BATCH_SIZE", "100"),
    ];
    let text = postbox(&["config"], &env);
    assert!(text.status.success());
    let shown = stdout(&text);
    assert!(shown.contains("relay.batch_size = 100"), "{shown}");
    assert!(shown.contains("database.url = postgres://app:***@db.internal/app"), "{shown}");
    assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t-token"), "{shown}");

    let json = postbox(&["config", "--json"], &env);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(value["relay.batch_size"], 100);
    assert_eq!(value["admin.token"], "***");
}

#[tokio::test]
async fn run_exits_zero_on_sigterm() {
    let db = TestDb::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_postbox"))
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env("POSTBOX_ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded wait for the relay to start listening.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = db.connect().await;
    loop {
        let listening: i64 = client
            .query_one(
                "select count(*) from pg_stat_activity where datname = current_database() and application_name = 'postbox-listen' and query ilike 'listen%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if listening > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "postbox run did not start listening within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "postbox run did not exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = child.wait_with_output().unwrap();
    assert!(status.success(), "exit status {status}: {}", stderr(&output));
    assert!(stderr(&output).contains("relay stopped"), "{}", stderr(&output));
}
