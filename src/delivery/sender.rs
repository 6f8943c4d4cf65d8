//! The HTTP side of an attempt: one POST under the network policy, with
//! bounded time and a capped response body. Endpoint failures are data
//! ([`Response`] or an error text), never a Rust `Err` of ours.

use std::{
    error::Error as StdError,
    net::SocketAddr,
    sync::{Arc, Once},
    time::Duration,
};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
    redirect, Client, Url,
};

use crate::delivery::{
    netpolicy::{NetworkPolicy, Refused},
    webhook::WebhookRequest,
};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_body: usize,
    pub policy: NetworkPolicy,
}

/// What a receiver answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    /// Up to `max_response_body` bytes, as text (invalid UTF-8 and NUL replaced).
    pub body: String,
}

pub struct Sender {
    client: Client,
    config: SenderConfig,
}

impl Sender {
    /// `delivery.timeout`: the longest a request may take.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    pub fn new(config: SenderConfig) -> Result<Self, reqwest::Error> {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| {
            // Fails only if another provider is installed already, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A 3xx is a failed attempt: following it could lead anywhere.
            .redirect(redirect::Policy::none())
            // Environment proxies would bypass the address checks.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver { policy: config.policy.clone() }))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client, config })
    }

    /// Sends one request within `delivery.timeout`. `Err` is a text for
    /// `attempts.error`: no response. Takes the request by value: its body
    /// moves into the HTTP client uncopied.
    pub async fn send(&self, request: WebhookRequest) -> Result<Response, String> {
        self.send_within(request, self.config.timeout).await
    }

    /// [`Sender::send`] within `limit` (connect, request and response body),
    /// when less time than `delivery.timeout` is left.
    pub async fn send_within(&self, request: WebhookRequest, limit: Duration) -> Result<Response, String> {
        match tokio::time::timeout(limit, self.exchange(request, limit)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout after {}", humantime::format_duration(limit))),
        }
    }

    async fn exchange(&self, request: WebhookRequest, limit: Duration) -> Result<Response, String> {
        let url = Url::parse(&request.url).map_err(|err| format!("invalid url: {err}"))?;
        self.config.policy.check_url(&url).map_err(|refused| refused.to_string())?;
        let headers = header_map(&request.headers)?;
        let mut response = self
            .client
            .post(url)
            .headers(headers)
            .body(request.body)
            .timeout(limit)
            .send()
            .await
            .map_err(|err| self.describe(&err, limit))?;

        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        let cap = self.config.max_response_body;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= cap {
                        break; // the rest is dropped with the connection
                    }
                }
                Ok(None) => break,
                // The status counts; a body cut short keeps what arrived.
                Err(err) => {
                    tracing::debug!(error = %self.describe(&err, limit), "response body cut short");
                    break;
                }
            }
        }
        Ok(Response { status, headers, body: text(&body) })
    }

    /// A one-line cause for `attempts.error`, without the URL (it is on the endpoint).
    fn describe(&self, err: &reqwest::Error, limit: Duration) -> String {
        let mut source = err.source();
        let mut causes = Vec::new();
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<Refused>() {
                return refused.to_string();
            }
            let text = cause.to_string();
            if !causes.iter().any(|c: &String| c.contains(&text)) {
                causes.push(text);
            }
            source = cause.source();
        }
        if err.is_timeout() {
            return format!("timeout after {}", humantime::format_duration(limit));
        }
        let detail = causes.join(": ");
        let kind = if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_decode() {
            "response failed"
        } else {
            "request failed"
        };
        if detail.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}: {detail}")
        }
    }
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Postgres text cannot hold NUL; everything else invalid becomes U+FFFD.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{FFFD}")
}

/// Resolves with the system resolver, then drops every address the policy
/// refuses; if none is left, the connection is refused with the reason.
struct PolicyResolver {
    policy: NetworkPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_resolved(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        refused.get_or_insert(refusal);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(Box::new(refused) as Box<dyn StdError + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
