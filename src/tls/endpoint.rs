//! One endpoint's TLS: its acceptors, built from its [`TlsPolicy`], and the choice of the
//! acceptor that serves a ClientHello.
//!
//! Each endpoint has a rustls acceptor and an OpenSSL acceptor serving the same policy,
//! and, where it does not serve TLS 1.0/1.1 itself, an OpenSSL acceptor limited to
//! TLS 1.0/1.1 that completes a legacy handshake only so that the client can read its
//! `421 4.7.66` ([`Route::Explain`]). The choice ([`EndpointTls::route`]) computes the
//! suite the server would pick (its order, the client's offer, the certificates) and
//! sends the hello to the stack that implements that suite, so that a client gets the
//! same suite whichever stack serves it; a hello that shares no suite with the policy is
//! refused before any handshake ([`Refusal::NoSharedSuite`]).

use super::hello::HelloInfo;
use super::legacy::{openssl_acceptor, OpenSslPolicy};
use super::profile::{server_choice, CertKinds, Profile, Suite, TlsPolicy};
use super::{rustls_config, TlsError, TlsVersion};
use super::CertificatePair;
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Which acceptor serves a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// rustls: TLS 1.3, and TLS 1.2 with an ECDHE + AEAD suite.
    Rustls,
    /// OpenSSL with the endpoint's policy: TLS 1.0/1.1 on a legacy endpoint, and TLS 1.2
    /// whose chosen suite rustls does not implement.
    OpenSsl,
    /// OpenSSL limited to TLS 1.0/1.1: the handshake only carries the `421 4.7.66`.
    Explain,
}

/// Why a ClientHello is refused before any handshake, with a fatal alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No suite the client offers is served: handshake_failure.
    NoSharedSuite,
    /// RFC 7507 §3: a hello carrying TLS_FALLBACK_SCSV below the endpoint's highest
    /// version (a client retrying lower after a failure, or an attacker forcing it):
    /// inappropriate_fallback.
    InappropriateFallback,
}

/// TLS_FALLBACK_SCSV (RFC 7507 §6).
const FALLBACK_SCSV: u16 = 0x5600;

/// An endpoint's TLS acceptors and what they serve.
pub struct EndpointTls {
    pub rustls: tokio_rustls::TlsAcceptor,
    pub openssl: Arc<openssl::ssl::SslAcceptor>,
    /// Present when the endpoint does not serve TLS 1.0 and 1.1 itself.
    pub explain: Option<Arc<openssl::ssl::SslAcceptor>>,
    pub policy: TlsPolicy,
    /// The endpoint's versions, sorted.
    pub versions: Vec<TlsVersion>,
    pub certs: CertKinds,
    /// The TLS 1.2 suites a TLS 1.2 session can get: the policy's where the endpoint lists
    /// 1.2; on a TLS 1.3-only endpoint the intermediate ones, to explain with a 421.
    tls12: Vec<&'static Suite>,
}

impl EndpointTls {
    /// Builds the acceptors; `keys` and `certs` are the loaded certificates (see
    /// [`super::load_keys`]), `pairs` their files (OpenSSL reads them itself).
    pub fn new(
        pairs: &[CertificatePair],
        keys: &[Arc<CertifiedKey>],
        certs: CertKinds,
        versions: &[TlsVersion],
        policy: &TlsPolicy,
    ) -> Result<EndpointTls, TlsError> {
        let tls12 = Self::tls12_for(versions, policy);
        let rustls_ids: Vec<u16> = policy.tls13.iter().chain(&tls12).filter(|s| s.rustls_implements()).map(|s| s.id).collect();
        let rustls = tokio_rustls::TlsAcceptor::from(rustls_config(keys, &rustls_ids)?);
        let (min, max) = (versions.first().copied().unwrap_or(TlsVersion::Tls12), versions.last().copied().unwrap_or(TlsVersion::Tls13));
        let cipher_list = policy.openssl_cipher_list();
        let ciphersuites = policy.openssl_ciphersuites();
        let own = OpenSslPolicy { min, max, cipher_list: &cipher_list, ciphersuites: &ciphersuites };
        let openssl = Arc::new(openssl_acceptor(pairs, &own)?);
        let explain = if versions.contains(&TlsVersion::Tls10) && versions.contains(&TlsVersion::Tls11) {
            None
        } else {
            let list: Vec<&str> = TlsPolicy::explain_suites().iter().map(|s| s.openssl).collect();
            let list = list.join(":");
            let p = OpenSslPolicy { min: TlsVersion::Tls10, max: TlsVersion::Tls11, cipher_list: &list, ciphersuites: "" };
            Some(Arc::new(openssl_acceptor(pairs, &p)?))
        };
        Ok(EndpointTls { rustls, openssl, explain, policy: policy.clone(), versions: versions.to_vec(), certs, tls12 })
    }

