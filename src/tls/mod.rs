//! TLS for the endpoints: certificates, the rustls acceptor (TLS 1.2 and 1.3), and the
//! facts a handshake yields. Which suites an endpoint serves is [`profile`]'s; which stack
//! serves a given ClientHello is [`endpoint`]'s.
//!
//! Certificates come from PEM files; RSA and ECDSA pairs may be given together and the
//! resolver picks, per handshake, the first one whose key can sign with a scheme the
//! client offers. Policy and reports see only [`TlsFacts`], whichever stack served the
//! session: rustls, or OpenSSL ([`legacy`]) for hellos rustls cannot serve.

pub mod endpoint;
pub mod hello;
pub mod legacy;
pub mod profile;

pub use endpoint::{EndpointTls, Refusal, Route};
use profile::CertKinds;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// A certificate chain and its private key, both PEM files (`[[tls.certificate]]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file with the certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: std::path::PathBuf,
}

/// A TLS (or SSL) protocol version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// Anything older than TLS 1.0 (SSL 3.0 and below), never served.
    Ssl3,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// Parses a configuration value: "1.0".."1.3" or "TLSv1.0".."TLSv1.3".
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim_start_matches("TLSv") {
            "1.0" | "1" => Some(Self::Tls10),
            "1.1" => Some(Self::Tls11),
            "1.2" => Some(Self::Tls12),
            "1.3" => Some(Self::Tls13),
            _ => None,
        }
    }

    /// From the two-byte wire value (RFC 8446 §4.1.2: 0x0301 is TLS 1.0).
    pub fn from_wire(v: u16) -> Self {
        match v {
            0x0304.. => Self::Tls13,
            0x0303 => Self::Tls12,
            0x0302 => Self::Tls11,
            0x0301 => Self::Tls10,
            _ => Self::Ssl3,
        }
    }

    /// Below TLS 1.2: what this product exists to phase out.
    pub fn is_legacy(self) -> bool {
        self < Self::Tls12
    }

    /// The name used in logs, Received headers and reports: `TLSv1.0` .. `TLSv1.3`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ssl3 => "SSLv3",
            Self::Tls10 => "TLSv1.0",
            Self::Tls11 => "TLSv1.1",
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }

    /// The human name used in replies: `TLS 1.0`.
    pub fn human(self) -> &'static str {
        match self {
            Self::Ssl3 => "SSL 3.0",
            Self::Tls10 => "TLS 1.0",
            Self::Tls11 => "TLS 1.1",
            Self::Tls12 => "TLS 1.2",
            Self::Tls13 => "TLS 1.3",
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a completed handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// The negotiated version.
    pub version: TlsVersion,
    /// The cipher suite's name as the stack gives it: rustls `TLS13_AES_256_GCM_SHA384`,
    /// OpenSSL the RFC name `TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA`.
    pub cipher: String,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
    /// The JA4-style fingerprint of the ClientHello, when it could be parsed.
    pub fingerprint: Option<String>,
    /// The highest version the client offered, when the hello could be parsed.
    pub offered_max: Option<TlsVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS handshake: {0}")]
    Handshake(String),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Pem { path: String, problem: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.display().to_string(), error })
}

/// Loads one certificate chain and its key.
pub fn load_pair(pair: &CertificatePair) -> Result<CertifiedKey, TlsError> {
    let cert_path = pair.cert.display().to_string();
    let key_path = pair.key.display().to_string();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut read_pem(&pair.cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { path: cert_path.clone(), problem: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: cert_path, problem: "no CERTIFICATE block found".into() });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read_pem(&pair.key)?.as_slice())
        .map_err(|e| TlsError::Pem { path: key_path.clone(), problem: e.to_string() })?
        .ok_or_else(|| TlsError::Pem { path: key_path.clone(), problem: "no private key block found".into() })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem { path: key_path, problem: format!("unsupported private key: {e}") })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| TlsError::Pem {
        path: cert_path,
        problem: format!("the certificate does not match its key: {e}"),
    })?;
    Ok(ck)
}

/// Picks, per handshake, the first certificate whose key suits the client.
#[derive(Debug)]
struct MultiCertResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for MultiCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| self.keys.first())
            .cloned()
    }
}

