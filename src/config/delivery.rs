//! The delivery half of the configuration: where accepted mail goes (`[delivery]`), the
//! smart hosts it can be relayed through (`[[smarthost]]`), and the secrets they need.
//!
//! Secrets (passwords, OAuth2 client secrets, refresh tokens) are never written in the
//! configuration itself: only the file or the environment variable that holds them, read
//! when they are used (so a rotated secret needs no restart). A `password = "..."` key is
//! refused with a sentence saying what to write instead.

use super::{ConfigError, Validator};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret: the file or environment variable holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

impl Secret {
    /// Reads the secret now; one trailing newline is removed. The error names the file or
    /// variable, never the value.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Secret::File(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?,
            Secret::Env(v) => std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?,
        };
        let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_string();
        if value.is_empty() {
            return Err(format!("the secret in {} is empty", self.describe()));
        }
        Ok(value)
    }

    pub fn describe(&self) -> String {
        match self {
            Secret::File(p) => format!("file {}", p.display()),
            Secret::Env(v) => format!("environment variable {v}"),
        }
    }
}

/// How the connection to a smart host is secured. Never plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// Plain-text greeting, then STARTTLS (RFC 3207), as on port 587. No STARTTLS: no delivery.
    Starttls,
    /// TLS from the first byte (RFC 8314), as on port 465.
    Implicit,
}

/// The OAuth2 grant used to obtain an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuth2Grant {
    /// `grant_type=client_credentials` (Microsoft identity platform, app-only access).
    ClientCredentials,
    /// `grant_type=refresh_token` with a long-lived refresh token (Google, delegated access).
    RefreshToken(Secret),
    /// RFC 7523 JWT bearer grant with a Google service account key (JSON, with
    /// `client_email` and `private_key`), acting for `subject` through domain-wide
    /// delegation (Google Workspace, app-only access).
    JwtBearer { key: Secret, subject: String },
}

/// Where and how the access token for XOAUTH2 is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub scope: Option<String>,
    pub grant: OAuth2Grant,
}

/// How Mailgate authenticates to a smart host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmarthostAuth {
    None,
    /// AUTH PLAIN (or LOGIN when PLAIN is not offered) with a stored password.
    Password { username: String, password: Secret },
    /// AUTH XOAUTH2 with a bearer token fetched and refreshed by Mailgate.
    Xoauth2 { username: String, oauth2: OAuth2 },
}

/// One smart host (an upstream SMTP server that relays remote mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthost {
    pub name: String,
    /// The DNS name (or IP address) connected to, sent as SNI and checked in the certificate.
    pub host: String,
    pub port: u16,
    pub tls: SmarthostTls,
    /// Trust only the CA certificates in this PEM file (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// Accept only a server certificate whose SHA-256 (of its DER form) is this.
    pub pin_sha256: Option<[u8; 32]>,
    pub auth: SmarthostAuth,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// An LMTP server: a UNIX socket or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddress {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for LmtpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            LmtpAddress::Tcp(a) => f.write_str(a),
        }
    }
}

/// How recipients in our own domains are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    /// Into `<data_dir>/maildir/<domain>/<localpart>/` (Dovecot-compatible).
    Maildir,
    /// To an LMTP server (RFC 2033), e.g. Dovecot's `lmtp` service.
    Lmtp(LmtpAddress),
    /// The tenant's mailboxes live upstream (Exchange Online, Google Workspace): every
    /// address in its domains is relayed through its smart host, and the upstream decides
    /// whether the mailbox exists (an unknown one comes back as a DSN).
    Smarthost,
}

/// Per-tenant overrides of `[delivery]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantDelivery {
    pub local: Option<LocalDelivery>,
    pub smarthost: Option<String>,
}

