//! Typed settings, layered with the `config` crate: embedded defaults, then
//! `postbox.toml` (or `--config FILE`), then `DATABASE_URL`, then
//! `POSTBOX_<SECTION>__<KEY>` environment variables.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, str::FromStr, time::Duration};

use config::{Config, File, FileFormat};
use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::Value;

const DEFAULTS: &str = include_str!("config.default.toml");
const ENV_PREFIX: &str = "POSTBOX_";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown configuration key `{0}`")]
    UnknownKey(String),
    #[error("invalid value for `{key}`: {message}")]
    InvalidValue { key: String, message: String },
    /// The config crate's message, passwords masked: a syntax error quotes
    /// the line it is on.
    #[error("{0}")]
    Config(String),
}

impl From<config::ConfigError> for Error {
    fn from(err: config::ConfigError) -> Self {
        Error::Config(mask_passwords_in(&err.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub relay: RelaySettings,
    pub delivery: DeliverySettings,
    pub network: NetworkSettings,
    pub admin: AdminSettings,
    pub retention: RetentionSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    #[serde(deserialize_with = "optional_secret")]
    pub url: Option<Secret>,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wakeup {
    /// LISTEN on channel `postbox`, with polling as the fallback.
    Notify,
    /// Poll only; apps' inserts skip NOTIFY entirely.
    Poll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub batch_size: u32,
    pub concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    pub wakeup: Wakeup,
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// false: the relay's own transactions do not wait for the WAL flush.
    pub synchronous_commit: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    pub retry_jitter: f64,
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    #[serde(deserialize_with = "byte_size")]
    pub max_response_body: usize,
    /// The largest request body the relay sends; a bigger event fails.
    #[serde(deserialize_with = "byte_size")]
    pub max_request_body: usize,
    pub endpoint_concurrency: usize,
    #[serde(deserialize_with = "duration")]
    pub disable_endpoint_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    pub allow_private: bool,
    #[serde(deserialize_with = "cidr_list")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "optional_secret")]
    pub token: Option<Secret>,
    /// Host names the admin server answers to besides IP literals and
    /// localhost (a browser reaching it under any other name is refused).
    #[serde(deserialize_with = "string_list")]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`) whose pages may embed the web page in
    /// a frame, as an app shows its tenants their portal; none by default.
    #[serde(deserialize_with = "origin_list")]
    pub frame_ancestors: Vec<String>,
}

/// The shortest admin token accepted off loopback: a guessable token is no guard.
pub const MIN_TOKEN_BYTES: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Finished events older than this are deleted with their deliveries and
    /// attempts; zero keeps everything.
    #[serde(deserialize_with = "duration")]
    pub period: Duration,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

/// A value that must never reach a log line or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Settings {
    /// Loads settings from the defaults, `file` (or `./postbox.toml` if it
    /// exists) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(File::from(path).required(true)),
            None => builder.add_source(File::with_name("postbox.toml").required(false)),
        };
        for (key, value) in env_overrides(env) {
            builder = builder.set_override(key, value)?;
        }
        let config = builder.build()?;

        let known = flatten(&config_as_json(
            &Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml)).build()?,
        )?);
        let given = flatten(&config_as_json(&config)?);
        if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
            return Err(Error::UnknownKey(unknown.clone()));
        }
        for (key, value) in &given {
            check_key(key, value)?;
        }
        let settings: Settings = config.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |key: &str, message: String| Err(Error::InvalidValue { key: key.to_owned(), message });
        if self.database.pool_size < 2 {
            return invalid("database.pool_size", "must be at least 2".into());
        }
        if self.relay.batch_size == 0 {
            return invalid("relay.batch_size", "must be at least 1".into());
        }
        if self.relay.concurrency == 0 {
            return invalid("relay.concurrency", "must be at least 1".into());
        }
        if self.relay.poll_interval.is_zero() {
            return invalid("relay.poll_interval", "must be longer than 0s".into());
        }
        if self.relay.lease <= self.delivery.timeout {
            return invalid(
                "relay.lease",
                format!(
                    "{} must be longer than delivery.timeout ({})",
                    humantime::format_duration(self.relay.lease),
                    humantime::format_duration(self.delivery.timeout)
                ),
            );
        }
        if let Some(token) = &self.admin.token {
            if !self.admin.listen.ip().is_loopback() && token.expose().len() < MIN_TOKEN_BYTES {
                return invalid(
                    "admin.token",
                    format!("must be at least {MIN_TOKEN_BYTES} bytes when admin.listen is off loopback"),
                );
            }
        }
        if self.delivery.timeout.is_zero() {
            return invalid("delivery.timeout", "must be longer than 0s".into());
        }
        if self.delivery.retry_schedule.is_empty() {
            return invalid("delivery.retry_schedule", "needs at least one entry".into());
        }
        if self.delivery.endpoint_concurrency == 0 {
            return invalid("delivery.endpoint_concurrency", "must be at least 1".into());
        }
        if self.retention.interval.is_zero() {
            return invalid("retention.interval", "must be longer than 0s".into());
        }
        if !(0.0..1.0).contains(&self.delivery.retry_jitter) {
            return invalid("delivery.retry_jitter", "must be at least 0 and below 1".into());
        }
        Ok(())
    }

    /// The database URL, or an error naming the key and how to set it.
    pub fn database_url(&self) -> Result<&str, Error> {
        match &self.database.url {
            Some(url) => Ok(url.expose()),
            None => Err(Error::InvalidValue {
                key: "database.url".into(),
                message: "not set (set DATABASE_URL, POSTBOX_DATABASE__URL or [database] url)".into(),
            }),
        }
    }

    /// The effective configuration as flat `section.key` pairs, secrets masked.
    pub fn masked(&self) -> BTreeMap<&'static str, Value> {
        let d = |d: Duration| Value::from(format_duration(d));
        let schedule =
            self.delivery.retry_schedule.iter().map(|s| format_duration(*s)).collect::<Vec<_>>().join(",");
        BTreeMap::from([
            ("database.url", self.database.url.as_ref().map(|u| mask_url_password(u.expose())).into()),
            ("database.pool_size", self.database.pool_size.into()),
            ("relay.batch_size", self.relay.batch_size.into()),
            ("relay.concurrency", self.relay.concurrency.into()),
            ("relay.poll_interval", d(self.relay.poll_interval)),
            ("relay.wakeup", serde_json::to_value(self.relay.wakeup).unwrap_or_default()),
            ("relay.lease", d(self.relay.lease)),
            ("relay.shutdown_grace", d(self.relay.shutdown_grace)),
            ("relay.synchronous_commit", self.relay.synchronous_commit.into()),
            ("delivery.timeout", d(self.delivery.timeout)),
            ("delivery.connect_timeout", d(self.delivery.connect_timeout)),
            ("delivery.retry_schedule", schedule.into()),
            ("delivery.retry_jitter", self.delivery.retry_jitter.into()),
            ("delivery.max_retry_after", d(self.delivery.max_retry_after)),
            ("delivery.max_response_body", format_byte_size(self.delivery.max_response_body).into()),
            ("delivery.max_request_body", format_byte_size(self.delivery.max_request_body).into()),
            ("delivery.endpoint_concurrency", self.delivery.endpoint_concurrency.into()),
            ("delivery.disable_endpoint_after", d(self.delivery.disable_endpoint_after)),
            ("network.allow_private", self.network.allow_private.into()),
            (
                "network.allow_cidrs",
                self.network.allow_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",").into(),
            ),
            ("admin.listen", self.admin.listen.to_string().into()),
            ("admin.allowed_hosts", self.admin.allowed_hosts.join(",").into()),
            ("admin.frame_ancestors", self.admin.frame_ancestors.join(",").into()),
            ("admin.token", self.admin.token.as_ref().map(|_| "***").into()),
            ("retention.period", d(self.retention.period)),
            ("retention.interval", d(self.retention.interval)),
        ])
    }
}

