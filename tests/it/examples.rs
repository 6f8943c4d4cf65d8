//! The examples in examples/ run for real: each writes an order and its
//! `order.created` event in one transaction, a real relay delivers it, and the
//! example receivers verify the signature with the Standard Webhooks library
//! of their language.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::support::{app::test_settings, process::OutputLines, relay::InProcessRelay, Receiver, TestApp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn python() -> Command {
    let python = examples().join("python/.venv/bin/python");
    assert!(
        python.exists(),
        "the Python examples need their packages: python3 -m venv examples/python/.venv && \
         examples/python/.venv/bin/pip install -r examples/python/requirements.txt (.ci/run does this)"
    );
    Command::new(python)
}

fn node() -> Command {
    assert!(
        examples().join("node/node_modules/pg").exists(),
        "the Node examples need their packages: (cd examples/node && npm ci) (.ci/run does this)"
    );
    Command::new("node")
}

/// A long-running example process and what it prints.
struct Running {
    child: std::process::Child,
    output: OutputLines,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("{command:?} starts: {err}"));
        let output = OutputLines::of(&mut child);
        Self { child, output }
    }

    /// The next output line containing `needle`, within 20 s.
    async fn line_with(&mut self, needle: &str) -> String {
        self.output.line_with(needle, Duration::from_secs(20)).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A database with the examples' table and event type, and a relay running on it.
struct Setup {
    app: TestApp,
    relay: InProcessRelay,
}

impl Setup {
    async fn new() -> Self {
        let app = TestApp::new().await;
        app.sql
            .batch_execute(include_str!("../../examples/setup.sql"))
            .await
            .expect("examples/setup.sql applies");
        let relay = InProcessRelay::start(test_settings(&app.db.url, &[])).await;
        Self { app, relay }
    }

    async fn subscribe(&self, url: &str) {
        self.app.sql.execute("select postbox.subscribe($1, secret => $2)", &[&url, &SECRET]).await.unwrap();
    }

    /// Runs a writer example to completion; returns its stdout.
    fn write_order(&self, mut writer: Command, database_url: &str) -> String {
        let output = writer
            .args(["grace@example.com", "4200"])
            .env("DATABASE_URL", database_url)
            .output()
            .unwrap_or_else(|err| panic!("{writer:?} runs: {err}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{writer:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("order 1 placed, event "), "{stdout}");
        stdout
    }

    async fn stop(self) {
        self.relay.stop().await;
    }
}

/// The writer and the receiver of one language, end to end, plus a redelivery
/// that the receiver recognises as a repeat by its webhook-id.
async fn writer_and_receiver(mut writer: Command, mut receiver: Command) {
    let setup = Setup::new().await;
    let port = free_port();
    receiver.args(["--port", &port.to_string()]).env("POSTBOX_SECRET", SECRET);
    let mut receiver = Running::spawn(receiver);
    receiver.line_with("listening on").await;
    setup.subscribe(&format!("http://127.0.0.1:{port}/")).await;

    let written = setup.write_order(std::mem::replace(&mut writer, Command::new("true")), &setup.app.db.url);
    let line = receiver.line_with("verified order.created").await;
    let event_id = written.trim().rsplit(' ').next().unwrap();
    assert!(line.contains(event_id), "the receiver saw webhook-id {event_id}: {line}");
    let data: Value = serde_json::from_str(line.split_once(": ").unwrap().1).unwrap();
    assert_eq!(data["customer"], "grace@example.com");
    assert_eq!(data["total_cents"], 4200);

    let succeeded = "select count(*) from postbox.deliveries where status = 'succeeded'";
    setup.app.wait_for_count(succeeded, 1, Duration::from_secs(10)).await;
    setup.app.sql.execute("select postbox.redeliver(id) from postbox.deliveries", &[]).await.unwrap();
    receiver.line_with(&format!("duplicate {event_id} skipped")).await;
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_writes_an_order_event_and_its_receiver_verifies_it() {
    let mut writer = python();
    writer.arg(examples().join("python/write_order.py"));
    let mut receiver = python();
    receiver.arg(examples().join("python/receiver.py"));
    writer_and_receiver(writer, receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_writes_an_order_event_and_its_receiver_verifies_it() {
    let mut writer = node();
    writer.arg(examples().join("node/write_order.js"));
    let mut receiver = node();
    receiver.arg(examples().join("node/receiver.js"));
    writer_and_receiver(writer, receiver).await;
}

/// A writer in a language without an example receiver: the test's own
/// receiver checks what arrives.
async fn writer_only(writer: Command, database_url_suffix: &str) {
    let setup = Setup::new().await;
    let mut receiver = Receiver::start().await;
    setup.subscribe(&receiver.url("/")).await;
    setup.write_order(writer, &format!("{}{database_url_suffix}", setup.app.db.url));
    let received = receiver.recv().await;
    assert_eq!(received.json()["type"], "order.created");
    assert_eq!(received.json()["data"]["total_cents"], 4200);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_example_writes_an_order_event() {
    assert!(
        Path::new("/usr/bin/ruby").exists(),
        "the Ruby example needs ruby and its pg gem: apt-get install ruby ruby-pg (.ci/run does this)"
    );
    let mut writer = Command::new("ruby");
    writer.arg(examples().join("ruby/write_order.rb"));
    writer_only(writer, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_example_writes_an_order_event() {
    let gopath = Path::new("/usr/share/gocode");
    assert!(
        Path::new("/usr/bin/go").exists() && gopath.join("src/github.com/lib/pq").exists(),
        "the Go example needs go and lib/pq: apt-get install golang-go golang-github-lib-pq-dev (.ci/run does this)"
    );
    // Debian packages lib/pq for GOPATH builds; outside this test, `go run .`
    // fetches it as go.mod says. Build once into a private directory.
    let build = tempdir("go-example");
    let binary = build.join("write-order");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(examples().join("go/main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", build.join("cache"))
        .output()
        .unwrap();
    assert!(output.status.success(), "go build: {}", String::from_utf8_lossy(&output.stderr));
    // lib/pq asks for TLS unless told otherwise; the test server has none.
    writer_only(Command::new(&binary), "?sslmode=disable").await;
    let _ = std::fs::remove_dir_all(build);
}

fn tempdir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
