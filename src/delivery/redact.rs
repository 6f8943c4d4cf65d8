//! What of a request or response may be stored and shown: credentials an
//! endpoint sends in its own headers are masked, and a receiver's headers are
//! kept only up to a size.

use serde_json::{Map, Value};

/// Shown instead of a credential's value.
pub const MASK: &str = "***";

/// Response headers kept per attempt, names and values together.
pub const MAX_RESPONSE_HEADER_BYTES: usize = 16 * 1024;

/// Whether a header carries a credential, by its name: the standard ones,
/// and the names APIs give their keys and tokens.
pub fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
        || ["token", "secret", "password", "passwd", "key", "auth", "credential", "session"]
            .iter()
            .any(|word| name.contains(word))
}

/// A header object (name to value) with every credential's value masked.
pub fn mask_credentials(headers: Value) -> Value {
    match headers {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(name, value)| {
                    let value = if is_credential(&name) { Value::from(MASK) } else { value };
                    (name, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A header object built from `headers`, repeated names joined with ", ",
/// keeping at most `max_bytes`; what did not fit is counted under
/// `postbox-omitted-headers`.
pub fn headers_json<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>, max_bytes: usize) -> Value {
    let mut map = Map::new();
    let (mut kept, mut omitted) = (0usize, 0usize);
    for (name, value) in headers {
        let size = name.len() + value.len();
        if kept + size > max_bytes {
            omitted += 1;
            continue;
        }
        kept += size;
        match map.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name.to_owned(), Value::from(value));
            }
        }
    }
    if omitted > 0 {
        map.insert(
            "postbox-omitted-headers".to_owned(),
            Value::from(format!("{omitted} over {max_bytes} bytes")),
        );
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn credentials_are_masked_and_other_headers_kept() {
        let headers = json!({"authorization": "Bearer abc", "x-api-key": "k", "X-Auth-Token": "t",
                             "X-Functions-Key": "f", "Ocp-Apim-Subscription-Key": "o", "X-Credential": "c",
                             "x-team": "blue", "webhook-id": "msg_1"});
        assert_eq!(
            mask_credentials(headers),
            json!({"authorization": "***", "x-api-key": "***", "X-Auth-Token": "***",
                   "X-Functions-Key": "***", "Ocp-Apim-Subscription-Key": "***", "X-Credential": "***",
                   "x-team": "blue", "webhook-id": "msg_1"})
        );
    }

    #[test]
    fn response_headers_are_kept_up_to_the_cap() {
        let value = "v".repeat(4096);
        let many: Vec<(String, String)> = (0..90).map(|i| (format!("x-h{i}"), value.clone())).collect();
        let json =
            headers_json(many.iter().map(|(n, v)| (n.as_str(), v.as_str())), MAX_RESPONSE_HEADER_BYTES);
        assert!(json.to_string().len() < MAX_RESPONSE_HEADER_BYTES + 200, "{}", json.to_string().len());
        assert_eq!(json["postbox-omitted-headers"], "87 over 16384 bytes");
        let repeated = [("set", "a"), ("set", "b")];
        assert_eq!(headers_json(repeated.into_iter(), 100), json!({"set": "a, b"}));
    }
}