/// `DATABASE_URL`, then every `POSTBOX_SECTION__KEY`, as (`section.key`, value).
/// Variables without a `__` (like `POSTBOX_TEST_DATABASE_URL`) are not settings.
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut database_url = None;
    let mut sectioned = Vec::new();
    for (name, value) in env {
        if name == "DATABASE_URL" {
            database_url = Some(("database.url".to_owned(), value));
        } else if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            if rest.contains("__") {
                sectioned.push((rest.to_ascii_lowercase().replace("__", "."), value));
            }
        }
    }
    sectioned.sort();
    database_url.into_iter().chain(sectioned).collect()
}

fn config_as_json(config: &Config) -> Result<Value, Error> {
    Ok(config.clone().try_deserialize::<Value>()?)
}

fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&path, child, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// Deserializes the defaults with only `key` changed to `value`, so that a bad
/// value is reported with its full key (config's own errors name the section).
fn check_key(key: &str, value: &Value) -> Result<(), Error> {
    let value: config::Value = match value {
        Value::Bool(b) => (*b).into(),
        Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or_default().into(),
        Value::Number(n) => n.as_f64().unwrap_or_default().into(),
        Value::String(s) => s.clone().into(),
        other => other.to_string().into(),
    };
    let single = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .set_override(key, value)?
        .build()?;
    match single.try_deserialize::<Settings>() {
        Ok(_) => Ok(()),
        Err(err) => {
            let message = err.to_string();
            let message = message.rsplit_once(" for key `").map_or(message.as_str(), |(m, _)| m);
            Err(Error::InvalidValue { key: key.to_owned(), message: mask_passwords_in(message) })
        }
    }
}