/// The validated `[delivery]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub local: LocalDelivery,
    /// The smart host for remote recipients; `None`: remote recipients are refused at RCPT.
    pub smarthost: Option<String>,
    pub tenants: HashMap<String, TenantDelivery>,
    /// Deliveries in flight, all destinations together.
    pub concurrency: usize,
    /// Deliveries in flight to one destination (one smart host, one LMTP server, Maildir).
    pub destination_concurrency: usize,
    /// Seconds allowed for each LMTP step.
    pub lmtp_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            local: LocalDelivery::Maildir,
            smarthost: None,
            tenants: HashMap::new(),
            concurrency: 100,
            destination_concurrency: 20,
            lmtp_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    local: Option<String>,
    lmtp: Option<String>,
    smarthost: Option<String>,
    concurrency: Option<usize>,
    destination_concurrency: Option<usize>,
    lmtp_timeout: Option<u64>,
    #[serde(default)]
    tenant: Vec<RawTenantDelivery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantDelivery {
    name: String,
    local: Option<String>,
    lmtp: Option<String>,
    smarthost: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmarthost {
    name: String,
    address: String,
    #[serde(default = "default_tls")]
    tls: SmarthostTls,
    ca_file: Option<PathBuf>,
    pin_sha256: Option<String>,
    auth: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    password: Option<toml::Value>,
    oauth2: Option<RawOAuth2>,
    connect_timeout: Option<u64>,
    command_timeout: Option<u64>,
}

fn default_tls() -> SmarthostTls {
    SmarthostTls::Starttls
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    token_url: String,
    #[serde(default)]
    client_id: String,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    client_secret: Option<toml::Value>,
    scope: Option<String>,
    grant: Option<String>,
    refresh_token_file: Option<PathBuf>,
    refresh_token_env: Option<String>,
    refresh_token: Option<toml::Value>,
    service_account_key_file: Option<PathBuf>,
    service_account_key_env: Option<String>,
    service_account_key: Option<toml::Value>,
}

impl Validator<'_> {
    /// One secret from `<name>_file` or `<name>_env`; the value itself is refused.
    fn secret(
        &self,
        key: &str,
        file: Option<PathBuf>,
        env: Option<String>,
        inline: Option<toml::Value>,
        base: &Path,
    ) -> Result<Option<Secret>, ConfigError> {
        if inline.is_some() {
            return Err(self.err(
                key,
                format!("secrets are not written in the configuration: use {key}_file (a file readable only by mailgate) or {key}_env (an environment variable)"),
            ));
        }
        match (file, env) {
            (Some(_), Some(_)) => Err(self.err(key, format!("give one of {key}_file or {key}_env, not both"))),
            (Some(f), None) => Ok(Some(Secret::File(base.join(f)))),
            (None, Some(e)) if !e.is_empty() => Ok(Some(Secret::Env(e))),
            (None, Some(_)) => Err(self.err(format!("{key}_env"), "must name an environment variable")),
            (None, None) => Ok(None),
        }
    }

    pub(super) fn smarthosts(&self, raw: Vec<RawSmarthost>, base: &Path) -> Result<Vec<Smarthost>, ConfigError> {
        let mut out: Vec<Smarthost> = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            let key = format!("smarthost[{i}]");
            if s.name.trim().is_empty() || out.iter().any(|o| o.name == s.name) {
                return Err(self.err(format!("{key}.name"), "must be a non-empty name used once"));
            }
            out.push(self.smarthost(&key, s, base)?);
        }
        Ok(out)
    }

    fn smarthost(&self, key: &str, s: RawSmarthost, base: &Path) -> Result<Smarthost, ConfigError> {
        let (host, port) = split_host_port(&s.address)
            .ok_or_else(|| self.err(format!("{key}.address"), format!("{:?} is not like \"smtp.example.net:587\"", s.address)))?;
        let pin_sha256 = match &s.pin_sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(hex).ok_or_else(|| {
                self.err(format!("{key}.pin_sha256"), "must be 64 hex digits (the SHA-256 of the certificate's DER form; colons allowed)")
            })?),
        };
        let password = self.secret(&format!("{key}.password"), s.password_file, s.password_env, s.password, base)?;
        let oauth2 = match s.oauth2 {
            Some(o) => Some(self.oauth2(&format!("{key}.oauth2"), o, s.username.as_deref().unwrap_or(""), base)?),
            None => None,
        };
        let mode = s.auth.clone().unwrap_or_else(|| {
            if oauth2.is_some() {
                "xoauth2".into()
            } else if s.username.is_some() {
                "password".into()
            } else {
                "none".into()
            }
        });
        let need_user = |what: &str| {
            s.username.clone().filter(|u| !u.is_empty()).ok_or_else(|| self.err(format!("{key}.username"), format!("is required for {what}")))
        };
        let auth = match mode.as_str() {
            "none" => SmarthostAuth::None,
            "password" => SmarthostAuth::Password {
                username: need_user("password authentication")?,
                password: password
                    .ok_or_else(|| self.err(format!("{key}.password_file"), "password authentication needs password_file or password_env"))?,
            },
            "xoauth2" => SmarthostAuth::Xoauth2 {
                username: need_user("XOAUTH2 (the mailbox the token acts for)")?,
                oauth2: oauth2.ok_or_else(|| self.err(format!("{key}.oauth2"), "auth = \"xoauth2\" needs an [smarthost.oauth2] table"))?,
            },
            other => return Err(self.err(format!("{key}.auth"), format!("{other:?}: expected \"none\", \"password\" or \"xoauth2\""))),
        };
        let secs = |v: Option<u64>, d: u64, k: &str| match v.unwrap_or(d) {
            n @ 1..=3600 => Ok(Duration::from_secs(n)),
            _ => Err(self.err(format!("{key}.{k}"), "must be between 1 and 3600 seconds")),
        };
        Ok(Smarthost {
            name: s.name,
            host,
            port,
            tls: s.tls,
            ca_file: s.ca_file.map(|p| base.join(p)),
            pin_sha256,
            auth,
            connect_timeout: secs(s.connect_timeout, 30, "connect_timeout")?,
            command_timeout: secs(s.command_timeout, 300, "command_timeout")?,
        })
    }

    fn oauth2(&self, key: &str, o: RawOAuth2, username: &str, base: &Path) -> Result<OAuth2, ConfigError> {
        if !(o.token_url.starts_with("https://") || is_loopback_http(&o.token_url)) {
            return Err(self.err(format!("{key}.token_url"), "must be an https:// URL (http:// only on loopback, for tests)"));
        }
        let sa_key = self.secret(&format!("{key}.service_account_key"), o.service_account_key_file, o.service_account_key_env, o.service_account_key, base)?;
        if o.client_id.is_empty() && o.grant.as_deref() != Some("jwt_bearer") {
            return Err(self.err(format!("{key}.client_id"), "is required (except with grant = \"jwt_bearer\")"));
        }
        let client_secret = self.secret(&format!("{key}.client_secret"), o.client_secret_file, o.client_secret_env, o.client_secret, base)?;
        let refresh = self.secret(&format!("{key}.refresh_token"), o.refresh_token_file, o.refresh_token_env, o.refresh_token, base)?;
        let grant = match o.grant.as_deref().unwrap_or(if refresh.is_some() { "refresh_token" } else { "client_credentials" }) {
            "client_credentials" => {
                if client_secret.is_none() {
                    return Err(self.err(format!("{key}.client_secret_file"), "the client_credentials grant needs client_secret_file or client_secret_env"));
                }
                OAuth2Grant::ClientCredentials
            }
            "refresh_token" => OAuth2Grant::RefreshToken(refresh.ok_or_else(|| {
                self.err(format!("{key}.refresh_token_file"), "the refresh_token grant needs refresh_token_file or refresh_token_env")
            })?),
            "jwt_bearer" => OAuth2Grant::JwtBearer {
                key: sa_key.ok_or_else(|| {
                    self.err(format!("{key}.service_account_key_file"), "the jwt_bearer grant needs the service account's JSON key: service_account_key_file or service_account_key_env")
                })?,
                subject: username.to_string(),
            },
            other => return Err(self.err(format!("{key}.grant"), format!("{other:?}: expected \"client_credentials\", \"refresh_token\" or \"jwt_bearer\""))),
        };
        Ok(OAuth2 { token_url: o.token_url, client_id: o.client_id, client_secret, scope: o.scope, grant })
    }

    pub(super) fn delivery(&self, raw: RawDelivery, smarthosts: &[Smarthost], base: &Path) -> Result<DeliveryConfig, ConfigError> {
        let d = DeliveryConfig::default();
        let local = self.local("delivery", raw.local.as_deref(), raw.lmtp.as_deref(), None, base)?.unwrap_or(LocalDelivery::Maildir);
        // Tenants that choose `local = "lmtp"` without an address use the global one.
        let global_lmtp = raw.lmtp.as_deref().and_then(|a| parse_lmtp(a, base));
        let known = |key: String, name: &Option<String>| match name {
            Some(n) if !smarthosts.iter().any(|s| &s.name == n) => {
                Err(self.err(key, format!("no [[smarthost]] is named {n:?}")))
            }
            _ => Ok(()),
        };
        known("delivery.smarthost".into(), &raw.smarthost)?;
        let mut tenants = HashMap::new();
        for (i, t) in raw.tenant.into_iter().enumerate() {
            let key = format!("delivery.tenant[{i}]");
            known(format!("{key}.smarthost"), &t.smarthost)?;
            let tenant_local = self.local(&key, t.local.as_deref(), t.lmtp.as_deref(), global_lmtp.clone(), base)?;
            if tenants.insert(t.name.clone(), TenantDelivery { local: tenant_local, smarthost: t.smarthost }).is_some() {
                return Err(self.err(format!("{key}.name"), format!("tenant {:?} is listed twice", t.name)));
            }
        }
        let upstream_without_relay = |local: &Option<LocalDelivery>, smarthost: &Option<String>| {
            local.as_ref() == Some(&LocalDelivery::Smarthost) && smarthost.is_none() && raw.smarthost.is_none()
        };
        if upstream_without_relay(&Some(local.clone()), &None) {
            return Err(self.err("delivery.local", "local = \"smarthost\" needs delivery.smarthost"));
        }
        for (name, t) in &tenants {
            if upstream_without_relay(&t.local, &t.smarthost) {
                return Err(self.err("delivery.tenant", format!("tenant {name:?}: local = \"smarthost\" needs a smart host (its own or delivery.smarthost)")));
            }
        }
        let concurrency = raw.concurrency.unwrap_or(d.concurrency);
        let per_dest = raw.destination_concurrency.unwrap_or(d.destination_concurrency);
        if !(1..=1000).contains(&concurrency) {
            return Err(self.err("delivery.concurrency", "must be between 1 and 1000"));
        }
        if !(1..=1000).contains(&per_dest) {
            return Err(self.err("delivery.destination_concurrency", "must be between 1 and 1000"));
        }
        let lmtp_timeout = match raw.lmtp_timeout.unwrap_or(300) {
            n @ 1..=3600 => Duration::from_secs(n),
            _ => return Err(self.err("delivery.lmtp_timeout", "must be between 1 and 3600 seconds")),
        };
        Ok(DeliveryConfig { local, smarthost: raw.smarthost, tenants, concurrency, destination_concurrency: per_dest, lmtp_timeout })
    }

    /// `local = "maildir" | "lmtp"` with its `lmtp` address (or the inherited one).
    fn local(
        &self,
        key: &str,
        local: Option<&str>,
        lmtp: Option<&str>,
        inherited: Option<LmtpAddress>,
        base: &Path,
    ) -> Result<Option<LocalDelivery>, ConfigError> {
        let address = match lmtp {
            Some(a) => Some(parse_lmtp(a, base).ok_or_else(|| {
                self.err(format!("{key}.lmtp"), format!("{a:?} is not \"unix:/path/to/socket\" or \"host:port\""))
            })?),
            None => inherited,
        };
        match (local, address) {
            (None, Some(a)) if lmtp.is_some() => Ok(Some(LocalDelivery::Lmtp(a))),
            (None, _) => Ok(None),
            (Some("maildir"), _) => Ok(Some(LocalDelivery::Maildir)),
            (Some("smarthost"), _) => Ok(Some(LocalDelivery::Smarthost)),
            (Some("lmtp"), Some(a)) => Ok(Some(LocalDelivery::Lmtp(a))),
            (Some("lmtp"), None) => Err(self.err(format!("{key}.lmtp"), "local = \"lmtp\" needs the LMTP server's address")),
            (Some(other), _) => Err(self.err(format!("{key}.local"), format!("{other:?}: expected \"maildir\", \"lmtp\" or \"smarthost\""))),
        }
    }
}

