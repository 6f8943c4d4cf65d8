//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")),
//! where the key is the base64 part of a `whsec_…` secret.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("secret must start with \"whsec_\"")]
    MissingPrefix,
    #[error("secret is not valid base64 after \"whsec_\"")]
    NotBase64,
}

/// A decoded signing key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    pub fn from_secret(secret: &str) -> Result<Self, Error> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(Error::MissingPrefix)?;
        STANDARD.decode(encoded).map(Self).map_err(|_| Error::NotBase64)
    }

    /// The base64 signature (without the `v1,` prefix) of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// The `webhook-signature` header value: one `v1,<sig>` per key, space-separated,
/// so that receivers holding either secret verify during a rotation.
pub fn signature_header(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|key| format!("v1,{}", key.sign(msg_id, timestamp, body))).collect::<Vec<_>>().join(" ")
}

/// Verifies a `webhook-signature` header as a receiver would: true when any
/// `v1,` signature in it matches (compared in constant time).
pub fn verify(key: &SigningKey, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = key.sign(msg_id, timestamp, body);
    header
        .split(' ')
        .filter_map(|sig| sig.strip_prefix("v1,"))
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
}

/// Compares without an early exit, so timing does not reveal where inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_standard_webhooks_example() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(signature_header(&[key], MSG_ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    /// Signed by the `standardwebhooks` Python library (v1.0): (secret, id, timestamp, body, header).
    const LIBRARY_VECTORS: &[(&str, &str, i64, &str, &str)] = &[
        (
            "whsec_c2VjcmV0LWtleS10aGF0LWlzLWxvbmctZW5vdWdo",
            "0b1f8d34-5f7e-4c61-9a4b-3f6b8a6f2c11",
            1795397595,
            "{\"type\":\"post.updated\",\"timestamp\":\"2026-11-23T01:33:15.155841Z\",\"data\":{\"id\": 1, \"title\": \"caf\u{e9} \u{2603}\"},\"previous\":{\"title\": \"old\"}}",
            "v1,VUHHNr3eCQIkH8Z0yA/n0p44KEvzlkVcQRVsN4w7fRE=",
        ),
        ("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "e", 0, "", "v1,FlGue/iPo4yBFhAZ8VaG2Ga1bFF3cjqxGsh38IWwAUM="),
    ];

    #[test]
    fn matches_signatures_made_by_the_standard_webhooks_library() {
        for (secret, id, timestamp, body, header) in LIBRARY_VECTORS {
            let key = SigningKey::from_secret(secret).unwrap();
            assert_eq!(
                signature_header(std::slice::from_ref(&key), id, *timestamp, body.as_bytes()),
                *header
            );
            assert!(verify(&key, id, *timestamp, body.as_bytes(), header));
        }
    }

    #[test]
    fn rotation_header_carries_one_signature_per_key_and_either_verifies() {
        let old = SigningKey::from_secret(SECRET).unwrap();
        let new = SigningKey::from_secret("whsec_c2VjcmV0LWtleS10aGF0LWlzLWxvbmctZW5vdWdo").unwrap();
        let header = signature_header(&[new.clone(), old.clone()], MSG_ID, TIMESTAMP, BODY.as_bytes());
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, MSG_ID, TIMESTAMP, BODY.as_bytes(), &header));
        assert!(verify(&new, MSG_ID, TIMESTAMP, BODY.as_bytes(), &header));
        assert!(!verify(&new, MSG_ID, TIMESTAMP + 1, BODY.as_bytes(), &header));
    }

    proptest::proptest! {
        #[test]
        fn any_message_verifies_and_any_change_to_it_does_not(
            key in proptest::collection::vec(proptest::num::u8::ANY, 24..=64),
            id in "[a-zA-Z0-9_-]{1,40}",
            timestamp in 0i64..4_000_000_000,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            flip in proptest::num::usize::ANY,
        ) {
            let key = SigningKey::from_secret(&format!("whsec_{}", STANDARD.encode(&key))).unwrap();
            let header = signature_header(std::slice::from_ref(&key), &id, timestamp, &body);
            proptest::prop_assert!(verify(&key, &id, timestamp, &body, &header));
            proptest::prop_assert!(!verify(&key, &id, timestamp + 1, &body, &header));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip % body.len()] ^= 0x01;
                proptest::prop_assert!(!verify(&key, &id, timestamp, &tampered, &header));
            }
        }
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert_eq!(SigningKey::from_secret("MfKQ9r8GKYqr").unwrap_err(), Error::MissingPrefix);
        assert_eq!(SigningKey::from_secret("whsec_not base64!").unwrap_err(), Error::NotBase64);
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = SigningKey::from_secret(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(***)");
    }
}