/// `url` with every password libpq or tokio-postgres would read from it
/// replaced by `***`: a URL's userinfo (`postgres://u:p@h1,h2/db`) and its
/// `password` query parameter (percent-encoded or not), or a key/value
/// string's `password = 'a b'` (libpq quoting and backslash escapes). Keys
/// match in any case and by their ending (`sslpassword`); when unsure, more is
/// masked rather than less.
pub fn mask_url_password(url: &str) -> String {
    let is_url = url
        .trim_start()
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme.chars().all(is_scheme_char));
    if is_url {
        mask_url(url)
    } else {
        mask_keyword_values(url)
    }
}

/// `text` (an error message, say) with the passwords of the connection
/// strings in it masked, as [`mask_url_password`] does.
pub fn mask_passwords_in(text: &str) -> String {
    let text = mask_keyword_values(text);
    let mut masked = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(separator) = rest.find("://") {
        let start = rest[..separator].trim_end_matches(is_scheme_char).len();
        let end = rest[separator..]
            .find(|c: char| c.is_whitespace() || "\"'`".contains(c))
            .map_or(rest.len(), |i| separator + i);
        masked.push_str(&rest[..start]);
        masked.push_str(&mask_url(&rest[start..end]));
        rest = &rest[end..];
    }
    masked.push_str(rest);
    masked
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+.-".contains(c)
}

fn is_password_key(key: &str) -> bool {
    key.trim().to_ascii_lowercase().ends_with("password")
}

fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let mut masked = format!("{scheme}://");
    // Both parsers end the userinfo at its first `@`; taking the last one
    // before the query also masks a password with a raw `@` or `/` in it.
    let rest = match rest.find('@') {
        Some(first_at) => {
            let query = rest[first_at..].find('?').map_or(rest.len(), |i| first_at + i);
            let at = rest[..query].rfind('@').unwrap_or(first_at);
            match rest[..at].split_once(':') {
                Some((user, _)) => {
                    masked.push_str(user);
                    masked.push_str(":***");
                    &rest[at..]
                }
                None => rest,
            }
        }
        None => rest,
    };
    let Some((before, query)) = rest.split_once('?') else {
        masked.push_str(rest);
        return masked;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = url::form_urlencoded::parse(pair.as_bytes()).next().map(|(key, _)| key);
            match pair.split_once('=') {
                Some((raw_key, _)) if key.is_some_and(|key| is_password_key(&key)) => {
                    format!("{raw_key}=***")
                }
                _ => pair.to_owned(),
            }
        })
        .collect();
    format!("{masked}{before}?{}", pairs.join("&"))
}

/// Masks the value after every `…password =` in `text`, read as libpq reads
/// a key/value connection string.
fn mask_keyword_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase(); // same byte offsets as `text`
    let mut masked = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = lower[from..].find("password") {
        from += found + "password".len();
        let Some(value) = text[from..].trim_start().strip_prefix('=') else { continue };
        let value = value.trim_start();
        let start = text.len() - value.len();
        let end = start + conninfo_value_len(value);
        if end > start {
            masked.push_str(&text[copied..start]);
            masked.push_str("***");
            (copied, from) = (end, end);
        }
    }
    masked.push_str(&text[copied..]);
    masked
}

