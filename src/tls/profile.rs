//! Cipher-suite profiles: which suites, groups and signature schemes an endpoint serves,
//! the one policy that both TLS stacks are configured from.
//!
//! The profiles follow Mozilla's server-side TLS guidelines (v5.7):
//! - `modern`: TLS 1.3 only.
//! - `intermediate`: TLS 1.3, and TLS 1.2 with ECDHE key exchange and AEAD ciphers only
//!   (AES-GCM, ChaCha20-Poly1305): forward secrecy, no CBC. Mozilla's list without the
//!   finite-field DHE suites, which neither stack here is set up for.
//! - `legacy`: what TLS 1.0/1.1 devices need, for the legacy endpoint: the intermediate
//!   suites first, then ECDHE with AES-CBC, then static-RSA key exchange last. Never RC4,
//!   3DES, export, NULL or anonymous suites (Debian's libssl has no RC4 or 3DES anyway).
//!
//! An endpoint may replace a profile's lists with `tls_ciphers` (TLS 1.0-1.2) and
//! `tls13_ciphersuites`; every name is checked against [`SUITES`], the suites Mailgate
//! knows and considers acceptable, so a weak or unknown name is an error that names its
//! key. rustls serves the suites it implements (the ECDHE AEAD ones and TLS 1.3), OpenSSL
//! the others, both in the server's order (RFC 5246 §7.4.1.2 lets the server choose).

use super::TlsVersion;
use serde::Deserialize;

/// How a suite agrees on keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kx {
    /// Ephemeral elliptic-curve Diffie-Hellman: forward secret.
    Ecdhe,
    /// The client encrypts the secret to the certificate's RSA key: no forward secrecy.
    Rsa,
    /// TLS 1.3: (EC)DHE always, negotiated apart from the suite.
    Tls13,
}

/// Which certificate key a suite needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Rsa,
    Ecdsa,
    /// TLS 1.3 suites work with either.
    Any,
}

/// The record protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    Aead,
    /// CBC with HMAC (MAC-then-encrypt: BEAST at TLS 1.0, Lucky13).
    Cbc,
}

/// A cipher suite Mailgate may serve.
#[derive(Debug, PartialEq, Eq)]
pub struct Suite {
    /// The IANA value on the wire.
    pub id: u16,
    /// The IANA (RFC) name: `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub iana: &'static str,
    /// OpenSSL's name: `ECDHE-RSA-AES128-GCM-SHA256` (TLS 1.3 suites: the IANA name).
    pub openssl: &'static str,
    pub kx: Kx,
    pub auth: Auth,
    pub bulk: Bulk,
    /// The oldest version that can use it (SHA-256/384 and AEAD suites need TLS 1.2).
    pub min_version: TlsVersion,
}

impl Suite {
    /// The newest version that can use it: TLS 1.3 suites only TLS 1.3, the others up to 1.2.
    pub fn max_version(&self) -> TlsVersion {
        if self.kx == Kx::Tls13 { TlsVersion::Tls13 } else { TlsVersion::Tls12 }
    }

    /// Usable in a session of version `v`.
    pub fn usable_at(&self, v: TlsVersion) -> bool {
        self.min_version <= v && v <= self.max_version()
    }

    /// A TLS 1.3 suite (RFC 8446 §B.4).
    pub fn is_tls13(&self) -> bool {
        self.kx == Kx::Tls13
    }

    /// Whether rustls (with aws-lc-rs) implements it.
    pub fn rustls_implements(&self) -> bool {
        self.kx != Kx::Rsa && self.bulk == Bulk::Aead
    }
}

use Auth::{Any, Ecdsa, Rsa as RsaCert};
use Bulk::{Aead, Cbc};
use TlsVersion::{Tls10, Tls12, Tls13};

const fn s(id: u16, iana: &'static str, openssl: &'static str, kx: Kx, auth: Auth, bulk: Bulk, min_version: TlsVersion) -> Suite {
    Suite { id, iana, openssl, kx, auth, bulk, min_version }
}

