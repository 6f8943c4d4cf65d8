//! Tenant tokens: short-lived bearer tokens that see one tenant's endpoints,
//! deliveries and attempts, for a customer portal. Only each token's SHA-256
//! digest is stored, so the table gives away no token; a lookup is by digest
//! (an index probe), so its timing tells nothing about a token's contents.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::{Access, AdminAccess, Error, Result};
use crate::config::{format_duration, parse_duration};

/// Every tenant token begins with this, so that the API tells one from a
/// mistyped admin token without a lookup, and secret scanners can find them.
pub const PREFIX: &str = "pbt_";
/// How long a token works when the request does not say.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);
/// The longest a token may work: a portal link is not a standing credential.
pub const MAX_EXPIRY: Duration = Duration::from_secs(30 * 86_400);

/// What minting takes: the API's body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenantToken {
    pub tenant: String,
    /// `15m`, `1h`, `7d`…; [`DEFAULT_EXPIRY`] when absent, at most [`MAX_EXPIRY`].
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A new token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantToken {
    pub token: String,
    pub tenant: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// What a bearer token that looks like a tenant token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Valid(Access),
    Expired { expires_at: String },
    Unknown,
}

/// Whether `bearer` claims to be a tenant token (it may still be unknown).
pub fn looks_like_one(bearer: &str) -> bool {
    bearer.starts_with(PREFIX)
}

/// Makes a token for `new.tenant` that works for `new.expires_in`.
pub async fn mint(client: &Client, _: AdminAccess, new: &NewTenantToken) -> Result<TenantToken> {
    if new.tenant.trim().is_empty() {
        return Err(Error::Invalid("tenant must not be empty".into()));
    }
    let expires_in = expiry(new.expires_in.as_deref())?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let row = client
        .query_one(
            "insert into postbox.tenant_tokens (token_sha256, tenant, expires_at)
             values ($1, $2, now() + make_interval(secs => $3))
             returning postbox.rfc3339(expires_at) as expires_at",
            &[&digest(&token), &new.tenant, &expires_in.as_secs_f64()],
        )
        .await?;
    Ok(TenantToken { token, tenant: new.tenant.clone(), expires_at: row.try_get("expires_at")? })
}

/// Looks `token` up by its digest.
pub async fn check(client: &Client, token: &str) -> Result<Check> {
    let row = client
        .query_opt(
            "select tenant, postbox.rfc3339(expires_at) as expires_at, expires_at > now() as valid
             from postbox.tenant_tokens where token_sha256 = $1",
            &[&digest(token)],
        )
        .await?;
    let Some(row) = row else { return Ok(Check::Unknown) };
    let expires_at: String = row.try_get("expires_at")?;
    if !row.try_get::<_, bool>("valid")? {
        return Ok(Check::Expired { expires_at });
    }
    Ok(Check::Valid(Access::Tenant { tenant: row.try_get("tenant")?, expires_at }))
}

/// `expires_in` as a duration within (0, [`MAX_EXPIRY`]].
fn expiry(expires_in: Option<&str>) -> Result<Duration> {
    let Some(text) = expires_in else { return Ok(DEFAULT_EXPIRY) };
    let duration = parse_duration(text)
        .map_err(|err| Error::Invalid(format!("the expiry (expires_in, or --expires): {err}")))?;
    if duration.is_zero() || duration > MAX_EXPIRY {
        return Err(Error::Invalid(format!(
            "the expiry (expires_in, or --expires) must be more than 0s and at most {}, not {text:?}",
            format_duration(MAX_EXPIRY)
        )));
    }
    Ok(duration)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_defaults_to_an_hour_and_is_bounded() {
        assert_eq!(expiry(None).unwrap(), DEFAULT_EXPIRY);
        assert_eq!(expiry(Some("15m")).unwrap(), Duration::from_secs(900));
        assert_eq!(expiry(Some("30d")).unwrap(), MAX_EXPIRY);
        for bad in ["0s", "31d", "soon", "", "-1h"] {
            let err = expiry(Some(bad)).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad}: {err}");
            assert!(err.to_string().contains("expires_in"), "{bad}: {err}");
        }
    }
}
