//! A real HTTP receiver on 127.0.0.1:0 that records every request and answers
//! with scripted responses (svix's TestReceiver, in spirit).

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("request has no {name} header")).to_str().unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }

    /// Waits this long before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    rules: Arc<Mutex<Vec<(String, Reply)>>>,
    default: Arc<Mutex<Reply>>,
    requests: mpsc::UnboundedSender<Received>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    rules: Arc<Mutex<Vec<(String, Reply)>>>,
    default: Arc<Mutex<Reply>>,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    /// Starts a receiver that answers 200 unless scripted otherwise.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let rules = Arc::new(Mutex::new(Vec::new()));
        let default = Arc::new(Mutex::new(Reply::status(200)));
        let app = Router::new().fallback(handle).with_state(Shared {
            script: Arc::clone(&script),
            rules: Arc::clone(&rules),
            default: Arc::clone(&default),
            requests: tx,
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, script, rules, default, requests: rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every unscripted request with `reply` (instead of a plain 200).
    pub fn answer_all(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    /// Answers unscripted requests whose body contains `needle` with `reply`
    /// (the first rule that matches).
    pub fn answer_when(&self, needle: &str, reply: Reply) {
        self.rules.lock().unwrap().push((needle.to_owned(), reply));
    }

    /// Answers the next requests with these replies, in order; then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The next request, or a panic after 10 s.
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("no webhook arrived at the receiver within 10 s")
            .expect("receiver stopped")
    }

    /// The next request, or `None` after `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Received> {
        tokio::time::timeout(limit, self.requests.recv()).await.ok().flatten()
    }

    /// Receives until `distinct` different webhook-ids arrived; returns how
    /// often each one came. Panics after `limit`.
    pub async fn collect_distinct(
        &mut self,
        distinct: usize,
        limit: Duration,
    ) -> std::collections::HashMap<String, usize> {
        let mut seen = std::collections::HashMap::new();
        let deadline = tokio::time::Instant::now() + limit;
        while seen.len() < distinct {
            let request = tokio::time::timeout_at(deadline, self.requests.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {distinct} webhooks arrived within {limit:?}", seen.len())
                })
                .expect("receiver stopped");
            *seen.entry(request.header("webhook-id").to_owned()).or_insert(0) += 1;
        }
        seen
    }

    /// Every request received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scripted = shared.script.lock().unwrap().pop_front();
    let ruled = || {
        let text = String::from_utf8_lossy(&body);
        shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .find(|(needle, _)| text.contains(needle.as_str()))
            .map(|(_, r)| r.clone())
    };
    let reply = scripted.or_else(ruled).unwrap_or_else(|| shared.default.lock().unwrap().clone());
    let _ = shared.requests.send(Received { path: uri.path().to_owned(), headers, body });
    tokio::time::sleep(reply.delay).await;
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A server on 127.0.0.1:0 that accepts connections and never answers.
/// Returns its base URL.
pub async fn hanging_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}
