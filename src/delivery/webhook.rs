//! One webhook request, built from a claimed delivery: the JSON body, the
//! Standard Webhooks headers and the endpoint's own headers.

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use uuid::Uuid;

use crate::delivery::signing::{self, SigningKey};

/// A delivery as claimed from the database, with what its request needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub lease_token: Uuid,
    pub endpoint_id: Uuid,
    pub attempt_number: i32,
    pub event_id: Uuid,
    pub event_type: String,
    /// `occurred_at` in RFC 3339, formatted by the database.
    pub occurred_at: String,
    /// The payload as JSON text, straight from the database: it is sent as
    /// is, never parsed, so no depth or size limit of a JSON parser applies.
    pub payload: String,
    pub previous: Option<String>,
    pub actor: Option<String>,
    pub url: String,
    /// Current secret first, then a rotated-out one that is still valid.
    pub secrets: Vec<String>,
    pub headers: Value,
    /// Why this delivery cannot be sent, whatever the receiver would say:
    /// it ends as `failed` with this reason, and nothing is sent.
    pub defect: Option<String>,
    /// When this relay leased it: the lease bounds how long its request may take.
    pub leased_at: std::time::Instant,
    /// A first attempt sent straight from the outbox: its event's outbox id.
    /// No delivery row exists yet (`id` is the one it will get); the outcome
    /// writes it, while the dispatch batch under `lease_token` is this relay's.
    pub from_outbox: Option<i64>,
}

impl Claimed {
    /// The endpoint's host (and port), for logs: which receiver this is,
    /// without the path or query, which may carry tokens.
    pub fn host(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(url) => match (url.host_str(), url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                (None, _) => "?".to_owned(),
            },
            Err(_) => "?".to_owned(),
        }
    }
}

/// What goes on the wire.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub const USER_AGENT: &str = concat!("postbox/", env!("CARGO_PKG_VERSION"));

/// Builds the request for one attempt at `timestamp` (unix seconds).
/// `Err` explains why it cannot be sent (an unusable secret).
pub fn build(delivery: &Claimed, timestamp: i64) -> Result<WebhookRequest, String> {
    let body = body(delivery).into_bytes();

    let keys = delivery
        .secrets
        .iter()
        .map(|secret| SigningKey::from_secret(secret))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("unusable endpoint secret: {err}"))?;
    if keys.is_empty() {
        return Err("endpoint has no secret".into());
    }
    let msg_id = delivery.event_id.to_string();
    let signature = signing::signature_header(&keys, &msg_id, timestamp, &body);

    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ("webhook-id".to_owned(), msg_id),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
        ("postbox-event-type".to_owned(), delivery.event_type.clone()),
        ("postbox-delivery-id".to_owned(), delivery.id.to_string()),
        ("postbox-attempt".to_owned(), delivery.attempt_number.to_string()),
    ];
    if let Value::Object(extra) = &delivery.headers {
        for (name, value) in extra {
            headers.push(endpoint_header(name, value)?);
        }
    }
    Ok(WebhookRequest { url: delivery.url.clone(), headers, body })
}

/// Headers of every request whose values an attempt's own row gives back
/// (its delivery, event, number and start second): an attempt does not
/// store them, and [`sent_headers`] puts them back. They were over half of
/// each attempt row, and of the write-ahead log it cost.
const REBUILT_HEADERS: [&str; 6] = [
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "postbox-event-type",
    "postbox-delivery-id",
    "postbox-attempt",
];

/// The headers of a request that its attempt stores: the signature, the
/// user agent (it names the relay's version) and the endpoint's own
/// headers, everything [`sent_headers`] cannot rebuild.
pub fn recorded_headers(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| !REBUILT_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_str()))
}

/// What an attempt's row knows about the request it made.
pub struct SentWith<'a> {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub attempt_number: i32,
    /// Unix seconds of the attempt's start: the `webhook-timestamp` sent.
    pub started_unix: i64,
}

