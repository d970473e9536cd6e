//! The OpenSSL stack, which alone can complete TLS 1.0 and 1.1 handshakes, and serves the
//! TLS 1.2 hellos rustls cannot (CBC or static-RSA suites, where a profile has them).
//!
//! Every acceptor is built from an exact policy ([`OpenSslPolicy`], from the endpoint's
//! [`super::profile::TlsPolicy`]): never OpenSSL's defaults. For TLS 1.0/1.1 on OpenSSL 3
//! each of these is needed (see TLS-NOTES.md): clear `NO_TLSV1` and `NO_TLSV1_1` (the
//! Mozilla profile sets them and they win over the minimum version), minimum version
//! TLS 1.0, a cipher list with the AES-SHA suites ending with `@SECLEVEL=0`, and security
//! level 0 set *after* the cipher list (at 1 or 2 TLS 1.0 fails with "no suitable
//! signature algorithm"). Debian's libssl has no 3DES or RC4: a device that speaks only
//! those cannot be served. RSA and ECDSA certificates are loaded side by side; TLS 1.0
//! clients mostly need RSA.

use super::{TlsError, TlsFacts, TlsVersion};
use super::CertificatePair;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslOptions, SslVersion};
use openssl::x509::X509;

fn ssl_err(what: &str, e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Pem { path: what.to_string(), problem: e.to_string() }
}

fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Ssl3 | TlsVersion::Tls10 => SslVersion::TLS1,
        TlsVersion::Tls11 => SslVersion::TLS1_1,
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    }
}

/// What one OpenSSL acceptor serves: a version range and exact suite lists.
pub struct OpenSslPolicy<'a> {
    pub min: TlsVersion,
    pub max: TlsVersion,
    /// `SSL_CTX_set_cipher_list`: TLS 1.0-1.2 suites, OpenSSL names, the server's order.
    pub cipher_list: &'a str,
    /// `SSL_CTX_set_ciphersuites`: TLS 1.3 suites (empty when `max` is below 1.3).
    pub ciphersuites: &'a str,
}

/// Builds an OpenSSL acceptor that serves exactly `policy`, with every certificate:
/// the server's suite order, the groups and signature schemes of [`profile`], no
/// compression, no renegotiation at all (so none initiated by the client; the
/// renegotiation_info extension of RFC 5746 is still answered), and security level 0
/// only when TLS 1.0/1.1 must complete.
pub fn openssl_acceptor(pairs: &[CertificatePair], policy: &OpenSslPolicy<'_>) -> Result<SslAcceptor, TlsError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| ssl_err("OpenSSL", e))?;
    b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
    b.set_min_proto_version(Some(ssl_version(policy.min))).map_err(|e| ssl_err("OpenSSL minimum version", e))?;
    b.set_max_proto_version(Some(ssl_version(policy.max))).map_err(|e| ssl_err("OpenSSL maximum version", e))?;
    let legacy = policy.min.is_legacy();
    if policy.cipher_list.is_empty() {
        // Nothing below TLS 1.3: an empty TLS 1.2 list is refused by OpenSSL, so name one
        // suite that the version range can never reach.
        b.set_cipher_list("ECDHE-RSA-AES128-GCM-SHA256").map_err(|e| ssl_err("OpenSSL cipher list", e))?;
    } else {
        let list = if legacy { format!("{}:@SECLEVEL=0", policy.cipher_list) } else { policy.cipher_list.to_string() };
        b.set_cipher_list(&list).map_err(|e| ssl_err("OpenSSL cipher list", e))?;
    }
    if policy.max == TlsVersion::Tls13 {
        b.set_ciphersuites(policy.ciphersuites).map_err(|e| ssl_err("OpenSSL TLS 1.3 suites", e))?;
    }
    b.set_groups_list(&super::profile::GROUPS.join(":")).map_err(|e| ssl_err("OpenSSL groups", e))?;
    // The schemes rustls signs with, on every endpoint: a TLS 1.2 client that sends no
    // signature_algorithms (its default is SHA-1, RFC 5246 §7.4.1.4.1) fails on both stacks.
    b.set_sigalgs_list(super::profile::SIGALGS).map_err(|e| ssl_err("OpenSSL signature algorithms", e))?;
    if legacy {
        // After the cipher list (TLS-NOTES.md): at level 1 or 2 TLS 1.0 fails.
        b.set_security_level(0);
    }
    // Read whatever has arrived into OpenSSL's record buffer instead of a header read and
    // a body read per record (a TLS 1.0 client's second flight is three records).
    b.set_read_ahead(true);
    for pair in pairs {
        let cert_path = pair.cert.display().to_string();
        let key_path = pair.key.display().to_string();
        let pem = std::fs::read(&pair.cert).map_err(|error| TlsError::Read { path: cert_path.clone(), error })?;
        let chain = X509::stack_from_pem(&pem).map_err(|e| ssl_err(&cert_path, e))?;
        let Some((leaf, rest)) = chain.split_first() else {
            return Err(TlsError::Pem { path: cert_path, problem: "no CERTIFICATE block found".into() });
        };
        let key_pem = std::fs::read(&pair.key).map_err(|error| TlsError::Read { path: key_path.clone(), error })?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| ssl_err(&key_path, e))?;
        b.set_certificate(leaf).map_err(|e| ssl_err(&cert_path, e))?;
        b.set_private_key(&key).map_err(|e| ssl_err(&key_path, e))?;
        b.check_private_key().map_err(|e| ssl_err(&cert_path, e))?;
        for extra in rest {
            b.add_extra_chain_cert(extra.clone()).map_err(|e| ssl_err(&cert_path, e))?;
        }
    }
    Ok(b.build())
}

/// The facts of a finished OpenSSL handshake.
pub fn openssl_facts(ssl: &openssl::ssl::SslRef, hello: Option<&super::hello::HelloInfo>) -> TlsFacts {
    let version = match ssl.version_str() {
        "TLSv1.3" => TlsVersion::Tls13,
        "TLSv1.2" => TlsVersion::Tls12,
        "TLSv1.1" => TlsVersion::Tls11,
        "TLSv1" => TlsVersion::Tls10,
        _ => TlsVersion::Ssl3,
    };
    let cipher = ssl
        .current_cipher()
        .map(|c| c.standard_name().unwrap_or(c.name()).to_string())
        .unwrap_or_else(|| "unknown".into());
    TlsFacts {
        version,
        cipher,
        sni: ssl.servername(openssl::ssl::NameType::HOST_NAME).map(String::from),
        fingerprint: hello.map(|h| h.fingerprint.clone()),
        offered_max: hello.map(|h| h.offered_max),
    }
}
