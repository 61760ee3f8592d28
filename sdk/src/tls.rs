//! HTTPS for the SDK, the CLI and jobs: rustls with the ring provider, trusting the system's
//! root certificates plus a private CA given in a PEM file (`AIFLOW_CA_CERT`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// The environment variable naming a PEM file of extra trusted CA certificates.
pub const CA_CERT_ENV: &str = "AIFLOW_CA_CERT";

/// How long connecting (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, answer included, unless the client says otherwise.
/// Streams (server-sent events, followed logs) have no such limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS set-up could not be made (an unreadable or empty CA file).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The ring crypto provider, shared by every configuration.
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes ring the process's default rustls provider, so that HTTP clients built without
/// [`http_builder`] (`reqwest::Client::new()`, exporters) can be made. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "{}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The system's root certificates, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        found.certs
    })
}

/// A rustls client configuration trusting the system roots plus the certificates in
/// `ca_cert`, if given.
pub fn client_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = ca_cert {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| {
                TlsError(format!(
                    "{}: a certificate cannot be trusted as a CA: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The CA file named by `AIFLOW_CA_CERT`, if set and not empty.
#[must_use]
pub fn ca_cert_from_env() -> Option<PathBuf> {
    std::env::var_os(CA_CERT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A reqwest client builder speaking HTTPS with [`client_config`] and connecting within
/// [`CONNECT_TIMEOUT`]. It sets no request timeout: add one for anything but streams.
pub fn http_builder(ca_cert: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    install_default_provider();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_cert)?)
        .connect_timeout(CONNECT_TIMEOUT))
}

/// A reqwest client as [`http_builder`] makes it, with the CA of `AIFLOW_CA_CERT`.
pub fn http_client_from_env() -> Result<reqwest::Client, TlsError> {
    http_builder(ca_cert_from_env().as_deref())?
        .build()
        .map_err(|e| TlsError(format!("HTTP client: {e}")))
}
