//! TLS to PostgreSQL with libpq's meanings, on rustls (ring provider)
//! through `tokio-postgres-rustls`.
//!
//! The keywords, in a URL's query or the `key=value` form (libpq, "SSL
//! Support", table "SSL Mode Descriptions"):
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no; with a root certificate, as `verify-ca` |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root, for the host name (or IP) connected to |
//!
//! - `sslrootcert`: a PEM file of trusted roots, or `system` for the
//!   operating system's trust store (libpq 16: then `sslmode` defaults to
//!   `verify-full` and a weaker mode is refused). Without it, `verify-ca`
//!   and `verify-full` use `~/.postgresql/root.crt`, as libpq does, and
//!   `require` upgrades to `verify-ca` when that file exists.
//! - `sslcert` and `sslkey`: a client certificate (PEM, with its chain) and
//!   its private key (PEM, PKCS#8, PKCS#1 or SEC1), for servers that require
//!   one (`clientcert=verify-ca|verify-full` in `pg_hba.conf`). Both or
//!   neither; libpq's default files are not read.
//!
//! `allow` is refused: tokio-postgres cannot try a plain connection first.
//! Files are read each time a connection is made, so a rotated certificate
//! is picked up by the next connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::Conninfo;
use super::StoreError;

/// libpq's `sslmode`, less `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, no certificate check (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, certificate signed by a trusted root.
    VerifyCa,
    /// TLS, certificate signed by a trusted root and valid for the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(StoreError::Config(
                "sslmode=allow is not supported (a plain connection cannot be tried first); use prefer or require".into(),
            )),
            other => Err(StoreError::Config(format!(
                "sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// The TLS keywords of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode after libpq's upgrades (`require` with roots checks the CA).
    pub mode: SslMode,
    /// Trusted roots, when the mode checks certificates.
    pub roots: Option<RootCerts>,
    /// Client certificate chain and key files.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// Takes the TLS keywords out of `info` (tokio-postgres does not know
    /// most of them) and applies libpq's defaults and upgrades.
    ///
    /// Errors: an unknown `sslmode`, `allow`, a weak mode with
    /// `sslrootcert=system`, `sslcert` without `sslkey` or the reverse, a
    /// checking mode with no root certificate to check against.
    pub fn take_from(info: &mut Conninfo) -> Result<Self, StoreError> {
        let mode = info.take("sslmode");
        let root = info.take("sslrootcert").filter(|r| !r.is_empty());
        let cert = info.take("sslcert").filter(|c| !c.is_empty());
        let key = info.take("sslkey").filter(|k| !k.is_empty());
        let roots = root.map(|r| match r.as_str() {
            "system" => RootCerts::System,
            _ => RootCerts::File(PathBuf::from(r)),
        });
        let mut mode = match (mode.as_deref(), &roots) {
            (Some(m), _) => SslMode::parse(m)?,
            (None, Some(RootCerts::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        if roots == Some(RootCerts::System) && mode != SslMode::VerifyFull {
            return Err(StoreError::Config(format!(
                "sslrootcert=system needs sslmode=verify-full, not {:?} (as libpq requires)",
                mode
            )));
        }
        let default_root = default_root_cert();
        let roots = match (mode, roots) {
            (_, Some(r)) => Some(r),
            (SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                default_root.filter(|p| p.exists()).map(RootCerts::File)
            }
            _ => None,
        };
        if mode == SslMode::Require && roots.is_some() {
            mode = SslMode::VerifyCa;
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            return Err(StoreError::Config(format!(
                "sslmode={} needs the root certificates to check the server against: \
                 set sslrootcert to a PEM file, or sslrootcert=system for the system's trust store \
                 (~/.postgresql/root.crt does not exist)",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            )));
        }
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(StoreError::Config(
                    "sslcert is set but sslkey is not".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(StoreError::Config(
                    "sslkey is set but sslcert is not".into(),
                ))
            }
        };
        Ok(TlsSettings {
            mode,
            roots,
            client,
        })
    }

    /// tokio-postgres's own mode: it knows only whether TLS is off, tried or
    /// required; the checks are the verifier's.
    pub fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The connector: reads the certificate files now.
    ///
    /// Errors: [`StoreError::Settings`] naming the file that could not be
    /// read or holds no usable certificate or key.
    pub fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.mode) {
            (Some(roots), SslMode::VerifyCa | SslMode::VerifyFull) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(root_store(roots)?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| StoreError::Settings(format!("trusted roots: {e}")))?;
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyHostName(webpki))
                }
            }
            _ => Arc::new(Unchecked(Arc::clone(&provider))),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Settings(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert, "sslcert")?, read_key(key)?)
                .map_err(|e| {
                    StoreError::Settings(format!(
                        "client certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"))
}

fn root_store(roots: &RootCerts) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let (added, _) = store.add_parsable_certificates(read_certs(path, "sslrootcert")?);
            if added == 0 {
                return Err(StoreError::Settings(format!(
                    "sslrootcert {}: no usable CA certificate in it",
                    path.display()
                )));
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(StoreError::Settings(format!(
                    "sslrootcert=system: the system trust store has no certificates{why}"
                )));
            }
        }
    }
    Ok(store)
}

fn read_certs(path: &Path, keyword: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::Settings(format!("{keyword} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(StoreError::Settings(format!(
            "{keyword} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, StoreError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| StoreError::Settings(format!("sslkey {}: {e}", path.display())))
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not
/// checked (libpq's meaning: the server may be reached under any name).
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the
        // chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
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

/// `prefer` and `require`: encrypted, but any certificate is accepted (the
/// handshake's signatures are still checked, so the session is bound to the
/// key the server showed).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(s: &str) -> Result<(TlsSettings, String), StoreError> {
        let mut info = Conninfo::parse(s)?;
        let tls = TlsSettings::take_from(&mut info)?;
        Ok((tls, info.to_string()))
    }

    #[test]
    fn keywords_are_taken_out_and_modes_read_as_libpq_does() {
        let (tls, rest) =
            settings("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x")
                .expect("settings");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Some(RootCerts::File("/ca.pem".into())));
        assert_eq!(rest, "postgres://h/db?application_name=x");
        // require with a root certificate checks the CA (libpq).
        let (tls, _) = settings("host=h sslmode=require sslrootcert=/ca.pem").expect("settings");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        // system roots default to verify-full and refuse weaker modes.
        let (tls, _) = settings("host=h sslrootcert=system").expect("settings");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        let weak = settings("host=h sslrootcert=system sslmode=require").expect_err("weak");
        assert!(weak.to_string().contains("verify-full"), "{weak}");
        let (tls, _) = settings("postgres://h/db").expect("settings");
        assert_eq!(tls.mode, SslMode::Prefer);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        for (s, says) in [
            ("host=h sslmode=allow", "allow is not supported"),
            ("host=h sslmode=verify", "expected disable, prefer"),
            ("host=h sslcert=/c.pem", "sslkey is not"),
            ("host=h sslkey=/k.pem", "sslcert is not"),
        ] {
            let e = settings(s).expect_err(s);
            assert!(e.to_string().contains(says), "{s}: {e}");
        }
        let (tls, _) =
            settings("host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem").expect("settings");
        let Err(e) = tls.connector() else {
            panic!("a missing root file must be refused")
        };
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