/// The headers an attempt was sent with, from those it stored: the rebuilt
/// ones are added where missing. A request that was never sent (stored as
/// `{}`, no signature) gets none; rows written before attempts stopped
/// storing them already hold them all, and keep their own values.
pub fn sent_headers(recorded: Value, sent: &SentWith) -> Value {
    let Value::Object(mut headers) = recorded else { return recorded };
    if !headers.contains_key("webhook-signature") {
        return Value::Object(headers);
    }
    let rebuilt = [
        ("content-type", "application/json".to_owned()),
        ("webhook-id", sent.event_id.to_string()),
        ("webhook-timestamp", sent.started_unix.to_string()),
        ("postbox-event-type", sent.event_type.to_owned()),
        ("postbox-delivery-id", sent.delivery_id.to_string()),
        ("postbox-attempt", sent.attempt_number.to_string()),
    ];
    for (name, value) in rebuilt {
        headers.entry(name).or_insert(Value::from(value));
    }
    Value::Object(headers)
}

/// Headers an endpoint may not set: postbox's own, and those that frame the
/// body or belong to one hop. The schema refuses them too; this holds for
/// rows that went around its checks.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "te",
    "upgrade",
    "keep-alive",
    "expect",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "content-encoding",
];

/// One of the endpoint's own headers, checked as HTTP will check it.
fn endpoint_header(name: &str, value: &Value) -> Result<(String, String), String> {
    let lower = name.to_ascii_lowercase();
    let fix = "fix the endpoint's headers";
    let value = value.as_str().ok_or_else(|| format!("header {name:?} is not a string: {fix}"))?;
    if HeaderName::from_bytes(lower.as_bytes()).is_err() {
        return Err(format!("header name {name:?} is not a valid HTTP header name: {fix}"));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(format!("header {name:?} has a value HTTP cannot carry (control characters): {fix}"));
    }
    if RESERVED_HEADERS.contains(&lower.as_str())
        || lower.starts_with("webhook-")
        || lower.starts_with("postbox-")
    {
        return Err(format!("header {name:?} is set by postbox or belongs to one hop: {fix}"));
    }
    Ok((lower, value.to_owned()))
}

fn body(delivery: &Claimed) -> String {
    envelope(
        &delivery.event_type,
        &delivery.occurred_at,
        &delivery.payload,
        delivery.previous.as_deref(),
        delivery.actor.as_deref(),
    )
}