/// Every suite Mailgate can serve, strongest first. Anything else is refused in a
/// configuration.
pub static SUITES: &[Suite] = &[
    s(0x1301, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", Kx::Tls13, Any, Aead, Tls13),
    s(0x1302, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", Kx::Tls13, Any, Aead, Tls13),
    s(0x1303, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", Kx::Tls13, Any, Aead, Tls13),
    s(0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", Kx::Ecdhe, Ecdsa, Aead, Tls12),
    s(0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", Kx::Ecdhe, RsaCert, Aead, Tls12),
    s(0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", Kx::Ecdhe, Ecdsa, Aead, Tls12),
    s(0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", Kx::Ecdhe, RsaCert, Aead, Tls12),
    s(0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", Kx::Ecdhe, Ecdsa, Aead, Tls12),
    s(0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305", Kx::Ecdhe, RsaCert, Aead, Tls12),
    s(0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256", Kx::Ecdhe, Ecdsa, Cbc, Tls12),
    s(0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256", Kx::Ecdhe, RsaCert, Cbc, Tls12),
    s(0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384", Kx::Ecdhe, Ecdsa, Cbc, Tls12),
    s(0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384", Kx::Ecdhe, RsaCert, Cbc, Tls12),
    s(0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA", Kx::Ecdhe, Ecdsa, Cbc, Tls10),
    s(0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA", Kx::Ecdhe, RsaCert, Cbc, Tls10),
    s(0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA", Kx::Ecdhe, Ecdsa, Cbc, Tls10),
    s(0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA", Kx::Ecdhe, RsaCert, Cbc, Tls10),
    s(0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256", Kx::Rsa, RsaCert, Aead, Tls12),
    s(0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384", Kx::Rsa, RsaCert, Aead, Tls12),
    s(0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256", Kx::Rsa, RsaCert, Cbc, Tls12),
    s(0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256", Kx::Rsa, RsaCert, Cbc, Tls12),
    s(0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA", Kx::Rsa, RsaCert, Cbc, Tls10),
    s(0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA", Kx::Rsa, RsaCert, Cbc, Tls10),
];

/// The ECDHE groups both stacks offer, in the server's order (OpenSSL's names).
pub const GROUPS: &[&str] = &["X25519", "P-256", "P-384"];

/// The signature schemes both stacks use at TLS 1.2 and 1.3 (OpenSSL's names, RFC 8446
/// §4.2.3): what rustls signs with. No SHA-1 (RFC 9155). TLS 1.0/1.1 have no choice
/// (RFC 4346 §7.4.3: MD5+SHA-1 for RSA, SHA-1 for ECDSA).
pub const SIGALGS: &str = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:\
rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512";

/// The suite with this wire value, if Mailgate knows it.
pub fn by_id(id: u16) -> Option<&'static Suite> {
    SUITES.iter().find(|s| s.id == id)
}

/// The suite with this IANA or OpenSSL name (any case), as both stacks report them.
pub fn by_name(name: &str) -> Option<&'static Suite> {
    // rustls spells TLS 1.3 suites `TLS13_AES_128_GCM_SHA256`.
    let name = name.trim();
    let alt = name.strip_prefix("TLS13_").map(|r| format!("TLS_{r}"));
    let name = alt.as_deref().unwrap_or(name);
    SUITES.iter().find(|s| s.iana.eq_ignore_ascii_case(name) || s.openssl.eq_ignore_ascii_case(name))
}

/// Why a suite name in a configuration is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// RC4, 3DES, DES, NULL, export, anonymous, MD5...: never served.
    Weak,
    /// An OpenSSL cipher-string keyword (`HIGH`, `!aNULL`, `@SECLEVEL=0`), not a suite.
    Keyword,
    /// A real suite Mailgate does not serve (DHE, CCM, Camellia, ARIA, PSK...).
    Unsupported,
    Unknown,
}

/// Words in a suite name that make it weak (RFC 7465 RC4, RFC 8996 context, Mozilla's
/// "never" list).
const WEAK_WORDS: &[&str] = &[
    "RC4", "RC2", "DES", "3DES", "DES40", "CBC3", "EDE", "NULL", "ANULL", "ENULL", "EXP", "EXP1024", "EXPORT", "EXPORT40",
    "EXPORT1024", "ADH", "AECDH", "ANON", "MD5", "IDEA",
];

/// Looks a configured name up, or says what is wrong with it.
pub fn lookup(name: &str) -> Result<&'static Suite, NameProblem> {
    if let Some(s) = by_name(name) {
        return Ok(s);
    }
    let upper = name.trim().to_ascii_uppercase();
    let words: Vec<&str> = upper.split(['-', '_', '+', '!', ':']).collect();
    if words.iter().any(|w| WEAK_WORDS.contains(w)) {
        return Err(NameProblem::Weak);
    }
    if upper.contains(['!', '+', '@', ':', '=']) || !upper.contains(['-', '_']) {
        return Err(NameProblem::Keyword);
    }
    let unsupported = ["DHE", "CCM", "CCM8", "CAMELLIA", "CAMELLIA128", "CAMELLIA256", "ARIA", "ARIA128", "ARIA256", "PSK", "SRP", "SEED", "DH", "ECDH", "GOST", "SM4", "KRB5"];
    if words.iter().any(|w| unsupported.contains(w) || w.starts_with("CAMELLIA") || w.starts_with("ARIA")) {
        return Err(NameProblem::Unsupported);
    }
    Err(NameProblem::Unknown)
}

/// A named profile (`tls_profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Modern,
    Intermediate,
    Legacy,
}

const MODERN_TLS13: &[u16] = &[0x1301, 0x1302, 0x1303];
/// Mozilla intermediate's TLS 1.2 suites without DHE, in its order.
const INTERMEDIATE: &[u16] = &[0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8];
/// Intermediate, then what TLS 1.0/1.1 devices need: ECDHE-CBC first, static RSA last.
const LEGACY: &[u16] = &[
    0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, // ECDHE + AEAD (TLS 1.2)
    0xC009, 0xC013, 0xC00A, 0xC014, // ECDHE + AES-CBC-SHA (TLS 1.0+)
    0x009C, 0x009D, // RSA key exchange + AES-GCM (TLS 1.2)
    0x002F, 0x0035, // RSA key exchange + AES-CBC-SHA (TLS 1.0+)
];

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Modern => "modern",
            Profile::Intermediate => "intermediate",
            Profile::Legacy => "legacy",
        }
    }

    /// The default for an endpoint's versions: `legacy` where they include 1.0 or 1.1.
    pub fn default_for(versions: &[TlsVersion]) -> Profile {
        if versions.iter().any(|v| v.is_legacy()) { Profile::Legacy } else { Profile::Intermediate }
    }

    /// The TLS 1.0-1.2 suites, in the server's order.
    pub fn tls12(self) -> Vec<&'static Suite> {
        let ids: &[u16] = match self {
            Profile::Modern => &[],
            Profile::Intermediate => INTERMEDIATE,
            Profile::Legacy => LEGACY,
        };
        ids.iter().filter_map(|id| by_id(*id)).collect()
    }

    /// The TLS 1.3 suites, in the server's order (AES-128-GCM first: Mozilla's order, and
    /// SHA-256 makes a handshake's key schedule cheaper, see BENCHMARKS.md).
    pub fn tls13(self) -> Vec<&'static Suite> {
        MODERN_TLS13.iter().filter_map(|id| by_id(*id)).collect()
    }
}

/// The suites an endpoint serves: its profile's, or the expert lists that replace them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    pub profile: Profile,
    /// `tls_ciphers` replaced the TLS 1.0-1.2 list.
    pub custom_tls12: bool,
    /// `tls13_ciphersuites` replaced the TLS 1.3 list.
    pub custom_tls13: bool,
    /// TLS 1.0-1.2 suites in the server's order, only those the endpoint's versions can use.
    pub tls12: Vec<&'static Suite>,
    /// TLS 1.3 suites in the server's order (empty when the endpoint does not list 1.3).
    pub tls13: Vec<&'static Suite>,
}

/// A problem with an endpoint's TLS settings: the key (`tls_profile`, `tls_ciphers[2]`)
/// under the endpoint's, and the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub key: String,
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError { key: key.into(), problem: problem.into() }
}

fn version_list(vs: &[TlsVersion]) -> String {
    vs.iter().map(|v| v.human()).collect::<Vec<_>>().join(", ")
}

impl TlsPolicy {
    /// Validates an endpoint's `tls_profile`, `tls_ciphers` and `tls13_ciphersuites`
    /// against its (sorted) `tls_versions`.
    pub fn new(
        versions: &[TlsVersion],
        profile: Option<Profile>,
        tls_ciphers: Option<&[String]>,
        tls13_ciphersuites: Option<&[String]>,
    ) -> Result<TlsPolicy, PolicyError> {
        let profile = profile.unwrap_or_else(|| Profile::default_for(versions));
        let below13: Vec<TlsVersion> = versions.iter().copied().filter(|v| *v <= Tls12).collect();
        let tls12 = match tls_ciphers {
            Some(names) => Self::named(names, "tls_ciphers", false, &below13)?,
            None => profile.tls12().into_iter().filter(|s| below13.iter().any(|v| s.usable_at(*v))).collect(),
        };
        let lists13 = versions.contains(&Tls13);
        let tls13 = match tls13_ciphersuites {
            Some(names) => Self::named(names, "tls13_ciphersuites", true, if lists13 { &[Tls13] } else { &[] })?,
            None if lists13 => profile.tls13(),
            None => Vec::new(),
        };
        let policy = TlsPolicy { profile, custom_tls12: tls_ciphers.is_some(), custom_tls13: tls13_ciphersuites.is_some(), tls12, tls13 };
        policy.covers(versions)?;
        Ok(policy)
    }

    /// Names from an expert list: known, strong, of the right kind, usable at a listed version.
    fn named(names: &[String], key: &str, want13: bool, versions: &[TlsVersion]) -> Result<Vec<&'static Suite>, PolicyError> {
        if names.is_empty() {
            return Err(err(key, "is empty: list at least one suite, or remove the key to use the profile's"));
        }
        let mut out: Vec<&'static Suite> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let suite = lookup(name).map_err(|p| {
                let why = match p {
                    NameProblem::Weak => "is a weak suite (RC4, 3DES, DES, NULL, export, anonymous or MD5) and is never served",
                    NameProblem::Keyword => "is an OpenSSL cipher-string keyword, not a suite name: list the suites one by one",
                    NameProblem::Unsupported => "is not served by Mailgate (it serves ECDHE or RSA key exchange with AES-GCM, ChaCha20-Poly1305 or AES-CBC)",
                    NameProblem::Unknown => "is not a cipher suite name Mailgate knows (use names like ECDHE-RSA-AES128-GCM-SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                };
                err(&k, format!("{name:?} {why}"))
            })?;
            if suite.is_tls13() != want13 {
                let hint = if want13 { "a TLS 1.2 suite: put it in tls_ciphers" } else { "a TLS 1.3 suite: put it in tls13_ciphersuites" };
                return Err(err(&k, format!("{name:?} is {hint}")));
            }
            if !versions.iter().any(|v| suite.usable_at(*v)) {
                let needs = if suite.is_tls13() { "TLS 1.3".to_string() } else { format!("{} or later", suite.min_version.human()) };
                let listed = if versions.is_empty() { "none of them".to_string() } else { version_list(versions) };
                return Err(err(&k, format!("{name:?} needs {needs}, and the endpoint's tls_versions below 1.3 are {listed}")));
            }
            if !out.contains(&suite) {
                out.push(suite);
            }
        }
        Ok(out)
    }

    /// Every listed version must have a suite it can use.
    fn covers(&self, versions: &[TlsVersion]) -> Result<(), PolicyError> {
        for v in versions {
            if self.suites_at(*v).next().is_some() {
                continue;
            }
            let (key, fix) = match (*v, self.custom_tls12, self.custom_tls13) {
                (Tls13, _, true) => ("tls13_ciphersuites", "list a TLS 1.3 suite".to_string()),
                (Tls13, _, false) => ("tls_profile", "remove \"1.3\" from tls_versions".to_string()),
                (_, true, _) => ("tls_ciphers", format!("add a suite {} can use, or remove it from tls_versions", v.human())),
                (_, false, _) if v.is_legacy() => {
                    ("tls_profile", format!("use tls_profile = \"legacy\", or remove \"{}\" from tls_versions", &v.name()[4..]))
                }
                _ => ("tls_profile", "use tls_profile = \"intermediate\", or set tls_versions = [\"1.3\"]".to_string()),
            };
            let whose = if key == "tls_profile" { format!("profile {:?}", self.profile.name()) } else { key.to_string() };
            return Err(err(key, format!("{whose} has no suite that {} can use; {fix}", v.human())));
        }
        Ok(())
    }

    /// The suites a session of version `v` can get, in the server's order.
    pub fn suites_at(&self, v: TlsVersion) -> impl Iterator<Item = &'static Suite> + '_ {
        let list = if v == Tls13 { &self.tls13 } else { &self.tls12 };
        list.iter().copied().filter(move |s| s.usable_at(v))
    }

    /// Wire values of every suite served.
    pub fn ids(&self) -> Vec<u16> {
        self.tls13.iter().chain(&self.tls12).map(|s| s.id).collect()
    }

    /// OpenSSL's TLS 1.0-1.2 cipher list (`SSL_CTX_set_cipher_list`), exact names only.
    pub fn openssl_cipher_list(&self) -> String {
        self.tls12.iter().map(|s| s.openssl).collect::<Vec<_>>().join(":")
    }

    /// OpenSSL's TLS 1.3 list (`SSL_CTX_set_ciphersuites`).
    pub fn openssl_ciphersuites(&self) -> String {
        self.tls13.iter().map(|s| s.iana).collect::<Vec<_>>().join(":")
    }

    /// The suites only for answering `421 4.7.66` to a TLS 1.0/1.1 client on an endpoint
    /// that does not serve those versions: the legacy profile's, usable at TLS 1.0.
    pub fn explain_suites() -> Vec<&'static Suite> {
        Profile::Legacy.tls12().into_iter().filter(|s| s.usable_at(Tls10)).collect()
    }
}

/// The server's choice among `offered` (the client's suites) for a session of version `v`:
/// the first suite in the server's order that the client offers and a certificate can
/// sign for (RFC 5246 §7.4.1.2).
pub fn server_choice(list: &[&'static Suite], offered: &[u16], v: TlsVersion, certs: CertKinds) -> Option<&'static Suite> {
    list.iter().copied().find(|s| s.usable_at(v) && offered.contains(&s.id) && certs.can_serve(s))
}

/// Which kinds of certificate key an endpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertKinds {
    pub rsa: bool,
    pub ecdsa: bool,
}

impl CertKinds {
    pub fn can_serve(&self, s: &Suite) -> bool {
        match s.auth {
            Auth::Rsa => self.rsa,
            Auth::Ecdsa => self.ecdsa,
            Auth::Any => self.rsa || self.ecdsa,
        }
    }
}

/// A negotiated suite's name (as stored in usage events) uses RSA key exchange.
pub fn is_static_rsa(name: &str) -> bool {
    by_name(name).map_or_else(|| name.starts_with("TLS_RSA_WITH_"), |s| s.kx == Kx::Rsa)
}

/// A negotiated suite's name uses CBC.
pub fn is_cbc(name: &str) -> bool {
    by_name(name).map_or_else(|| name.contains("_CBC_"), |s| s.bulk == Bulk::Cbc)
}

/// The IANA name of a wire value, or `0x....` for a suite Mailgate does not know.
pub fn wire_name(id: u16) -> String {
    by_id(id).map_or_else(|| format!("0x{id:04X}"), |s| s.iana.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TlsVersion::Tls11;

    fn names(v: &[&'static Suite]) -> Vec<&'static str> {
        v.iter().map(|s| s.openssl).collect()
    }

    #[test]
    fn the_table_agrees_with_openssl() {
        // Every OpenSSL name in the table is one the linked libssl knows: a typo here would
        // silently drop a suite from a profile.
        let mut b = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::tls()).unwrap();
        for s in SUITES {
            if s.is_tls13() {
                b.set_ciphersuites(s.openssl).unwrap_or_else(|e| panic!("{}: {e}", s.openssl));
            } else {
                b.set_cipher_list(&format!("{}:@SECLEVEL=0", s.openssl)).unwrap_or_else(|e| panic!("{}: {e}", s.openssl));
            }
            assert_eq!(by_id(s.id), Some(s));
            assert_eq!(by_name(s.iana), Some(s));
            assert_eq!(by_name(s.openssl), Some(s));
        }
        assert_eq!(by_name("TLS13_AES_256_GCM_SHA384").map(|s| s.id), Some(0x1302));
    }

    #[test]
    fn profiles_by_version() {
        let std = TlsPolicy::new(&[Tls12, Tls13], None, None, None).unwrap();
        assert_eq!(std.profile, Profile::Intermediate);
        assert!(std.tls12.iter().all(|s| s.kx == Kx::Ecdhe && s.bulk == Bulk::Aead), "{:?}", names(&std.tls12));
        assert_eq!(std.tls12.len(), 6);
        assert!(std.tls12.iter().all(|s| s.rustls_implements()));
        let legacy = TlsPolicy::new(&[Tls10, Tls11, Tls12, Tls13], None, None, None).unwrap();
        assert_eq!(legacy.profile, Profile::Legacy);
        let at10 = names(&legacy.suites_at(Tls10).collect::<Vec<_>>());
        assert_eq!(at10, ["ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA", "AES128-SHA", "AES256-SHA"]);
        let first_rsa = legacy.tls12.iter().position(|s| s.kx == Kx::Rsa).unwrap();
        assert!(legacy.tls12[first_rsa..].iter().all(|s| s.kx == Kx::Rsa), "static RSA comes last");
        let modern = TlsPolicy::new(&[Tls13], Some(Profile::Modern), None, None).unwrap();
        assert!(modern.tls12.is_empty());
        assert_eq!(modern.tls13.len(), 3);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: Vec<(Vec<TlsVersion>, Option<Profile>, Option<Vec<String>>, Option<Vec<String>>, &str, &str)> = vec![
            (vec![Tls12, Tls13], None, Some(v(&["RC4-SHA"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["ECDHE-RSA-AES128-GCM-SHA256", "DES-CBC3-SHA"])), None, "tls_ciphers[1]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["TLS_RSA_WITH_3DES_EDE_CBC_SHA"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["ADH-AES128-SHA"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["NULL-SHA256"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["EXP-RC4-MD5"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["HIGH:!aNULL"])), None, "tls_ciphers[0]", "weak"),
            (vec![Tls12, Tls13], None, Some(v(&["HIGH"])), None, "tls_ciphers[0]", "keyword"),
            (vec![Tls12, Tls13], None, Some(v(&["DHE-RSA-AES128-GCM-SHA256"])), None, "tls_ciphers[0]", "not served"),
            (vec![Tls12, Tls13], None, Some(v(&["ECDHE-RSA-AES999-SHA"])), None, "tls_ciphers[0]", "not a cipher suite"),
            (vec![Tls12, Tls13], None, Some(v(&["TLS_AES_128_GCM_SHA256"])), None, "tls_ciphers[0]", "tls13_ciphersuites"),
            (vec![Tls12, Tls13], None, None, Some(v(&["ECDHE-RSA-AES128-GCM-SHA256"])), "tls13_ciphersuites[0]", "tls_ciphers"),
            (vec![Tls12, Tls13], None, None, Some(v(&["TLS_AES_128_CCM_SHA256"])), "tls13_ciphersuites[0]", "not served"),
            (vec![Tls12, Tls13], None, Some(vec![]), None, "tls_ciphers", "empty"),
            (vec![Tls13], None, Some(v(&["ECDHE-RSA-AES128-GCM-SHA256"])), None, "tls_ciphers[0]", "needs TLS 1.2"),
            (vec![Tls10, Tls11, Tls12], None, Some(v(&["ECDHE-RSA-AES128-GCM-SHA256"])), None, "tls_ciphers", "TLS 1.0"),
            (vec![Tls10, Tls12, Tls13], Some(Profile::Intermediate), None, None, "tls_profile", "TLS 1.0"),
            (vec![Tls12, Tls13], Some(Profile::Modern), None, None, "tls_profile", "TLS 1.2"),
        ];
        for (versions, profile, c12, c13, key, words) in cases {
            let e = TlsPolicy::new(&versions, profile, c12.as_deref(), c13.as_deref()).unwrap_err();
            assert_eq!(e.key, key, "{e:?}");
            assert!(e.problem.contains(words), "{e:?} should say {words:?}");
        }
        // A custom list is taken in its order, both spellings, duplicates once.
        let p = TlsPolicy::new(
            &[Tls12, Tls13],
            None,
            Some(&v(&["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES128-GCM-SHA256", "ecdhe-rsa-aes256-gcm-sha384"])),
            None,
        )
        .unwrap();
        assert_eq!(names(&p.tls12), ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]);
    }

    #[test]
    fn server_order_and_certificates_decide() {
        let legacy = Profile::Legacy.tls12();
        let rsa = CertKinds { rsa: true, ecdsa: false };
        let offered = [0x002F, 0xC013, 0xC02B];
        assert_eq!(server_choice(&legacy, &offered, Tls12, rsa).map(|s| s.id), Some(0xC013), "no ECDSA key: not C02B");
        let both = CertKinds { rsa: true, ecdsa: true };
        assert_eq!(server_choice(&legacy, &offered, Tls12, both).map(|s| s.id), Some(0xC02B));
        assert_eq!(server_choice(&legacy, &[0x002F, 0x009C], Tls10, rsa).map(|s| s.id), Some(0x002F), "GCM needs TLS 1.2");
        assert!(is_static_rsa("TLS_RSA_WITH_AES_128_CBC_SHA") && !is_static_rsa("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"));
        assert!(is_cbc("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA") && !is_cbc("TLS13_AES_128_GCM_SHA256"));
    }
}