/// The length of the key/value connection string value `s` starts with:
/// quoted up to the closing quote, or unquoted up to whitespace; a backslash
/// escapes the next character in both. Unterminated, it runs to the end.
fn conninfo_value_len(s: &str) -> usize {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_ascii_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

fn optional_secret<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Secret>, D::Error> {
    let value = Option::<String>::deserialize(de)?;
    Ok(value.filter(|v| !v.is_empty()).map(Secret))
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse_duration(&text).map_err(de::Error::custom)
}

fn duration_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_duration)
        .collect::<Result<_, _>>()
        .map_err(de::Error::custom)
}

fn string_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(de)?;
    Ok(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

fn origin_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let text = String::deserialize(de)?;
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|o| origin(o).map_err(de::Error::custom))
        .collect()
}

/// `text` as an origin, `scheme://host[:port]` (http or https, no path, no
/// wildcard), written as browsers write it. It goes into a
/// Content-Security-Policy header, so nothing else may pass.
fn origin(text: &str) -> Result<String, String> {
    let refuse =
        || format!("`{text}` is not an origin; write e.g. https://app.example or http://localhost:3000");
    let url = url::Url::parse(text).map_err(|_| refuse())?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    let plain_host = match url.host() {
        Some(url::Host::Domain(name)) => name
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        None => false,
    };
    if !(bare && plain_host) {
        return Err(refuse());
    }
    Ok(url.origin().ascii_serialization())
}

fn cidr_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let text = String::deserialize(de)?;
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|cidr| {
            cidr.parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    de::Error::custom(format!("`{cidr}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
                })
        })
        .collect()
}

fn byte_size<'de, D: Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
    let text = String::deserialize(de)?;
    parse_byte_size(&text).map_err(de::Error::custom)
}

/// Parses `250ms`, `5s`, `5m`, `2h` (anything humantime accepts).
/// A duration as the documentation writes it (`250ms`, `15s`, `5m`, `2h`,
/// `30d`): the largest unit that divides it, so it reads back as it was set.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    if duration.subsec_nanos() % 1_000_000 == 0 {
        format!("{millis}ms")
    } else {
        humantime::format_duration(duration).to_string()
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("`{text}` is not a duration ({err}); write e.g. 250ms, 5s, 5m, 2h"))
}