/// The request body: `{"type":…,"timestamp":…,"data":…}` plus `previous`
/// and `actor` when present. The JSON values are the database's own text,
/// embedded verbatim. The admin API rebuilds it to show what was sent.
pub fn envelope(
    event_type: &str,
    occurred_at: &str,
    payload: &str,
    previous: Option<&str>,
    actor: Option<&str>,
) -> String {
    let optional = [("previous", previous), ("actor", actor)];
    let extra: usize = optional.iter().map(|(_, v)| v.map_or(0, |v| v.len() + 16)).sum();
    let mut body = String::with_capacity(payload.len() + event_type.len() + extra + 80);
    body.push_str("{\"type\":");
    body.push_str(&Value::from(event_type).to_string());
    body.push_str(",\"timestamp\":");
    body.push_str(&Value::from(occurred_at).to_string());
    body.push_str(",\"data\":");
    body.push_str(payload);
    for (name, value) in optional {
        if let Some(value) = value {
            body.push_str(",\"");
            body.push_str(name);
            body.push_str("\":");
            body.push_str(value);
        }
    }
    body.push('}');
    body
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claimed() -> Claimed {
        Claimed {
            id: Uuid::nil(),
            lease_token: Uuid::nil(),
            endpoint_id: Uuid::nil(),
            attempt_number: 2,
            event_id: Uuid::from_u128(7),
            event_type: "post.updated".into(),
            occurred_at: "2026-11-23T01:02:03.000004Z".into(),
            payload: json!({"id": 1, "title": "new"}).to_string(),
            previous: Some(json!({"title": "old"}).to_string()),
            actor: None,
            url: "https://example.com/hook".into(),
            secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()],
            headers: json!({"X-Team": "blue"}),
            defect: None,
            leased_at: std::time::Instant::now(),
            from_outbox: None,
        }
    }

    #[test]
    fn body_has_type_timestamp_data_and_previous_but_no_absent_actor() {
        let request = build(&claimed(), 1_700_000_000).unwrap();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"type": "post.updated", "timestamp": "2026-11-23T01:02:03.000004Z",
                   "data": {"id": 1, "title": "new"}, "previous": {"title": "old"}})
        );
    }

    #[test]
    fn an_attempt_stores_what_it_cannot_rebuild_and_shows_every_header_sent() {
        let mut delivery = claimed();
        delivery.headers = json!({"X-Team": "blue"});
        let request = build(&delivery, 1_700_000_000).unwrap();
        let recorded = crate::delivery::redact::headers_json(recorded_headers(&request.headers), usize::MAX);
        let stored: Vec<&str> = recorded.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(stored, ["user-agent", "webhook-signature", "x-team"]);

        let sent = SentWith {
            delivery_id: delivery.id,
            event_id: delivery.event_id,
            event_type: &delivery.event_type,
            attempt_number: delivery.attempt_number,
            started_unix: 1_700_000_000,
        };
        let all = crate::delivery::redact::headers_json(
            request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            usize::MAX,
        );
        assert_eq!(sent_headers(recorded, &sent), all);
        assert_eq!(sent_headers(json!({}), &sent), json!({}), "a request never sent had no headers");
        let older = json!({"webhook-signature": "v1,x", "webhook-id": "as stored"});
        assert_eq!(sent_headers(older, &sent)["webhook-id"], "as stored");
    }

    #[test]
    fn headers_carry_id_timestamp_signature_and_postbox_fields() {
        let request = build(&claimed(), 1_700_000_000).unwrap();
        let header = |name: &str| request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("webhook-id"), Some("00000000-0000-0000-0000-000000000007"));
        assert_eq!(header("webhook-timestamp"), Some("1700000000"));
        assert_eq!(header("postbox-attempt"), Some("2"));
        assert_eq!(header("postbox-event-type"), Some("post.updated"));
        assert_eq!(header("x-team"), Some("blue"));
        let key = SigningKey::from_secret(&claimed().secrets[0]).unwrap();
        let signature = header("webhook-signature").unwrap();
        assert!(signing::verify(
            &key,
            header("webhook-id").unwrap(),
            1_700_000_000,
            &request.body,
            signature
        ));
    }

    #[test]
    fn the_body_embeds_json_text_verbatim_however_deep() {
        let mut delivery = claimed();
        delivery.event_type = "quote\"d".into();
        delivery.payload = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        delivery.actor = Some(r#"{"id": 7}"#.into());
        let request = build(&delivery, 0).unwrap();
        let body = String::from_utf8(request.body).unwrap();
        assert!(
            body.starts_with(r#"{"type":"quote\"d","timestamp":"2026-11-23T01:02:03.000004Z","data":[[[["#)
        );
        assert!(
            body.ends_with(r#"]]]],"previous":{"title":"old"},"actor":{"id": 7}}"#),
            "{}",
            &body[body.len() - 80..]
        );
    }

    #[test]
    fn headers_http_cannot_carry_or_that_belong_to_one_hop_are_errors() {
        for (headers, expected) in [
            (json!({"X-Bell": "a\u{7}b"}), "control characters"),
            (json!({"X-Line": "a\r\nInjected: 1"}), "control characters"),
            (json!({"Bad Name": "x"}), "not a valid HTTP header name"),
            (json!({"Transfer-Encoding": "chunked"}), "belongs to one hop"),
            (json!({"TE": "trailers"}), "belongs to one hop"),
            (json!({"Webhook-Signature": "v1,forged"}), "set by postbox"),
            (json!({"X-Number": 7}), "not a string"),
        ] {
            let mut delivery = claimed();
            delivery.headers = headers.clone();
            let err = build(&delivery, 0).unwrap_err();
            assert!(err.contains(expected) && err.contains("fix the endpoint's headers"), "{headers}: {err}");
        }
    }

    #[test]
    fn an_unusable_secret_is_an_error_not_a_panic() {
        let mut delivery = claimed();
        delivery.secrets = vec!["not-a-secret".into()];
        assert!(build(&delivery, 0).unwrap_err().contains("unusable endpoint secret"));
    }
}
