//! The OpenSSL stack, which alone can complete TLS 1.0 and 1.1 handshakes.
//!
//! On OpenSSL 3 each of these is needed (see TLS-NOTES.md): clear `NO_TLSV1` and
//! `NO_TLSV1_1` (the Mozilla profile sets them and they win over the minimum version),
//! minimum version TLS 1.0, a cipher list that keeps the ECDHE-*-AES-SHA and AES-SHA
//! suites and ends with `@SECLEVEL=0`, and security level 0 set *after* the cipher list
//! (at 1 or 2 TLS 1.0 fails with "no suitable signature algorithm"). Debian's libssl has
//! no 3DES or RC4: a device that speaks only those cannot be served. RSA and ECDSA
//! certificates are loaded side by side; TLS 1.0 clients mostly need RSA.

use super::{TlsError, TlsFacts, TlsVersion};
use crate::config::CertificatePair;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod, SslOptions, SslVersion};
use openssl::x509::X509;

/// Modern AEAD suites first, then the CBC-SHA suites legacy devices need.
const LEGACY_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:\
ECDHE-RSA-AES256-SHA:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA:@SECLEVEL=0";

fn ssl_err(what: &str, e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Pem { path: what.to_string(), problem: e.to_string() }
}

/// Builds the OpenSSL acceptor: TLS 1.0 up to 1.3, legacy suites, every certificate.
pub fn openssl_acceptor(pairs: &[CertificatePair]) -> Result<SslAcceptor, TlsError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| ssl_err("OpenSSL", e))?;
    b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    b.set_min_proto_version(Some(SslVersion::TLS1)).map_err(|e| ssl_err("OpenSSL minimum version", e))?;
    b.set_cipher_list(LEGACY_CIPHERS).map_err(|e| ssl_err("OpenSSL cipher list", e))?;
    b.set_security_level(0);
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
