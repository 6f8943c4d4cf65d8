//! TLS to PostgreSQL with libpq's `sslmode` meanings, so that a
//! `DATABASE_URL` that works with psql works here too:
//!
//! | sslmode | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | no | – |
//! | `allow`, `prefer` (the default) | when the server offers it | no |
//! | `require` | yes | no (as `verify-ca` when `sslrootcert` is given, like libpq) |
//! | `verify-ca` | yes | chain, against `sslrootcert` or the system's roots |
//! | `verify-full` | yes | chain and host name |
//!
//! tokio-postgres itself knows only disable/prefer/require and no
//! `sslrootcert`, so both are taken out of the URL here and applied to the
//! rustls configuration.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("sslrootcert {path}: {message}")]
    RootCert { path: PathBuf, message: String },
    #[error("no trusted root certificates to verify the server with (give sslrootcert)")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid connection string: {0}; expected {forms}", forms = super::URL_FORMS)]
    Conninfo(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    mode: SslMode,
    verify: Verify,
    root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (URL or key=value form);
/// returns what is left, for tokio-postgres, and the TLS options.
pub fn split(url: &str) -> Result<(String, TlsOptions), Error> {
    let mut sslmode = None;
    let mut root_cert = None;
    let rest = if let Some((base, query)) = url.split_once('?') {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            match key {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        let mut kept = Vec::new();
        for (key, value) in conninfo_pairs(url)? {
            match key.as_str() {
                "sslmode" => sslmode = Some(value),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))),
            }
        }
        kept.join(" ")
    };
    let (mode, verify) = match sslmode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if root_cert.is_some() => (SslMode::Require, Verify::Chain),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::ChainAndName),
        other => return Err(Error::SslMode(other.to_owned())),
    };
    Ok((rest, TlsOptions { mode, verify, root_cert }))
}

/// The `key = value` pairs of a libpq key/value connection string: spaces
/// around `=` allowed, values bare or in single quotes, `\` escaping the
/// next character in either. Split on whitespace alone, `sslmode = require`
/// would be missed, and TLS quietly not required.
fn conninfo_pairs(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::Conninfo(format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(Error::Conninfo(format!("unterminated quoted value for {key:?}"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

impl TlsOptions {
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// The connector for tokio-postgres. Reads the root certificates when the
    /// mode verifies the server.
    pub fn connector(&self) -> Result<MakeRustlsConnect, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verify {
            Verify::Nothing => Arc::new(Unverified(provider)),
            Verify::Chain | Verify::ChainAndName => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                    .build()
                    .map_err(|err| Error::Rustls(rustls::Error::General(err.to_string())))?;
                if self.verify == Verify::Chain {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let error = |message: String| Error::RootCert { path: path.clone(), message };
                for cert in CertificateDer::pem_file_iter(path).map_err(|err| error(err.to_string()))? {
                    roots
                        .add(cert.map_err(|err| error(err.to_string()))?)
                        .map_err(|err| error(err.to_string()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert); // skip certificates rustls cannot use
                }
            }
        }
        if roots.is_empty() {
            return Err(Error::NoRoots);
        }
        Ok(roots)
    }
}

/// libpq's `require`: encrypted, but any certificate will do. Handshake
/// signatures are still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root; the host name
/// need not match (webpki checks the chain before the name).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url_and_keep_their_meaning() {
        let (rest, tls) =
            split("postgres://u:p@db.example.com:5432/app?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(rest, "postgres://u:p@db.example.com:5432/app?application_name=x");
        assert_eq!((tls.mode, tls.verify), (SslMode::Require, Verify::ChainAndName));

        let (rest, tls) = split("postgres://db/app?sslrootcert=%2Fetc%2Fca%20x.pem&sslmode=require").unwrap();
        assert_eq!(rest, "postgres://db/app");
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(
            tls.verify,
            Verify::Chain,
            "require with a root certificate verifies the chain, as in libpq"
        );

        let (rest, tls) = split("host=db user=app sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host='db' user='app'");
        assert_eq!((tls.mode, tls.verify), (SslMode::Require, Verify::Chain));

        let (_, tls) = split("postgres://db/app").unwrap();
        assert_eq!((tls.mode, tls.verify), (SslMode::Prefer, Verify::Nothing), "libpq's default");
        let (_, tls) = split("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(tls.mode, SslMode::Disable);

        let err = split("postgres://db/app?sslmode=always").unwrap_err();
        assert!(err.to_string().contains("\"always\""), "{err}");
    }

    #[test]
    fn key_value_strings_are_read_as_libpq_reads_them() {
        // Spaces around "=" and quoted values: TLS must not quietly drop to prefer.
        let (rest, tls) =
            split("host = db  sslmode = verify-full sslrootcert = '/etc/my ca.pem' password='it\\'s x'")
                .unwrap();
        assert_eq!((tls.mode, tls.verify), (SslMode::Require, Verify::ChainAndName));
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/my ca.pem")));
        assert_eq!(rest, r"host='db' password='it\'s x'");
        let config: tokio_postgres::Config = rest.parse().expect("tokio-postgres reads what is left");
        assert_eq!(config.get_password(), Some(&b"it's x"[..]));

        let (_, tls) = split(r"sslmode=require dbname=a\ b").unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        assert!(split("host=db sslmode").unwrap_err().to_string().contains("missing \"=\""));
        assert!(split("password='open").unwrap_err().to_string().contains("unterminated"));
    }
}
