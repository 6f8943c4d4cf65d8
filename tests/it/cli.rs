//! The `postbox` binary as users run it.

use std::{
    process::{Child, Command, Output, Stdio},
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

/// Runs `postbox ARGS` with stdout a pipe whose read end is closed before it starts.
fn postbox_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`; O_CLOEXEC keeps
    // other tests' children from inheriting the read end.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2 failed");
    // SAFETY: both descriptors are open and owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let mut command = Command::new(env!("CARGO_BIN_EXE_postbox"));
    command.args(args).env_remove("DATABASE_URL").env("RUST_LOG", "warn").stdout(write);
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
    assert!(
        stdout(&first).contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]"),
        "{}",
        stdout(&first)
    );
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

    for (url, masked) in [
        ("postgres://app@db.internal/app?password=hunter2", "postgres://app@db.internal/app?password=***"),
        ("host=db.internal user=app password = 'hun ter2'", "host=db.internal user=app password = ***"),
    ] {
        let shown = stdout(&postbox(&["config"], &[("DATABASE_URL", url)]));
        assert!(shown.contains(&format!("database.url = {masked}\n")), "{shown}");
    }
}

#[tokio::test]
async fn commands_end_quietly_when_stdout_is_closed() {
    let db = TestDb::new().await;
    for args in [&["config"][..], &["config", "--json"], &["status"], &["--help"]] {
        let output = postbox_into_closed_pipe(args, &[("DATABASE_URL", &db.url)]);
        let err = stderr(&output);
        assert!(err.trim().is_empty(), "postbox {args:?} wrote to stderr: {err}");
        assert!(matches!(output.status.code(), Some(0 | 141)), "postbox {args:?}: {}", output.status);
    }
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
    wait_until_listening(&db, &mut child).await;
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

#[tokio::test]
async fn run_stops_on_sigterm_when_its_stdout_and_stderr_are_closed() {
    // Closed before the relay logs anything (`postbox run 2>&1 | true`), and
    // after it has logged its start (`postbox run 2>&1 | head -3`).
    for close_at_start in [true, false] {
        let db = TestDb::new().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_postbox"))
            .arg("run")
            .env("DATABASE_URL", &db.url)
            .env("POSTBOX_ADMIN__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipes = Some((child.stdout.take(), child.stderr.take()));
        if close_at_start {
            drop(pipes.take());
        }
        wait_until_listening(&db, &mut child).await;
        drop(pipes.take());
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("postbox run with closed pipes (at start: {close_at_start}) ignored SIGTERM for 15 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "postbox run with closed pipes (at start: {close_at_start}): {status}");
    }
}

/// Waits, at most 20 s, until the `postbox run` in `child` holds its LISTEN
/// connection to `db`; nothing announces that but the server's own view.
async fn wait_until_listening(db: &TestDb, child: &mut Child) {
    let client = db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
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
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("postbox run exited before it was listening: {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("postbox run did not start listening within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `postbox ARGS` against `database_url`; panics with its stderr if it fails.
fn ok(database_url: &str, args: &[&str]) -> String {
    let output = postbox(args, &[("DATABASE_URL", database_url)]);
    assert!(output.status.success(), "postbox {args:?} failed: {}", stderr(&output));
    stdout(&output)
}

fn ok_json(database_url: &str, args: &[&str]) -> serde_json::Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let text = ok(database_url, &with_json);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("postbox {args:?} --json printed no JSON ({e}): {text}"))
}

#[tokio::test]
async fn every_management_verb_works_in_text_and_json() {
    use crate::support::{Receiver, TestApp};
    let app = TestApp::new().await;
    let db = app.db.url.clone();
    let mut receiver = Receiver::start().await;
    app.register("order.created").await;

    let created =
        ok_json(&db, &["endpoints", "add", &receiver.url("/hooks"), "-e", "order.*", "-H", "X-Team=blue"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["headers"], serde_json::json!({"X-Team": "blue"}));
    let text = ok(&db, &["endpoints", "add", "https://example.com/other", "-e", "other.*"]);
    assert!(text.contains("secret") && text.contains("shown once"), "{text}");

    assert_eq!(ok_json(&db, &["endpoints", "list"]).as_array().unwrap().len(), 2);
    assert!(ok(&db, &["endpoints", "list"]).contains(&receiver.url("/hooks")));
    assert!(ok(&db, &["endpoints", "show", &id]).contains("order.*"));
    assert_eq!(ok_json(&db, &["endpoints", "update", &id, "--tenant", "acme"])["tenant"], "acme");
    assert_eq!(ok_json(&db, &["endpoints", "update", &id, "--no-tenant"])["tenant"], serde_json::Value::Null);
    assert_eq!(ok_json(&db, &["endpoints", "disable", &id])["enabled"], false);
    assert_eq!(ok_json(&db, &["endpoints", "enable", &id])["enabled"], true);
    let rotated = ok_json(&db, &["endpoints", "rotate-secret", &id]);
    assert_ne!(rotated["secret"], created["secret"]);

    let event = ok_json(&db, &["emit", "order.created", r#"{"id": 1}"#, "--tenant", "acme"]);
    app.dispatch().await;
    app.deliver().await;
    assert_eq!(receiver.recv().await.header("webhook-id"), event["event_id"].as_str().unwrap());

    let deliveries = ok_json(&db, &["deliveries", "list", "--endpoint", &id]);
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(deliveries[0]["status"], "succeeded");
    let shown = ok(&db, &["deliveries", "show", &delivery]);
    for expected in ["--- attempt 1", "webhook-signature: v1,", "response: HTTP 200", "payload"] {
        assert!(shown.contains(expected), "missing {expected:?} in\n{shown}");
    }
    assert_eq!(ok_json(&db, &["deliveries", "show", &delivery])["attempts"].as_array().unwrap().len(), 1);
    ok(&db, &["deliveries", "redeliver", &delivery]);
    assert_eq!(app.deliver().await, 1);
    assert!(ok(&db, &["endpoints", "list"]).contains("100% of 2 attempts"), "health in the list");
    assert_eq!(ok_json(&db, &["endpoints", "show", &id])["health"]["attempts_24h"], 2);
    assert_eq!(ok_json(&db, &["replay", &id, "--since", "1h"])["replayed"], 1);

    app.sql.batch_execute("create table posts (id int primary key, title text)").await.unwrap();
    ok(&db, &["track", "posts", "--subject", "post", "--exclude", "title"]);
    app.sql.batch_execute("insert into posts values (1, 'x')").await.unwrap();
    assert_eq!(app.count("select count(*) from postbox.outbox where event_type = 'post.created'").await, 1);
    ok(&db, &["track", "posts", "--untrack"]);

    let status = ok_json(&db, &["status"]);
    assert_eq!(status["endpoints"], 2);
    assert!(ok(&db, &["status"]).contains("Backlog"));
    assert!(ok_json(&db, &["endpoints", "test", &id])["event_id"].is_string());
    let unconfirmed = postbox(&["endpoints", "rm", &id], &[("DATABASE_URL", &db)]);
    assert!(!unconfirmed.status.success(), "no terminal, no --yes: nothing deleted");
    assert!(stderr(&unconfirmed).contains("pass --yes to confirm"), "{}", stderr(&unconfirmed));
    assert_eq!(ok_json(&db, &["endpoints", "list"]).as_array().unwrap().len(), 2);
    ok(&db, &["endpoints", "rm", &id, "--yes"]);
    assert_eq!(ok_json(&db, &["endpoints", "list"]).as_array().unwrap().len(), 1);

    for (args, expected) in [
        (vec!["endpoints", "show", "00000000-0000-0000-0000-000000000000"], "no endpoint with id"),
        (vec!["emit", "nope.nope", "{}"], "unknown event type 'nope.nope'"),
        (vec!["emit", "order.created", "not json"], "not JSON"),
        (vec!["endpoints", "add", "ftp://example.com"], "scheme must be http or https"),
        (vec!["deliveries", "list", "--status", "lost"], "unknown status"),
    ] {
        let output = postbox(&args, &[("DATABASE_URL", &db)]);
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn escape_sequences_from_outside_are_shown_not_obeyed() {
    use crate::support::{Receiver, Reply, TestApp};
    let app = TestApp::new().await;
    let db = app.db.url.clone();
    let receiver = Receiver::start().await;
    // Clipboard (OSC 52), window title (OSC 0), clear screen (CSI, 7- and 8-bit), delete.
    let hostile = "\x1b]52;c;cG9zdGJveA==\x07 \x1b]0;owned\x07 \x1b[2J \u{9b}2J \x7f";
    receiver.answer_all(Reply::status(500).body(format!("first line\n{hostile}\n")));
    app.register("order.created").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("order.created", serde_json::json!({})).await;
    app.dispatch().await;
    assert_eq!(app.deliver().await, 1);
    app.sql
        .execute("update postbox.endpoints set description = $1 where id = $2", &[&hostile, &endpoint])
        .await
        .unwrap();
    let delivery = ok_json(&db, &["deliveries", "list"])[0]["id"].as_str().unwrap().to_owned();

    let shown = ok(&db, &["deliveries", "show", &delivery]);
    assert!(shown.contains("response: HTTP 500\n"), "{shown}");
    let escaped = r"\u{1b}]52;c;cG9zdGJveA==\u{7} \u{1b}]0;owned\u{7} \u{1b}[2J \u{9b}2J \u{7f}";
    assert!(
        shown.contains(&format!("first line\n{escaped}\n")),
        "the body, escaped, keeps its lines:\n{shown}"
    );
    let described = ok(&db, &["endpoints", "show", &endpoint.to_string()]);
    assert!(described.contains(escaped), "{described}");
    let json = ok(&db, &["deliveries", "show", &delivery, "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed["attempts"][0]["response_body"], format!("first line\n{hostile}\n"), "--json is exact");
    for text in [shown, described, json] {
        assert!(!text.contains(|c: char| c.is_control() && c != '\n'), "raw control characters: {text:?}");
    }
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let db = TestDb::empty().await;
    let output =
        postbox(&["migrate", "--log-format", "json"], &[("DATABASE_URL", &db.url), ("RUST_LOG", "info")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "migration applied"), "{log}");
}

/// What goes wrong on day one says what it is and what to do, with the host
/// and port tried and never the password.
#[tokio::test]
async fn connection_problems_say_what_went_wrong_and_what_to_do() {
    let empty = TestDb::empty().await;
    let server = url::Url::parse(&crate::support::db::server_url()).unwrap();
    let missing = {
        let mut url = server.clone();
        url.set_path("postbox_no_such_database");
        url.to_string()
    };
    let cases: Vec<(Vec<&str>, String, Vec<String>)> = vec![
        (
            vec!["status"],
            missing.clone(),
            vec![r#"database "postbox_no_such_database" does not exist"#.into()],
        ),
        (
            vec!["status"],
            "postgres://postgres:sekrit@127.0.0.1:1/x".into(),
            vec!["cannot connect to 127.0.0.1:1/x as postgres".into(), "Connection refused".into()],
        ),
        (vec!["status"], "mysql://foo".into(), vec!["not postgres".into(), "postgres://user:".into()]),
        (vec!["status"], "not a url".into(), vec!["invalid connection string".into(), "host=db".into()]),
        (
            vec!["deliveries", "list"],
            empty.url.clone(),
            vec!["schema not installed: run `postbox migrate`".into()],
        ),
    ];
    for (args, url, expected) in cases {
        let out = postbox(&args, &[("DATABASE_URL", &url)]);
        assert!(!out.status.success(), "{args:?} with {url}");
        let err = stderr(&out);
        for needle in &expected {
            assert!(err.contains(needle.as_str()), "{args:?} with {url}: {err}");
        }
        assert!(!err.contains("sekrit"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // The URL can be given as a flag too.
    let out = postbox(&["--database-url", &missing, "status"], &[]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // A taken admin port names the key to change, once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = postbox(&["run"], &[("DATABASE_URL", &empty.url), ("POSTBOX_ADMIN__LISTEN", &address)]);
    let err = stderr(&out);
    assert!(err.contains("set admin.listen (or POSTBOX_ADMIN__LISTEN)"), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "the OS error once: {err}");
}

/// One `--since` everywhere: durations and times, and an error that says both.
#[tokio::test]
async fn since_takes_a_duration_or_a_time_in_every_command() {
    let app = crate::support::TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    app.emit("a.b", serde_json::json!({})).await;
    app.dispatch().await;
    let env = [("DATABASE_URL", app.db.url.as_str())];
    let endpoint = endpoint.to_string();
    for since in ["1h", "7d", "2020-01-01T00:00:00Z", "2020-01-01"] {
        let listed = postbox(&["deliveries", "list", "--since", since, "--json"], &env);
        assert!(listed.status.success(), "list --since {since}: {}", stderr(&listed));
        let found: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
        assert_eq!(found.as_array().unwrap().len(), 1, "list --since {since}");
        let replayed = postbox(&["replay", &endpoint, "--since", since, "--json"], &env);
        assert!(replayed.status.success(), "replay --since {since}: {}", stderr(&replayed));
    }
    for args in
        [vec!["deliveries", "list", "--since", "yesterday-ish"], vec!["replay", &endpoint, "--since", "soon"]]
    {
        let out = postbox(&args, &env);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("a duration back from now (30m, 24h, 7d) or a time"), "{args:?}: {err}");
    }
}

#[test]
fn dev_with_a_directory_without_postgres_says_so() {
    let out = postbox(&["dev", "--pg-bindir", "/nonexistent"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("/nonexistent has no initdb") && err.contains("pg_config --bindir"), "{err}");
}

/// A customer quotes the webhook-id they got: find its deliveries by it.
#[tokio::test]
async fn deliveries_are_found_by_the_event_id_a_receiver_saw() {
    let app = crate::support::TestApp::new().await;
    app.register("a.b").await;
    app.subscribe("https://example.com/one", &["*"]).await;
    app.subscribe("https://example.com/two", &["*"]).await;
    let wanted = app.emit("a.b", serde_json::json!({})).await;
    app.emit("a.b", serde_json::json!({})).await;
    app.dispatch().await;
    let env = [("DATABASE_URL", app.db.url.as_str())];
    let found = postbox(&["deliveries", "list", "--event", &wanted.to_string(), "--json"], &env);
    assert!(found.status.success(), "{}", stderr(&found));
    let found: serde_json::Value = serde_json::from_str(&stdout(&found)).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 2, "one per endpoint");
    assert!(found.iter().all(|d| d["event_id"] == wanted.to_string()));
    let filter = postbox::admin::deliveries::Filter { event_id: Some(wanted), ..Default::default() };
    assert_eq!(
        postbox::admin::deliveries::list(&app.sql, &postbox::admin::Access::Admin, &filter)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Recover sends the failed deliveries again, not the successes; the same
/// through the CLI, the API's route and SQL.
#[tokio::test]
async fn recover_sends_only_what_failed_again() {
    let app = crate::support::TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s")]).await;
    let receiver = crate::support::Receiver::start().await;
    receiver.script([crate::support::Reply::status(500), crate::support::Reply::status(200)]);
    app.register("a.b").await;
    let endpoint = app.subscribe(&receiver.url("/"), &["*"]).await;
    let failed = app.emit("a.b", serde_json::json!({"n": 1})).await;
    app.dispatch().await;
    app.deliver().await;
    let succeeded = app.emit("a.b", serde_json::json!({"n": 2})).await;
    app.dispatch().await;
    app.deliver().await;
    assert_eq!(app.delivery_state(failed, endpoint).await.0, "failed");
    assert_eq!(app.delivery_state(succeeded, endpoint).await.0, "succeeded");

    let env = [("DATABASE_URL", app.db.url.as_str())];
    let out = postbox(&["recover", "--endpoint", &endpoint.to_string(), "--since", "1h", "--json"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["recovered"], 1);
    assert_eq!(app.delivery_state(failed, endpoint).await.0, "pending", "the failure goes again");
    assert_eq!(app.delivery_state(succeeded, endpoint).await.0, "succeeded", "the success does not");
    assert_eq!(app.deliver().await, 1);
    assert_eq!(app.delivery_state(failed, endpoint).await.0, "succeeded");

    let none: i32 = app
        .sql
        .query_one("select postbox.recover($1, now() - interval '1 hour')", &[&endpoint])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, 0, "nothing failed any more");
    let out = postbox(&["recover", "--endpoint", &endpoint.to_string(), "--since", "whenever"], &env);
    assert!(stderr(&out).contains("a duration back from now"), "{}", stderr(&out));
}

/// A pending delivery says why it is not being sent.
#[tokio::test]
async fn a_stuck_delivery_says_why_it_waits() {
    let app = crate::support::TestApp::new().await;
    app.register("a.b").await;
    let endpoint = app.subscribe("https://example.com/hooks", &["*"]).await;
    app.emit("a.b", serde_json::json!({})).await;
    app.dispatch().await;
    let env = [("DATABASE_URL", app.db.url.as_str())];
    let waiting = || {
        let out = postbox(&["deliveries", "list", "--json"], &env);
        let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        list[0]["waiting"].as_str().unwrap_or_default().to_owned()
    };
    assert!(waiting().contains("due now"), "{}", waiting());
    let out = postbox(&["endpoints", "disable", &endpoint.to_string()], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        waiting().contains("waiting: endpoint disabled (disabled by an operator); enable it to send"),
        "{}",
        waiting()
    );
    app.sql
        .batch_execute("update postbox.endpoints set enabled = true; update postbox.deliveries set next_attempt_at = now() + interval '5 minutes', last_error = 'HTTP 503'")
        .await
        .unwrap();
    assert!(
        waiting().contains("waiting: attempt 1 at ") && waiting().contains("after HTTP 503"),
        "{}",
        waiting()
    );
    let id: uuid::Uuid = app.sql.query_one("select id from postbox.deliveries", &[]).await.unwrap().get(0);
    let shown = postbox(&["deliveries", "show", &id.to_string()], &env);
    assert!(stdout(&shown).contains("waiting: attempt 1 at"), "{}", stdout(&shown));
}

/// Event types are managed from the CLI as from SQL.
#[tokio::test]
async fn event_types_are_added_listed_and_archived_from_the_cli() {
    let db = TestDb::new().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let out = postbox(
        &[
            "event-types",
            "add",
            "invoice.paid",
            "--description",
            "An invoice was paid",
            "--example",
            r#"{"id": 7}"#,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let described = postbox(
        &["event-types", "describe", "invoice.paid", "--example", r#"{"id": 8, "cents": 100}"#, "--json"],
        &env,
    );
    let described: serde_json::Value = serde_json::from_str(&stdout(&described)).unwrap();
    assert_eq!(described["example"], serde_json::json!({"id": 8, "cents": 100}));
    assert_eq!(described["description"], "An invoice was paid", "what is not given stays");
    let not_an_object = postbox(&["event-types", "describe", "invoice.paid", "--example", "[1]"], &env);
    assert!(stderr(&not_an_object).contains("must be a JSON object"), "{}", stderr(&not_an_object));
    let listed = postbox(&["event-types", "list"], &env);
    assert!(stdout(&listed).contains("invoice.paid") && stdout(&listed).contains("An invoice was paid"));
    let archived = postbox(&["event-types", "archive", "invoice.paid", "--json"], &env);
    let archived: serde_json::Value = serde_json::from_str(&stdout(&archived)).unwrap();
    assert_eq!(archived["archived"], true);
    let back = postbox(&["event-types", "archive", "invoice.paid", "--undo", "--json"], &env);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&back)).unwrap()["archived"], false);
    let missing = postbox(&["event-types", "archive", "no.such"], &env);
    assert!(stderr(&missing).contains("no event type \"no.such\""), "{}", stderr(&missing));
    let bad = postbox(&["event-types", "add", "not a name"], &env);
    assert!(stderr(&bad).contains("invalid event type name"), "{}", stderr(&bad));
}

/// A pattern that matches no registered type is accepted (a type may come
/// later) but said: as a NOTICE in SQL, a warning in the CLI, a field in the API.
#[tokio::test]
async fn a_pattern_that_matches_nothing_is_warned_about() {
    let db = TestDb::new().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (client, mut connection) = {
        let (config, tls) = postbox::db::connection_config(&db.url).unwrap();
        config.connect(tls).await.unwrap()
    };
    let (notices, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(tokio_postgres::AsyncMessage::Notice(notice))) = messages.next().await {
            let _ = notices.send(notice.message().to_owned());
        }
    });
    client.execute("select postbox.register_event_type('order.created')", &[]).await.unwrap();
    client.execute("select postbox.subscribe('https://example.com/a', '{ordr.*}')", &[]).await.unwrap();
    let notice =
        tokio::time::timeout(std::time::Duration::from_secs(5), received.recv()).await.unwrap().unwrap();
    assert!(notice.contains("'ordr.*' matches no registered event type"), "{notice}");

    let out = postbox(&["endpoints", "add", "https://example.com/b", "-e", "ordr.*", "--json"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: ordr.* matches no registered event type yet"),
        "{}",
        stderr(&out)
    );
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created["unmatched_patterns"], serde_json::json!(["ordr.*"]));
    let fine = postbox(&["endpoints", "add", "https://example.com/c", "-e", "order.*"], &env);
    assert!(!stderr(&fine).contains("warning"), "{}", stderr(&fine));
}

/// "failed" means one thing: an attempt failed; whether its delivery will be
/// retried or has failed is said apart.
#[tokio::test]
async fn status_tells_failed_attempts_from_failed_deliveries() {
    let app = crate::support::TestApp::with_settings(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "0s,0s")]).await;
    let receiver = crate::support::Receiver::start().await;
    receiver.answer_all(crate::support::Reply::status(500));
    app.register("a.b").await;
    app.subscribe(&receiver.url("/"), &["*"]).await;
    app.emit("a.b", serde_json::json!({})).await;
    app.dispatch().await;
    let env = [("DATABASE_URL", app.db.url.as_str())];
    let minute = || {
        let out = postbox(&["status", "--json"], &env);
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["last_minute"].clone()
    };
    assert_eq!(app.deliver().await, 1);
    let m = minute();
    assert_eq!(
        (m["failed"].as_i64(), m["retrying"].as_i64(), m["deliveries_failed"].as_i64()),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(app.deliver().await, 1);
    let m = minute();
    assert_eq!(
        (m["failed"].as_i64(), m["retrying"].as_i64(), m["deliveries_failed"].as_i64()),
        (Some(2), Some(1), Some(1))
    );
    let text = stdout(&postbox(&["status"], &env));
    assert!(text.contains("2 failed: 1 to be retried, 1 ended their delivery as failed"), "{text}");
}

/// Every command and every argument says what it is for.
#[test]
fn every_argument_of_every_command_is_described() {
    let commands = [
        "migrate",
        "run",
        "config",
        "dev",
        "endpoints add",
        "endpoints list",
        "endpoints show",
        "endpoints update",
        "endpoints enable",
        "endpoints disable",
        "endpoints rm",
        "endpoints rotate-secret",
        "endpoints test",
        "deliveries list",
        "deliveries show",
        "deliveries redeliver",
        "event-types add",
        "event-types list",
        "event-types archive",
        "replay",
        "recover",
        "emit",
        "track",
        "status",
    ];
    let bare = bare_argument;
    for command in commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let out = postbox(&args, &[]);
        assert!(out.status.success(), "{command} --help: {}", stderr(&out));
        for line in stdout(&out).lines() {
            assert!(!bare(line), "`postbox {command}` has an argument without a description: {line:?}");
        }
    }
    let top = stdout(&postbox(&["--help"], &[]));
    assert!(top.contains("DATABASE_URL"), "the top-level help names DATABASE_URL:\n{top}");
}

/// A help line that names an argument (`  <ID>`, `  --tenant <TENANT>`) and nothing else.
fn bare_argument(line: &str) -> bool {
    let trimmed = line.trim();
    let is_argument = line.starts_with("  ") && (trimmed.starts_with('<') || trimmed.starts_with('-'));
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let only_names = words.iter().all(|w| w.starts_with('<') || w.starts_with('-') || w.ends_with(','));
    is_argument && !trimmed.is_empty() && only_names
}