/// Loads every certificate pair for rustls, and tells which key kinds they hold.
pub fn load_keys(pairs: &[CertificatePair]) -> Result<(Vec<Arc<CertifiedKey>>, CertKinds), TlsError> {
    let keys = pairs.iter().map(|p| load_pair(p).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
    let mut kinds = CertKinds::default();
    for k in &keys {
        match k.key.algorithm() {
            rustls::SignatureAlgorithm::RSA => kinds.rsa = true,
            // RFC 8422 §5.5: Ed25519 certificates serve the ECDHE_ECDSA suites too.
            _ => kinds.ecdsa = true,
        }
    }
    Ok((keys, kinds))
}

/// Builds the rustls server configuration for `suites` (wire values, the server's order;
/// those rustls does not implement are skipped). TLS 1.3 is enabled when a TLS 1.3 suite
/// is among them, TLS 1.2 when a TLS 1.2 one is; an endpoint's `tls_versions` are
/// enforced after the handshake, with a readable reply.
pub fn rustls_config(keys: &[Arc<CertifiedKey>], suites: &[u16]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(server_provider(suites));
    let mut protocol_versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    let has = |v| provider.cipher_suites.iter().any(|s| s.version() == v);
    if has(&rustls::version::TLS13) {
        protocol_versions.push(&rustls::version::TLS13);
    }
    if has(&rustls::version::TLS12) {
        protocol_versions.push(&rustls::version::TLS12);
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&protocol_versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(MultiCertResolver { keys: keys.to_vec() }));
    // One ticket is enough for SMTP clients; fewer bytes in the first flight. (None at
    // all would save about 3 % of a handshake's CPU, but an MTA relaying through us,
    // Postfix's smtp client for one, resumes and then skips the RSA signature: 60 %.)
    cfg.send_tls13_tickets = 1;
    // The server's suite order decides (RFC 5246 §7.4.1.2, RFC 8446 §4.1.1).
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// aws-lc-rs with only `suites`, in that order, and the groups of [`profile::GROUPS`]
/// (X25519, P-256, P-384) followed by the X25519MLKEM768 hybrid, which only TLS 1.3
/// clients that offer it get (OpenSSL 3.0 has no ML-KEM; TLS 1.3 is always rustls's).
fn server_provider(suites: &[u16]) -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| suites.contains(&u16::from(s.suite())));
    provider.cipher_suites.sort_by_key(|s| suites.iter().position(|id| *id == u16::from(s.suite())));
    use rustls::NamedGroup as G;
    let order = [G::X25519, G::secp256r1, G::secp384r1, G::X25519MLKEM768];
    provider.kx_groups.retain(|g| order.contains(&g.name()));
    provider.kx_groups.sort_by_key(|g| order.iter().position(|n| *n == g.name()));
    provider
}

/// The facts of a finished rustls handshake.
pub fn rustls_facts(conn: &rustls::ServerConnection, hello: Option<&hello::HelloInfo>) -> TlsFacts {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        _ => TlsVersion::Tls12,
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown")
        .to_string();
    TlsFacts {
        version,
        cipher,
        sni: conn.server_name().map(String::from),
        fingerprint: hello.map(|h| h.fingerprint.clone()),
        offered_max: hello.map(|h| h.offered_max),
    }
}

/// The TLS stack that serves a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Rustls,
    OpenSsl,
}

/// A fatal protocol_version alert (RFC 8446 §6.2, alert 70) in a TLS 1.0 record, the
/// refusal a client understands whatever it offered.
pub const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// A fatal handshake_failure alert (RFC 5246 §7.2.2, alert 40) in a TLS 1.0 record: no
/// suite the client offers is served here.
pub const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28];

/// A fatal inappropriate_fallback alert (RFC 7507 §2, alert 86) in a TLS 1.0 record.
pub const INAPPROPRIATE_FALLBACK_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x56];

/// Generates a self-signed RSA-2048 certificate for `names` (PEM cert, PEM key).
pub fn self_signed_rsa(names: &[&str], days: u32) -> Result<(String, String), openssl::error::ErrorStack> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};

    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", names.first().copied().unwrap_or("localhost"))?;
    name.append_entry_by_text("O", "Mailgate demo")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    // A leaf, not a CA: webpki (rustls, lettre) refuses a CA certificate as an end entity.
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let san = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(&key, MessageDigest::sha256())?;
    let cert = String::from_utf8_lossy(&b.build().to_pem()?).into_owned();
    let key = String::from_utf8_lossy(&key.private_key_to_pem_pkcs8()?).into_owned();
    Ok((cert, key))
}