    fn tls12_for(versions: &[TlsVersion], policy: &TlsPolicy) -> Vec<&'static Suite> {
        if versions.contains(&TlsVersion::Tls12) || versions.iter().any(|v| v.is_legacy()) {
            policy.tls12.clone()
        } else {
            Profile::Intermediate.tls12()
        }
    }

    /// The acceptor for this hello (RFC 8446 §4.1.1 and RFC 5246 §7.4.1.2: the server
    /// picks the version, then the suite by its own order among the client's).
    pub fn route(&self, hello: &HelloInfo) -> Result<Route, Refusal> {
        let v = hello.offered_max;
        let highest = self.versions.last().copied().unwrap_or(TlsVersion::Tls13);
        if hello.ciphers.contains(&FALLBACK_SCSV) && v < highest {
            return Err(Refusal::InappropriateFallback);
        }
        if v.is_legacy() {
            if !self.versions.contains(&v) {
                return if self.explain.is_some() { Ok(Route::Explain) } else { Err(Refusal::NoSharedSuite) };
            }
            return match server_choice(&self.policy.tls12, &hello.ciphers, v, self.certs) {
                Some(_) => Ok(Route::OpenSsl),
                None => Err(Refusal::NoSharedSuite),
            };
        }
        if v == TlsVersion::Tls13 && server_choice(&self.policy.tls13, &hello.ciphers, v, self.certs).is_some() {
            return Ok(Route::Rustls);
        }
        // TLS 1.2 (also for a TLS 1.3 client that shares no TLS 1.3 suite).
        match server_choice(&self.tls12, &hello.ciphers, TlsVersion::Tls12, self.certs) {
            Some(s) if s.rustls_implements() && hello.has_signature_algorithms => Ok(Route::Rustls),
            Some(_) => Ok(Route::OpenSsl),
            None => Err(Refusal::NoSharedSuite),
        }
    }

    /// The suites a session of version `v` can get here, in the server's order: what
    /// `check-config` prints and the tests compare with what completes.
    pub fn suites_at(&self, v: TlsVersion) -> Vec<&'static Suite> {
        let list: Vec<&'static Suite> = match v {
            TlsVersion::Tls13 => self.policy.tls13.clone(),
            TlsVersion::Tls12 => self.tls12.clone(),
            _ if self.versions.contains(&v) => self.policy.tls12.clone(),
            _ => TlsPolicy::explain_suites(),
        };
        list.into_iter().filter(|s| s.usable_at(v) && self.certs.can_serve(s)).collect()
    }

    /// Whether sessions of version `v` are served here, rather than only answered `421`.
    pub fn serves(&self, v: TlsVersion) -> bool {
        self.versions.contains(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::profile::Kx;

    fn hello(max: TlsVersion, ciphers: &[u16]) -> HelloInfo {
        HelloInfo { offered_max: max, ciphers: ciphers.to_vec(), sni: None, fingerprint: String::new(), has_signature_algorithms: true }
    }

    fn endpoint(versions: &[TlsVersion]) -> EndpointTls {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::self_signed_rsa(&["localhost"], 2).unwrap();
        let pair = CertificatePair { cert: dir.path().join("c.pem"), key: dir.path().join("k.pem") };
        std::fs::write(&pair.cert, cert).unwrap();
        std::fs::write(&pair.key, key).unwrap();
        let (keys, certs) = crate::tls::load_keys(std::slice::from_ref(&pair)).unwrap();
        let policy = TlsPolicy::new(versions, None, None, None).unwrap();
        EndpointTls::new(&[pair], &keys, certs, versions, &policy).unwrap()
    }

    #[test]
    fn hellos_go_to_the_stack_of_the_suite_the_server_picks() {
        use TlsVersion::*;
        let std = endpoint(&[Tls12, Tls13]);
        let legacy = endpoint(&[Tls10, Tls11, Tls12, Tls13]);
        assert!(std.explain.is_some() && legacy.explain.is_none());
        let cases: [(&EndpointTls, TlsVersion, &[u16], Result<Route, Refusal>); 10] = [
            (&std, Tls13, &[0x1301, 0xC02F], Ok(Route::Rustls)),
            (&std, Tls12, &[0xC02F, 0x002F], Ok(Route::Rustls)),
            (&std, Tls12, &[0x002F, 0x0035, 0xC013], Err(Refusal::NoSharedSuite)),
            (&std, Tls12, &[0xC02B], Err(Refusal::NoSharedSuite)), // ECDSA suite, RSA certificate only
            (&std, Tls10, &[0x002F], Ok(Route::Explain)),
            (&std, Tls13, &[0x1304, 0x002F], Err(Refusal::NoSharedSuite)),
            (&legacy, Tls12, &[0x002F, 0xC013], Ok(Route::OpenSsl)), // ECDHE-CBC before static RSA
            (&legacy, Tls12, &[0x002F, 0xC02F], Ok(Route::Rustls)),
            (&legacy, Tls10, &[0xC013], Ok(Route::OpenSsl)),
            (&legacy, Tls11, &[0x009C], Err(Refusal::NoSharedSuite)), // GCM needs TLS 1.2
        ];
        for (ep, v, ciphers, want) in cases {
            assert_eq!(ep.route(&hello(v, ciphers)), want, "{v:?} {ciphers:04x?}");
        }
        assert_eq!(std.route(&hello(Tls12, &[0xC02F, 0x5600])), Err(Refusal::InappropriateFallback));
        assert_eq!(std.route(&hello(Tls10, &[0x002F, 0x5600])), Err(Refusal::InappropriateFallback));
        assert_eq!(std.route(&hello(Tls13, &[0x1301, 0x5600])), Ok(Route::Rustls), "no fallback from the highest version");
        let mut no_sigalgs = hello(Tls12, &[0xC02F]);
        no_sigalgs.has_signature_algorithms = false;
        assert_eq!(std.route(&no_sigalgs), Ok(Route::OpenSsl), "rustls needs signature_algorithms at TLS 1.2");
        assert!(std.suites_at(Tls12).iter().all(|s| s.kx == Kx::Ecdhe && s.rustls_implements()));
        assert!(std.suites_at(Tls10).iter().all(|s| s.kx != Kx::Tls13), "explain suites");
    }
}