/// `http://` to 127.0.0.0/8, `[::1]` or `localhost` (with or without a port): the only
/// places a token may travel unencrypted (a test's own token endpoint).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_lmtp(a: &str, base: &Path) -> Option<LmtpAddress> {
    if let Some(p) = a.strip_prefix("unix:") {
        return (!p.is_empty()).then(|| LmtpAddress::Unix(base.join(p)));
    }
    if a.starts_with('/') {
        return Some(LmtpAddress::Unix(PathBuf::from(a)));
    }
    split_host_port(a).map(|_| LmtpAddress::Tcp(a.to_string()))
}

/// `host:port` or `[v6]:port`.
pub(super) fn split_host_port(a: &str) -> Option<(String, u16)> {
    let (host, port) = a.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "hostname = \"mx.test\"\ndata_dir = \"d\"\n[[tls.certificate]]\ncert = \"c\"\nkey = \"k\"\n[[endpoint]]\nname = \"e\"\nlisten = [\"127.0.0.1:1\"]\ntls_mode = \"starttls\"\n";

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_toml(Path::new("/etc/mg/mailgate.toml"), &format!("{BASE}{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn smarthosts_and_routes() {
        let c = load(
            "[delivery]\nsmarthost = \"up\"\nlmtp = \"unix:lmtp.sock\"\nlocal = \"maildir\"\n\
             [[delivery.tenant]]\nname = \"contoso\"\nlocal = \"lmtp\"\nsmarthost = \"o365\"\n\
             [[smarthost]]\nname = \"up\"\naddress = \"relay.example.net:587\"\nusername = \"u\"\npassword_file = \"pw\"\n\
             [[smarthost]]\nname = \"o365\"\naddress = \"smtp.office365.com:587\"\nusername = \"scan@contoso.test\"\n\
             [smarthost.oauth2]\ntoken_url = \"https://login.example/token\"\nclient_id = \"id\"\nclient_secret_env = \"SECRET\"\nscope = \"s\"\n",
        )
        .unwrap();
        assert_eq!(c.smarthost_for("fabrikam").unwrap().name, "up");
        assert_eq!(c.smarthost_for("contoso").unwrap().name, "o365");
        assert_eq!(c.local_delivery("fabrikam"), &LocalDelivery::Maildir);
        assert_eq!(c.local_delivery("contoso"), &LocalDelivery::Lmtp(LmtpAddress::Unix("/etc/mg/lmtp.sock".into())));
        let upstream = load("[delivery]\n[[delivery.tenant]]\nname = \"contoso\"\nlocal = \"smarthost\"\nsmarthost = \"o365\"\n[[smarthost]]\nname = \"o365\"\naddress = \"smtp.office365.com:587\"\n").unwrap();
        assert_eq!(upstream.local_delivery("contoso"), &LocalDelivery::Smarthost);
        let e = load("[delivery]\n[[delivery.tenant]]\nname = \"contoso\"\nlocal = \"smarthost\"\n").unwrap_err();
        assert!(e.contains("needs a smart host"), "{e}");
        let up = c.smarthost_for("x").unwrap();
        assert_eq!((up.host.as_str(), up.port, up.tls), ("relay.example.net", 587, SmarthostTls::Starttls));
        assert_eq!(up.auth, SmarthostAuth::Password { username: "u".into(), password: Secret::File("/etc/mg/pw".into()) });
        let o = &c.smarthosts[1];
        assert!(matches!(&o.auth, SmarthostAuth::Xoauth2 { oauth2, .. } if oauth2.grant == OAuth2Grant::ClientCredentials));
    }

    #[test]
    fn google_service_account_grant() {
        let c = load(
            "[[smarthost]]\nname = \"gmail\"\naddress = \"smtp.gmail.com:587\"\nusername = \"scanner@example.com\"\n\
             [smarthost.oauth2]\ntoken_url = \"https://oauth2.googleapis.com/token\"\ngrant = \"jwt_bearer\"\n\
             service_account_key_file = \"sa.json\"\nscope = \"https://mail.google.com/\"\n",
        )
        .unwrap();
        let SmarthostAuth::Xoauth2 { oauth2, .. } = &c.smarthosts[0].auth else { panic!("xoauth2") };
        assert_eq!(oauth2.grant, OAuth2Grant::JwtBearer { key: Secret::File("/etc/mg/sa.json".into()), subject: "scanner@example.com".into() });
        let e = load("[[smarthost]]\nname = \"g\"\naddress = \"h:587\"\nusername = \"u\"\n[smarthost.oauth2]\ntoken_url = \"https://t\"\ngrant = \"jwt_bearer\"\n").unwrap_err();
        assert!(e.contains("smarthost[0].oauth2.service_account_key_file"), "{e}");
    }

    #[test]
    fn no_smarthost_and_errors() {
        let c = load("").unwrap();
        assert!(c.smarthost_for("contoso").is_none());
        let cases = [
            ("[[smarthost]]\nname = \"a\"\naddress = \"h:25\"\nusername = \"u\"\npassword = \"hunter2\"\n", "smarthost[0].password"),
            ("[[smarthost]]\nname = \"a\"\naddress = \"h\"\n", "smarthost[0].address"),
            ("[[smarthost]]\nname = \"a\"\naddress = \"h:25\"\nusername = \"u\"\n", "smarthost[0].password_file"),
            ("[[smarthost]]\nname = \"a\"\naddress = \"h:25\"\npin_sha256 = \"zz\"\n", "smarthost[0].pin_sha256"),
            ("[delivery]\nsmarthost = \"nope\"\n", "delivery.smarthost"),
            ("[delivery]\nlocal = \"lmtp\"\n", "delivery.lmtp"),
            ("[delivery]\nlocal = \"mbox\"\n", "delivery.local"),
            ("[[smarthost]]\nname = \"a\"\naddress = \"h:25\"\nusername = \"u\"\n[smarthost.oauth2]\ntoken_url = \"http://evil.example/t\"\nclient_id = \"i\"\nclient_secret_env = \"S\"\n", "smarthost[0].oauth2.token_url"),
        ];
        for (extra, key) in cases {
            let e = load(extra).unwrap_err();
            assert!(e.contains(key), "{e:?} should name {key}");
            assert!(!e.contains("hunter2"), "the secret is never echoed: {e}");
        }
    }

    #[test]
    fn only_loopback_may_use_plain_http() {
        for ok in ["http://127.0.0.1:8080/token", "http://localhost/t", "http://[::1]:9/t", "http://127.5.5.5"] {
            assert!(is_loopback_http(ok), "{ok}");
        }
        for bad in ["http://127.evil.example/t", "http://localhost.evil.example/", "http://127.0.0.1@evil.example/", "https://127.0.0.1/", "http://10.0.0.1/"] {
            assert!(!is_loopback_http(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_read_from_file_or_env() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(Secret::File(f).read().unwrap(), "s3cret");
        assert!(Secret::File(t.path().join("missing")).read().unwrap_err().contains("missing"));
        assert!(Secret::Env("MAILGATE_TEST_UNSET_VAR".into()).read().unwrap_err().contains("MAILGATE_TEST_UNSET_VAR"));
        assert_eq!(parse_sha256(&"ab:".repeat(31).to_string().add("cd")), Some({ let mut a = [0xab; 32]; a[31] = 0xcd; a }));
    }

    trait Add {
        fn add(self, s: &str) -> String;
    }
    impl Add for String {
        fn add(mut self, s: &str) -> String {
            self.push_str(s);
            self
        }
    }
}