/// Formats a size the way [`parse_byte_size`] reads it back.
pub fn format_byte_size(bytes: usize) -> String {
    match bytes {
        0 => "0B".into(),
        b if b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// Parses `512`, `512B`, `64KiB`, `1MiB`, `64KB` (KB = 1000 bytes).
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => usize::MAX,
    };
    match usize::from_str(number) {
        Ok(n) if multiplier != usize::MAX => {
            n.checked_mul(multiplier).ok_or_else(|| format!("`{text}` is too large"))
        }
        _ => Err(format!("`{text}` is not a size; write e.g. 512B, 64KiB, 1MiB")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, Error> {
        Settings::load_from(None, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error(env: &[(&str, &str)]) -> String {
        load(env).expect_err("expected a configuration error").to_string()
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load(&[]).unwrap();
        assert!(s.database.url.is_none());
        assert_eq!(s.database.pool_size, 16);
        assert_eq!(s.relay.batch_size, 500);
        assert_eq!(s.relay.concurrency, 256);
        assert_eq!(s.relay.poll_interval, Duration::from_secs(1));
        assert_eq!(s.delivery.timeout, Duration::from_secs(15));
        let schedule: Vec<u64> = s.delivery.retry_schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(schedule, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(s.delivery.max_response_body, 64 * 1024);
        assert!(!s.network.allow_private);
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:8080");
        assert!(s.admin.token.is_none());
    }

    #[test]
    fn environment_overrides_and_database_url_fallback() {
        let s = load(&[
            ("DATABASE_URL", "postgres://a@b/c"),
            ("POSTBOX_NETWORK__ALLOW_PRIVATE", "true"),
            ("POSTBOX_RELAY__POLL_INTERVAL", "250ms"),
            ("POSTBOX_DELIVERY__RETRY_SCHEDULE", "1s, 2m"),
            ("POSTBOX_DELIVERY__MAX_RESPONSE_BODY", "1MiB"),
            // not a setting: no section separator
            ("POSTBOX_TEST_DATABASE_URL", "postgres://x@y/z"),
        ])
        .unwrap();
        assert_eq!(s.database_url().unwrap(), "postgres://a@b/c");
        assert!(s.network.allow_private);
        assert_eq!(s.relay.poll_interval, Duration::from_millis(250));
        assert_eq!(s.delivery.retry_schedule, [Duration::from_secs(1), Duration::from_secs(120)]);
        assert_eq!(s.delivery.max_response_body, 1 << 20);

        let s = load(&[("DATABASE_URL", "postgres://a@b/c"), ("POSTBOX_DATABASE__URL", "postgres://p@q/r")])
            .unwrap();
        assert_eq!(s.database_url().unwrap(), "postgres://p@q/r");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert_eq!(
            error(&[("POSTBOX_RELAY__BATCHSIZE", "5")]),
            "unknown configuration key `relay.batchsize`"
        );
        assert!(error(&[("POSTBOX_RELAY__BATCH_SIZE", "many")])
            .starts_with("invalid value for `relay.batch_size`"));
        assert!(error(&[("POSTBOX_RELAY__POLL_INTERVAL", "5")])
            .starts_with("invalid value for `relay.poll_interval`"));
        assert!(error(&[("POSTBOX_NETWORK__ALLOW_PRIVATE", "maybe")])
            .starts_with("invalid value for `network.allow_private`"));
        assert!(
            error(&[("POSTBOX_ADMIN__LISTEN", "nowhere")]).starts_with("invalid value for `admin.listen`")
        );
        assert!(error(&[("POSTBOX_RELAY__LEASE", "10s")]).starts_with("invalid value for `relay.lease`"));
        assert!(error(&[("POSTBOX_DELIVERY__RETRY_SCHEDULE", "")])
            .starts_with("invalid value for `delivery.retry_schedule`"));
    }

    #[test]
    fn frame_ancestors_are_origins_only() {
        let s = load(&[("POSTBOX_ADMIN__FRAME_ANCESTORS", "https://App.example/, http://localhost:3000")])
            .unwrap();
        assert_eq!(s.admin.frame_ancestors, ["https://app.example", "http://localhost:3000"]);
        assert!(load(&[]).unwrap().admin.frame_ancestors.is_empty(), "none by default");
        for bad in [
            "*",
            "https://*.example.com",
            "app.example",
            "https://app.example/portal",
            "https://app.example?x",
            "https://user@app.example",
            "javascript:alert(1)",
            "https://a;script-src",
            "https://a'b",
            "'self'",
        ] {
            let err = error(&[("POSTBOX_ADMIN__FRAME_ANCESTORS", bad)]);
            assert!(err.starts_with("invalid value for `admin.frame_ancestors`"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_config_file_is_layered_under_the_environment() {
        let dir = std::env::temp_dir().join(format!("postbox-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("postbox.toml");
        std::fs::write(&file, "[relay]\nbatch_size = 42\nconcurrency = 7\n").unwrap();
        let env = [("POSTBOX_RELAY__CONCURRENCY".to_string(), "9".to_string())];
        let s = Settings::load_from(Some(&file), env).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.relay.batch_size, 42);
        assert_eq!(s.relay.concurrency, 9);
    }

    #[test]
    fn masked_output_hides_passwords_and_tokens() {
        let s =
            load(&[("DATABASE_URL", "postgres://app:hunter2@db/app"), ("POSTBOX_ADMIN__TOKEN", "t0ps3cret")])
                .unwrap();
        let shown = serde_json::to_string(&s.masked()).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("t0ps3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/app"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn every_form_of_database_password_is_masked() {
        for (url, masked) in [
            ("postgres://app:hunter2@db/app", "postgres://app:***@db/app"),
            ("postgresql://app:hunter2@h1:5432,h2:5433/app", "postgresql://app:***@h1:5432,h2:5433/app"),
            ("postgres://app:hun%40ter2@db/app", "postgres://app:***@db/app"),
            ("postgres://:hunter2@db/app", "postgres://:***@db/app"),
            ("postgres://app:hun@ter/2@db/app", "postgres://app:***@db/app"),
            ("postgres://app:hun?ter2@db/app?sslmode=require", "postgres://app:***@db/app?sslmode=require"),
            ("postgres://app@db/app?password=hunter2", "postgres://app@db/app?password=***"),
            (
                "postgres://app@db/app?sslmode=require&password=hunter2&application_name=x",
                "postgres://app@db/app?sslmode=require&password=***&application_name=x",
            ),
            ("postgres://app@db/app?PassWord=hunter2", "postgres://app@db/app?PassWord=***"),
            ("postgres://app@db/app?%70assword=hunter2", "postgres://app@db/app?%70assword=***"),
            ("postgres://app@db/app?sslpassword=hunter2", "postgres://app@db/app?sslpassword=***"),
            ("postgres://app@db/app", "postgres://app@db/app"),
            ("host=db password=hunter2 user=app", "host=db password=*** user=app"),
            ("host=db password = hunter2 user=app", "host=db password = *** user=app"),
            ("host=db password='hun ter2' user=app", "host=db password=*** user=app"),
            (r"host=db password='hun\' ter2' user=app", "host=db password=*** user=app"),
            (r"host=db password=hun\ ter2 user=app", "host=db password=*** user=app"),
            ("host=db PASSWORD=hunter2", "host=db PASSWORD=***"),
            ("host=db password=hunter2://x@y", "host=db password=***"),
            ("host=db password='hun ter2", "host=db password=***"),
        ] {
            assert_eq!(mask_url_password(url), masked, "{url}");
        }
    }

    #[test]
    fn the_forms_masked_are_the_ones_the_driver_reads() {
        for url in [
            "postgres://app:hunter2@h1,h2/app",
            "postgres://app@db/app?password=hunter2",
            "postgres://app@db/app?%70assword=hunter2",
            "host=db password = hunter2 user=app",
            r"host=db password='hunter2\' x' user=app",
            r"host=db password=hunter2\ x user=app",
        ] {
            let config: tokio_postgres::Config = url.parse().unwrap();
            let password = String::from_utf8_lossy(config.get_password().unwrap()).into_owned();
            assert!(password.starts_with("hunter2"), "{url}: {password}");
            assert!(!mask_url_password(url).contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn configuration_errors_mask_database_passwords() {
        let dir = std::env::temp_dir().join(format!("postbox-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("postbox.toml");
        std::fs::write(&file, "[database]\nurl = postgres://app:hunter2@db/app\n").unwrap();
        let unquoted = Settings::load_from(Some(&file), []).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(unquoted.contains("postgres://app:***@db/app"), "{unquoted}");

        let misplaced = error(&[("POSTBOX_DATABASE__POOL_SIZE", "host=db password='hun ter2'")]);
        assert!(misplaced.starts_with("invalid value for `database.pool_size`"), "{misplaced}");
        for shown in [&unquoted, &misplaced] {
            assert!(!shown.contains("hunter2") && !shown.contains("hun ter2"), "{shown}");
        }
    }

    #[test]
    fn passwords_are_masked_anywhere_in_a_message() {
        assert_eq!(
            mask_passwords_in(r#"bad "postgres://a:b@h/db" then password = 'x y' and postgres://c:d@h"#),
            r#"bad "postgres://a:***@h/db" then password = *** and postgres://c:***@h"#
        );
        assert_eq!(mask_passwords_in("password authentication failed"), "password authentication failed");
    }

    proptest::proptest! {
        #[test]
        fn sizes_print_the_way_they_parse(bytes in 0usize..(1 << 40)) {
            proptest::prop_assert_eq!(parse_byte_size(&format_byte_size(bytes)), Ok(bytes));
        }

        #[test]
        fn durations_print_the_way_they_parse(millis in 0u64..(1 << 40)) {
            let duration = Duration::from_millis(millis);
            proptest::prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }

    #[test]
    fn sizes_and_durations_parse_as_documented() {
        assert_eq!(parse_byte_size("64KiB"), Ok(65536));
        assert_eq!(parse_byte_size("512B"), Ok(512));
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert!(parse_byte_size("lots").is_err());
        assert_eq!(format_byte_size(65536), "64KiB");
        for (text, millis) in [
            ("30d", 30 * 86_400_000),
            ("5d", 5 * 86_400_000),
            ("2h", 7_200_000),
            ("1m", 60_000),
            ("15s", 15_000),
            ("250ms", 250),
            ("0s", 0),
        ] {
            assert_eq!(format_duration(Duration::from_millis(millis)), text);
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }
}
