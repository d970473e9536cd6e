//! The TLS client side of delivery: the rustls configuration (aws-lc-rs, TLS 1.2 and 1.3
//! only, RFC 8996) and the trust anchors (the system's CAs, or a `ca_file`) that the
//! smart-host client and the OAuth2 token client share.

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The protocol versions used towards smart hosts: TLS 1.3 and 1.2, nothing older.
pub(crate) static VERSIONS: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration (aws-lc-rs, TLS 1.2 and 1.3) verifying against `roots`. Also used
/// for the OAuth2 token endpoint.
pub(crate) fn client_config(roots: Arc<RootCertStore>) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The system's trusted CAs (loaded once, by rustls-native-certs: on Debian
/// `/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
pub(crate) fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                return Err(format!("no trusted CA certificates were found on this system {why}").trim_end().to_string());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The CA certificates of a PEM file, read at each connection (so a renewed CA needs no restart).
pub(crate) fn load_ca_file(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_file {} holds no CERTIFICATE block", path.display()));
    }
    Ok(Arc::new(roots))
}
