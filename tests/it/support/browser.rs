//! A real Chromium driven over the W3C WebDriver protocol by chromedriver.
//!
//! The few commands the tests need (navigate, find, click, type, run a script,
//! screenshot) are plain JSON over HTTP, sent with the reqwest client the
//! project already has; a WebDriver crate would add ~40 crates to the build.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// W3C's key for an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver \
             (.ci/run installs them)"
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, with the Chromium processes it starts, so
            // that a failed test can stop them all.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(response) => response.text().await.is_ok_and(|t| t.contains("\"ready\":true")),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1360,1000", "--lang=en-GB"]
            }
        }}});
        let answer = send(&http, reqwest::Method::POST, &format!("{base}/session"), Some(capabilities)).await;
        let id = answer["sessionId"].as_str().expect("a WebDriver session id").to_owned();
        Self { http, session: format!("{base}/session/{id}"), driver }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        send(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args})))
            .await
    }

    /// Waits until the page's JavaScript `condition` (an expression) is true.
    /// The page updates on its own timers, so there is no event to await:
    /// this polls every 50 ms and fails naming `what` after `limit`.
    pub async fn wait_until(&self, condition: &str, what: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        while self.script(&script, json!([])).await != Value::Bool(true) {
            if tokio::time::Instant::now() >= deadline {
                let text = self.script("return document.body.innerText", json!([])).await;
                panic!("{what}: not within {limit:?}; the page shows:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element matching `css` to be on the page.
    pub async fn wait_for(&self, css: &str) {
        let condition = format!("document.querySelector({})", json!(css));
        self.wait_until(&condition, &format!("element {css}"), Duration::from_secs(15)).await;
    }

    async fn element(&self, css: &str) -> String {
        self.wait_for(css).await;
        let found = self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    /// Types `text` into the field matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/clear"), Some(json!({}))).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.element(css).await;
        let text = self.command(reqwest::Method::GET, &format!("/element/{element}/text"), None).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the viewport under target/tmp/screenshots; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Ends the session (Chromium exits); dropping stops chromedriver.
    pub async fn close(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
        // Drop stops chromedriver.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a failed assertion there is no session to end: stop
        // chromedriver and every Chromium process in its group.
        // SAFETY: kill(2) on the process group of our own child.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// One WebDriver call; returns its `value`, panicking with the driver's error.
async fn send(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap_or_else(|err| panic!("chromedriver at {url}: {err}"));
    let status = response.status();
    let answer: Value =
        serde_json::from_str(&response.text().await.unwrap()).expect("chromedriver answers JSON");
    assert!(status.is_success(), "WebDriver {url} failed with {status}: {}", answer["value"]);
    answer["value"].clone()
}
