//! The configuration file: its TOML model, defaults and validation.
//!
//! `Config::load` reads one TOML file, applies defaults, resolves relative paths against
//! the file's directory and validates every value once; the result is immutable and shared
//! as `Arc<Config>`. Errors name the key (`endpoint[1].listen[0]`) and what is wrong, so
//! `mailgate check-config` can tell an operator exactly what to fix. Every field's `///`
//! doc is mirrored in `docs/configuration.md`.

pub mod delivery;

pub use delivery::{
    DeliveryConfig, LmtpAddress, LocalDelivery, OAuth2, OAuth2Grant, Secret, Smarthost, SmarthostAuth, SmarthostTls, TenantDelivery,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {problem}")]
    Invalid { path: PathBuf, key: String, problem: String },
}

/// The raw file, as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    auth_limits: AuthLimits,
    #[serde(default)]
    smtp: SmtpConfig,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    usage: UsageConfig,
    #[serde(default)]
    directory: DirectoryConfig,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    smarthost: Vec<delivery::RawSmarthost>,
    admin: Option<AdminConfig>,
}

/// The admin listener (`[admin]`): the HTTP API and `/metrics`. Off without the section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address and port, e.g. `127.0.0.1:2580`.
    pub listen: std::net::SocketAddr,
    /// Serve HTTPS with the endpoints' certificate (TLS 1.2/1.3).
    #[serde(default)]
    pub tls: bool,
    /// `/metrics` without a key (else an operator key is needed).
    #[serde(default)]
    pub metrics_public: bool,
    /// The largest request body, in octets (larger: 413).
    #[serde(default = "AdminConfig::default_max_body")]
    pub max_body: usize,
    /// Seconds a request may take, headers and body included (then 408).
    #[serde(default = "AdminConfig::default_timeout", deserialize_with = "de_seconds")]
    pub request_timeout: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "AdminConfig::default_connections")]
    pub max_connections: usize,
}

impl AdminConfig {
    fn default_max_body() -> usize {
        64 * 1024
    }
    fn default_timeout() -> u64 {
        30
    }
    fn default_connections() -> usize {
        64
    }
}

/// The tenant directory as the server uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Seconds the server keeps users, domain owners and legacy settings read at AUTH and
    /// RCPT (0: read the database every time). Changes made with the `mailgate` CLI clear
    /// the cache at once; the TTL only bounds changes made around it (an SQL shell).
    #[serde(deserialize_with = "de_seconds")]
    pub cache_ttl: u64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self { cache_ttl: 60 }
    }
}

/// TLS usage recording.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Record one event per connection for `mailgate report`.
    pub enabled: bool,
    /// This node's name in events (default: `hostname`).
    pub node: Option<String>,
    /// Days raw events are kept.
    pub raw_retention_days: u32,
    /// Days daily rollups (what reports read) are kept.
    pub rollup_retention_days: u32,
    /// Events buffered between sessions and the writer; beyond, events are dropped and counted.
    pub buffer: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { enabled: true, node: None, raw_retention_days: 30, rollup_retention_days: 400, buffer: 10_000 }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    certificate: Vec<CertificatePair>,
    /// Seed of the random source behind `reject_percent` (absent: seeded from the OS).
    schedule_seed: Option<u64>,
}

/// One step of an endpoint's legacy-TLS schedule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    from: String,
    reject_percent: Option<u8>,
    legacy_tls: Option<LegacyTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    listen: Vec<String>,
    tls_mode: TlsMode,
    tls_versions: Option<Vec<String>>,
    tls_profile: Option<crate::tls::profile::Profile>,
    tls_ciphers: Option<SuiteList>,
    tls13_ciphersuites: Option<SuiteList>,
    legacy_tls: Option<LegacyTls>,
    #[serde(default)]
    schedule: Vec<RawStep>,
    #[serde(default = "default_true")]
    legacy_requires_opt_in: bool,
}

fn default_true() -> bool {
    true
}

/// A list of suite names: a TOML array, or one OpenSSL-style string `"A:B:C"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SuiteList {
    List(Vec<String>),
    Colons(String),
}

impl SuiteList {
    fn names(self) -> Vec<String> {
        match self {
            SuiteList::List(v) => v,
            SuiteList::Colons(s) => s.split(':').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        }
    }
}

/// What an endpoint does with a session below TLS 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegacyTls {
    /// Serve it (subject to the tenant's opt-in when `legacy_requires_opt_in`).
    Allow,
    /// Complete the handshake only to answer `421 4.7.66` and close.
    Explain,
    /// Refuse the handshake with a protocol_version alert.
    Refuse,
}

/// What a schedule step sets from its date on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    /// Each legacy session is answered `421 4.7.66` with this probability (percent).
    RejectPercent(u8),
    /// A fixed behaviour, as `legacy_tls`.
    Set(LegacyTls),
}

/// One dated step of a legacy-TLS rollout schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleStep {
    pub from: chrono::NaiveDate,
    pub action: StepAction,
}

/// A certificate chain and its private key (`[[tls.certificate]]`); defined by `tls`,
/// which loads it, so that `tls` needs nothing of `config`.
pub use crate::tls::CertificatePair;

/// How a client starts TLS on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain-text greeting, then STARTTLS (RFC 3207), as on port 587.
    Starttls,
    /// TLS from the first byte (RFC 8314), as on port 465.
    Implicit,
}

pub use crate::tls::TlsVersion;

/// One endpoint: a named set of listen addresses sharing a TLS mode and versions.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub tls_mode: TlsMode,
    /// The versions served, sorted; always includes 1.2 or 1.3.
    pub tls_versions: Vec<TlsVersion>,
    /// Behaviour for sessions below TLS 1.2 before the first schedule step.
    pub legacy_tls: LegacyTls,
    /// Dated steps, sorted by date.
    pub schedule: Vec<ScheduleStep>,
    /// Whether legacy sessions need their tenant's opt-in (checked at AUTH).
    pub legacy_requires_opt_in: bool,
    /// The suites served (`tls_profile`, `tls_ciphers`, `tls13_ciphersuites`), validated.
    pub tls: crate::tls::profile::TlsPolicy,
}

impl Endpoint {
    /// Serves some version below TLS 1.2.
    pub fn serves_legacy(&self) -> bool {
        self.tls_versions.iter().any(|v| v.is_legacy())
    }
}

/// Limits on every line, message, session and time; defaults follow RFC 5321 §4.5.3.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in octets; announced with SIZE (RFC 1870).
    pub max_message_size: u64,
    /// Recipients per message (RFC 5321 §4.5.3.1.8 asks servers to take at least 100).
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4 requires at least 512).
    pub max_line_length: usize,
    /// Seconds to wait for the next command (RFC 5321 §4.5.3.2.7 recommends 300).
    pub command_timeout: u64,
    /// Seconds to wait for each block of message data (RFC 5321 §4.5.3.2.5: 3 minutes).
    pub data_timeout: u64,
    /// Seconds a whole session may last.
    pub session_timeout: u64,
    /// Seconds allowed for the client's first TLS record (its ClientHello) to arrive.
    pub tls_hello_timeout: u64,
    /// Seconds allowed for a TLS handshake.
    pub tls_handshake_timeout: u64,
    /// Error replies in one session before it is closed with 421.
    pub max_errors: u32,
    /// Concurrent SMTP sessions on this node, all endpoints together.
    pub max_sessions: usize,
    /// Concurrent SMTP sessions from one client IP address.
    pub max_sessions_per_ip: usize,
    /// Concurrent SMTP sessions from one /24 (IPv4) or /48 (IPv6).
    pub max_sessions_per_subnet: usize,
    /// New connections from one address within a minute (0: no limit).
    pub max_connections_per_ip_per_minute: u32,
    /// Seconds to hold the 220 greeting back, watching for a client that talks first
    /// (0: only what arrived before the greeting is sent is seen).
    pub greet_wait: u64,
    /// What to do with a client that sends before the greeting (RFC 5321 §3.1: it waits).
    pub pregreet: Pregreet,
    /// Octets per second message content must average, after `data_timeout` (0: none).
    pub min_data_rate: u64,
}

/// `[limits] pregreet`: a client that talks before the 220 greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pregreet {
    /// Answer `554 5.5.1` and close (the default; what Postfix's postscreen enforces).
    Refuse,
    /// Serve it anyway (for a device known to talk first).
    Allow,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 500,
            max_line_length: 4096,
            command_timeout: 300,
            data_timeout: 180,
            session_timeout: 3600,
            tls_hello_timeout: 10,
            tls_handshake_timeout: 30,
            max_errors: 10,
            max_sessions: 1000,
            max_sessions_per_ip: 100,
            max_sessions_per_subnet: 400,
            max_connections_per_ip_per_minute: 600,
            greet_wait: 0,
            pregreet: Pregreet::Refuse,
            min_data_rate: 500,
        }
    }
}

/// Failed-AUTH limits and bans (`[auth_limits]`), in the spirit of mox's per-address
/// limits and Stalwart's auto-ban. Failures are counted per client address (/32, or /64
/// for IPv6), per subnet (/24, or /48) and per login across addresses; past a limit the
/// address, subnet or login is banned for `ban_time`. A limit of 0 is no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthLimits {
    /// Off: failures are not counted and no ban is made (bans already made still hold).
    pub enabled: bool,
    /// Failures from one address within a minute, and within a day.
    pub address_per_minute: u32,
    pub address_per_day: u32,
    /// Failures from one /24 (IPv4) or /48 (IPv6) within a minute, and within a day.
    pub subnet_per_minute: u32,
    pub subnet_per_day: u32,
    /// Failures of one login name from any address within a minute, and within a day.
    pub login_per_minute: u32,
    pub login_per_day: u32,
    /// Seconds a ban lasts.
    pub ban_time: u64,
    /// Seconds the client waits before the 421 that tells it it is banned.
    pub tarpit: u64,
    /// Networks never counted nor banned (the office printers' subnet); a login ban does
    /// not refuse them either. CIDR networks or single addresses.
    #[serde(deserialize_with = "networks")]
    pub exempt: Vec<ipnet::IpNet>,
}

/// Networks as operators write them: `10.1.0.0/16`, or one address (`192.0.2.7`).
fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw: Vec<String> = Deserialize::deserialize(d)?;
    raw.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| ipnet::IpNet::from(ip.to_canonical())))
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a network like 10.1.0.0/16 or an address")))
        })
        .collect()
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            address_per_minute: 10,
            address_per_day: 50,
            subnet_per_minute: 30,
            subnet_per_day: 200,
            login_per_minute: 10,
            login_per_day: 50,
            ban_time: 3600,
            tarpit: 3,
            exempt: Vec::new(),
        }
    }
}

/// What to do with a bare CR or LF in message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Refuse the message with 554 5.6.0 (the default; defeats SMTP smuggling).
    Reject,
    /// Accept it and store every bare CR or LF as CRLF.
    Normalize,
}

/// SMTP protocol behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// `reject` or `normalize` bare CR/LF in DATA and BDAT content.
    pub bare_line_endings: BareLineEndings,
    /// A file of `address token` lines: AUTH XOAUTH2 is offered and accepts these bearer
    /// tokens (for a Mailgate that stands in for an OAuth2 upstream in tests and labs).
    pub xoauth2_tokens_file: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self { bare_line_endings: BareLineEndings::Reject, xoauth2_tokens_file: None }
    }
}

/// The queue manager. Durations are seconds, or strings such as `"5m"`, `"4h"`, `"5d"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Seconds between two scans of the queue for deliveries that are due (the longest a
    /// due retry waits to be noticed).
    #[serde(deserialize_with = "de_seconds")]
    pub retry_interval: u64,
    /// Seconds that shutdown waits for sessions and deliveries in flight.
    #[serde(deserialize_with = "de_seconds")]
    pub shutdown_grace: u64,
    /// Delay before the first retry of a temporary failure; it doubles at each attempt.
    #[serde(deserialize_with = "de_seconds")]
    pub backoff_min: u64,
    /// The longest delay between two attempts.
    #[serde(deserialize_with = "de_seconds")]
    pub backoff_max: u64,
    /// How long a message is retried before it is bounced (Postfix: 5 days).
    #[serde(deserialize_with = "de_seconds")]
    pub max_lifetime: u64,
    /// After how long an undelivered message earns its sender a delay warning (0: never).
    #[serde(deserialize_with = "de_seconds")]
    pub delay_warning: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            retry_interval: 60,
            shutdown_grace: 30,
            backoff_min: 300,
            backoff_max: 3600,
            max_lifetime: 5 * 86_400,
            delay_warning: 4 * 3600,
        }
    }
}

/// Seconds as an integer, or a string with a unit: `"90s"`, `"5m"`, `"4h"`, `"5d"`.
fn de_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_duration(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a duration like 300, \"5m\", \"4h\" or \"5d\""))),
    }
}

/// `"90s"`, `"5m"`, `"4h"`, `"5d"`, `"2w"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `error`, `warn`, `info`, `debug`, or per module (`mailgate=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// `["1.2", "1.3"]`, or `["1.3"]` for the `modern` profile.
fn default_tls_versions(profile: Option<crate::tls::profile::Profile>) -> Vec<String> {
    match profile {
        Some(crate::tls::profile::Profile::Modern) => vec!["1.3".into()],
        _ => vec!["1.2".into(), "1.3".into()],
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub hostname: String,
    pub data_dir: PathBuf,
    pub certificates: Vec<CertificatePair>,
    /// Seed for the schedule's random source; `None` seeds from the OS.
    pub schedule_seed: Option<u64>,
    pub endpoints: Vec<Endpoint>,
    pub limits: Limits,
    pub auth_limits: AuthLimits,
    pub smtp: SmtpConfig,
    pub queue: QueueConfig,
    pub log: LogConfig,
    pub usage: UsageConfig,
    pub directory: DirectoryConfig,
    pub delivery: DeliveryConfig,
    pub smarthosts: Vec<Smarthost>,
    /// The admin listener, if configured.
    pub admin: Option<AdminConfig>,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates TOML text; `path` anchors relative paths and error messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(text, &e),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Validator { path }.validate(raw, &base)
    }

    /// The SQLite directory database.
    pub fn directory_path(&self) -> PathBuf {
        self.data_dir.join("directory.sqlite")
    }
    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
    /// The usage (TLS report) database.
    pub fn usage_path(&self) -> PathBuf {
        self.data_dir.join("usage.sqlite")
    }
    /// The node name written into usage events.
    pub fn node_name(&self) -> &str {
        self.usage.node.as_deref().unwrap_or(&self.hostname)
    }
    /// The root of local mailboxes: `<data>/maildir/<domain>/<localpart>/`.
    pub fn maildir_root(&self) -> PathBuf {
        self.data_dir.join("maildir")
    }
    /// The smart host that relays a tenant's remote recipients, if any.
    pub fn smarthost_for(&self, tenant: &str) -> Option<&Smarthost> {
        let name = self.delivery.tenants.get(tenant).and_then(|t| t.smarthost.as_ref()).or(self.delivery.smarthost.as_ref())?;
        self.smarthost(name)
    }
    /// The smart host of this name.
    pub fn smarthost(&self, name: &str) -> Option<&Smarthost> {
        self.smarthosts.iter().find(|s| s.name == name)
    }
    /// How a tenant's local recipients are delivered.
    pub fn local_delivery(&self, tenant: &str) -> &LocalDelivery {
        self.delivery.tenants.get(tenant).and_then(|t| t.local.as_ref()).unwrap_or(&self.delivery.local)
    }
    /// The queue manager's control socket (used by `mailgate queue`).
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_owned(), key: key.into(), problem: problem.into() }
    }

    fn validate(&self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let hostname = match raw.hostname {
            Some(h) => self.hostname(&h)?,
            None => system_hostname(),
        };
        let data_dir = base.join(raw.data_dir.ok_or_else(|| {
            self.err("data_dir", "is required: the directory for the database, spool and mailboxes")
        })?);
        if raw.tls.certificate.is_empty() {
            return Err(self.err("tls.certificate", "at least one certificate/key pair is required"));
        }
        let certificates = raw
            .tls
            .certificate
            .into_iter()
            .map(|c| CertificatePair { cert: base.join(c.cert), key: base.join(c.key) })
            .collect();
        if raw.endpoints.is_empty() {
            return Err(self.err("endpoint", "at least one [[endpoint]] is required"));
        }
        let mut endpoints = Vec::new();
        for (i, e) in raw.endpoints.into_iter().enumerate() {
            endpoints.push(self.endpoint(i, e, &endpoints)?);
        }
        self.limits(&raw.limits)?;
        self.auth_limits(&raw.auth_limits)?;
        if raw.queue.retry_interval == 0 || raw.queue.retry_interval > 86_400 {
            return Err(self.err("queue.retry_interval", "must be between 1 and 86400 seconds"));
        }
        if raw.queue.shutdown_grace > 3600 {
            return Err(self.err("queue.shutdown_grace", "must be at most 3600 seconds"));
        }
        self.queue(&raw.queue)?;
        let smarthosts = self.smarthosts(raw.smarthost, base)?;
        let delivery = self.delivery(raw.delivery, &smarthosts, base)?;
        let mut smtp = raw.smtp;
        smtp.xoauth2_tokens_file = smtp.xoauth2_tokens_file.map(|p| base.join(p));
        let u = &raw.usage;
        if u.raw_retention_days < 1 || u.rollup_retention_days < 1 {
            return Err(self.err("usage.raw_retention_days", "retention periods must be at least 1 day"));
        }
        if u.buffer < 1 {
            return Err(self.err("usage.buffer", "must be at least 1"));
        }
        if !valid_log_filter(&raw.log.level) {
            return Err(self.err("log.level", format!("{:?} is not a level (error, warn, info, debug, trace) or filter", raw.log.level)));
        }
        Ok(Config {
            path: self.path.to_owned(),
            hostname,
            data_dir,
            certificates,
            schedule_seed: raw.tls.schedule_seed,
            endpoints,
            limits: raw.limits,
            auth_limits: AuthLimits { exempt: raw.auth_limits.exempt.iter().map(|n| n.trunc()).collect(), ..raw.auth_limits },
            smtp,
            queue: raw.queue,
            log: raw.log,
            usage: raw.usage,
            directory: raw.directory,
            delivery,
            smarthosts,
            admin: self.admin(raw.admin)?,
        })
    }

    fn admin(&self, a: Option<AdminConfig>) -> Result<Option<AdminConfig>, ConfigError> {
        let Some(a) = a else { return Ok(None) };
        if !(1024..=64 * 1024 * 1024).contains(&a.max_body) {
            return Err(self.err("admin.max_body", "must be between 1024 octets and 64 MiB"));
        }
        if !(1..=3600).contains(&a.request_timeout) {
            return Err(self.err("admin.request_timeout", "must be between 1 and 3600 seconds"));
        }
        if !(1..=10_000).contains(&a.max_connections) {
            return Err(self.err("admin.max_connections", "must be between 1 and 10000"));
        }
        Ok(Some(a))
    }

    fn auth_limits(&self, a: &AuthLimits) -> Result<(), ConfigError> {
        if !(1..=30 * 86_400).contains(&a.ban_time) {
            return Err(self.err("auth_limits.ban_time", "must be between 1 second and 30 days"));
        }
        if a.tarpit > 60 {
            return Err(self.err("auth_limits.tarpit", "must be at most 60 seconds"));
        }
        Ok(())
    }

    fn queue(&self, q: &QueueConfig) -> Result<(), ConfigError> {
        if q.backoff_min == 0 || q.backoff_min > q.backoff_max {
            return Err(self.err("queue.backoff_min", "must be at least 1 second and at most queue.backoff_max"));
        }
        if q.backoff_max > 86_400 {
            return Err(self.err("queue.backoff_max", "must be at most a day"));
        }
        if q.max_lifetime == 0 || q.max_lifetime > 30 * 86_400 {
            return Err(self.err("queue.max_lifetime", "must be between 1 second and 30 days"));
        }
        if q.delay_warning >= q.max_lifetime && q.delay_warning != 0 {
            return Err(self.err("queue.delay_warning", "must be shorter than queue.max_lifetime (or 0 for no warning)"));
        }
        Ok(())
    }

    fn hostname(&self, h: &str) -> Result<String, ConfigError> {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            Ok(h.to_ascii_lowercase())
        } else {
            Err(self.err("hostname", format!("{h:?} is not a valid DNS host name")))
        }
    }

    fn endpoint(&self, i: usize, e: RawEndpoint, seen: &[Endpoint]) -> Result<Endpoint, ConfigError> {
        let key = format!("endpoint[{i}]");
        if e.name.trim().is_empty() {
            return Err(self.err(format!("{key}.name"), "must not be empty"));
        }
        if seen.iter().any(|s| s.name == e.name) {
            return Err(self.err(format!("{key}.name"), format!("endpoint name {:?} is used twice", e.name)));
        }
        if e.listen.is_empty() {
            return Err(self.err(format!("{key}.listen"), "at least one address is required"));
        }
        let mut listen = Vec::new();
        for (j, a) in e.listen.iter().enumerate() {
            let addr: SocketAddr = a.parse().map_err(|_| {
                self.err(format!("{key}.listen[{j}]"), format!("{a:?} is not an address like \"0.0.0.0:587\""))
            })?;
            listen.push(addr);
        }
        let mut tls_versions = Vec::new();
        let raw_versions = e.tls_versions.unwrap_or_else(|| default_tls_versions(e.tls_profile));
        for (j, v) in raw_versions.iter().enumerate() {
            let parsed = TlsVersion::parse(v).ok_or_else(|| {
                self.err(format!("{key}.tls_versions[{j}]"), format!("{v:?}: expected \"1.0\", \"1.1\", \"1.2\" or \"1.3\""))
            })?;
            if !tls_versions.contains(&parsed) {
                tls_versions.push(parsed);
            }
        }
        tls_versions.sort();
        if !tls_versions.iter().any(|v| !v.is_legacy()) {
            return Err(self.err(
                format!("{key}.tls_versions"),
                "must include \"1.2\" or \"1.3\": modern clients are served on every endpoint",
            ));
        }
        let serves_legacy = tls_versions.iter().any(|v| v.is_legacy());
        let legacy_tls = e.legacy_tls.unwrap_or(if serves_legacy { LegacyTls::Allow } else { LegacyTls::Explain });
        let schedule = self.schedule(&key, e.schedule)?;
        let may_serve = legacy_tls == LegacyTls::Allow
            || schedule.iter().any(|s| matches!(s.action, StepAction::RejectPercent(p) if p < 100) || s.action == StepAction::Set(LegacyTls::Allow));
        if may_serve && !serves_legacy {
            return Err(self.err(
                format!("{key}.tls_versions"),
                "legacy sessions may be served (legacy_tls = \"allow\" or a reject_percent below 100): list \"1.0\" and/or \"1.1\" here",
            ));
        }
        let ciphers = e.tls_ciphers.map(SuiteList::names);
        let ciphers13 = e.tls13_ciphersuites.map(SuiteList::names);
        let tls = crate::tls::profile::TlsPolicy::new(&tls_versions, e.tls_profile, ciphers.as_deref(), ciphers13.as_deref())
            .map_err(|p| self.err(format!("{key}.{}", p.key), p.problem))?;
        Ok(Endpoint {
            name: e.name,
            listen,
            tls_mode: e.tls_mode,
            tls_versions,
            legacy_tls,
            schedule,
            legacy_requires_opt_in: e.legacy_requires_opt_in,
            tls,
        })
    }

    fn schedule(&self, key: &str, raw: Vec<RawStep>) -> Result<Vec<ScheduleStep>, ConfigError> {
        let mut steps: Vec<ScheduleStep> = Vec::new();
        for (j, step) in raw.into_iter().enumerate() {
            let k = format!("{key}.schedule[{j}]");
            let from = chrono::NaiveDate::parse_from_str(&step.from, "%Y-%m-%d")
                .map_err(|_| self.err(format!("{k}.from"), format!("{:?} is not a date like \"2026-12-01\"", step.from)))?;
            let action = match (step.reject_percent, step.legacy_tls) {
                (Some(p), None) if p <= 100 => StepAction::RejectPercent(p),
                (Some(p), None) => return Err(self.err(format!("{k}.reject_percent"), format!("{p} is not a percentage (0 to 100)"))),
                (None, Some(l)) => StepAction::Set(l),
                _ => return Err(self.err(k, "give exactly one of reject_percent or legacy_tls")),
            };
            if steps.iter().any(|s| s.from == from) {
                return Err(self.err(format!("{k}.from"), format!("two steps start on {from}")));
            }
            steps.push(ScheduleStep { from, action });
        }
        steps.sort_by_key(|s| s.from);
        Ok(steps)
    }

    fn limits(&self, l: &Limits) -> Result<(), ConfigError> {
        let checks: [(&str, bool, &str); 16] = [
            ("limits.greet_wait", l.greet_wait <= 30, "must be at most 30 seconds (clients give up on a greeting after a few minutes, RFC 5321 §4.5.3.2.1, and every waiting connection holds a slot)"),
            ("limits.session_timeout", l.session_timeout <= 7 * 86_400, "must be at most 604800 (a week)"),
            ("limits.command_timeout", l.command_timeout <= 86_400 && l.data_timeout <= 86_400 && l.tls_handshake_timeout <= 3600 && l.tls_hello_timeout <= 3600, "timeouts must be at most a day (handshake and hello: an hour)"),
            ("limits.max_sessions", l.max_sessions <= 1_000_000, "must be at most 1000000"),
            ("limits.tls_hello_timeout", l.tls_hello_timeout >= 1, "must be at least 1 second"),
            ("limits.max_message_size", l.max_message_size >= 1024, "must be at least 1024 octets"),
            ("limits.max_recipients", l.max_recipients >= 1, "must be at least 1 (RFC 5321 asks for 100)"),
            ("limits.max_line_length", l.max_line_length >= 512, "must be at least 512 (RFC 5321 §4.5.3.1.4)"),
            ("limits.command_timeout", l.command_timeout >= 1, "must be at least 1 second"),
            ("limits.data_timeout", l.data_timeout >= 1, "must be at least 1 second"),
            ("limits.session_timeout", l.session_timeout >= 1, "must be at least 1 second"),
            ("limits.tls_handshake_timeout", l.tls_handshake_timeout >= 1, "must be at least 1 second"),
            ("limits.max_errors", l.max_errors >= 1, "must be at least 1"),
            ("limits.max_sessions", l.max_sessions >= 1, "must be at least 1"),
            ("limits.max_sessions_per_ip", l.max_sessions_per_ip >= 1, "must be at least 1"),
            ("limits.max_sessions_per_subnet", l.max_sessions_per_subnet >= 1, "must be at least 1"),
        ];
        for (key, ok, problem) in checks {
            if !ok {
                return Err(self.err(key, problem));
            }
        }
        Ok(())
    }
}

/// A level (`info`) or comma-separated `target=level` directives; a bare unknown word
/// (which `tracing` would read as a target name and so log nothing) is refused.
fn valid_log_filter(filter: &str) -> bool {
    let level = |l: &str| matches!(l.trim().to_ascii_lowercase().as_str(), "off" | "error" | "warn" | "info" | "debug" | "trace");
    !filter.trim().is_empty()
        && filter.split(',').all(|d| match d.split_once('=') {
            Some((target, l)) => !target.trim().is_empty() && level(l),
            None => level(d),
        })
}

/// `line L, column C: message` instead of toml's multi-line snippet.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            format!("line {line}, column {column} (`{source}`): {message}")
        }
        None => message,
    }
}

/// The machine's host name, for the greeting and Received headers when none is configured.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        hostname = "mx.example.test"
        data_dir = "data"
        [[tls.certificate]]
        cert = "tls/cert.pem"
        key = "tls/key.pem"
        [[endpoint]]
        name = "submission"
        listen = ["127.0.0.1:587"]
        tls_mode = "starttls"
    "#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/mailgate/mailgate.toml"), text)
    }

    #[test]
    fn legacy_defaults_schedule_and_hints() {
        let text = format!(
            "{GOOD}\n[[endpoint]]\nname = \"legacy\"\nlisten = [\"127.0.0.1:2588\"]\ntls_mode = \"starttls\"\n\
             tls_versions = [\"1.0\", \"1.1\", \"1.2\", \"1.3\"]\n\
             schedule = [{{ from = \"2027-03-01\", legacy_tls = \"refuse\" }}, {{ from = \"2026-12-01\", reject_percent = 10 }}]\n"
        );
        let c = load(&text).unwrap();
        let (std, legacy) = (&c.endpoints[0], &c.endpoints[1]);
        assert_eq!(std.legacy_tls, LegacyTls::Explain);
        assert_eq!(legacy.legacy_tls, LegacyTls::Allow);
        assert_eq!(legacy.schedule[0].action, StepAction::RejectPercent(10));
        assert_eq!(legacy.schedule[1].action, StepAction::Set(LegacyTls::Refuse));
        let bad = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\nlegacy_tls = \"allow\"");
        assert!(error_of(&bad).contains("endpoint[0].tls_versions"));
        let bad = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\nschedule = [{ from = \"2026-13-01\", reject_percent = 100 }]");
        assert!(error_of(&bad).contains("endpoint[0].schedule[0].from"));
    }

    #[test]
    fn tls_profiles_default_by_versions_and_errors_name_the_endpoint_key() {
        use crate::tls::profile::Profile;
        let legacy = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_versions = [\"1.0\", \"1.2\"]");
        assert_eq!(load(GOOD).unwrap().endpoints[0].tls.profile, Profile::Intermediate);
        assert_eq!(load(&legacy).unwrap().endpoints[0].tls.profile, Profile::Legacy);
        let modern = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_profile = \"modern\"");
        assert_eq!(load(&modern).unwrap().endpoints[0].tls_versions, vec![TlsVersion::Tls13], "modern defaults to TLS 1.3 only");
        let colons = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_ciphers = \"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384\"");
        assert_eq!(load(&colons).unwrap().endpoints[0].tls.tls12.len(), 2);
        let weak = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_ciphers = [\"RC4-SHA\"]");
        assert!(error_of(&weak).contains("key `endpoint[0].tls_ciphers[0]`: \"RC4-SHA\" is a weak suite"), "{}", error_of(&weak));
        let unknown = GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_profile = \"old\"");
        assert!(error_of(&unknown).contains("tls_profile"), "{}", error_of(&unknown));
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/mailgate/data"));
        assert_eq!(c.certificates[0].cert, PathBuf::from("/etc/mailgate/tls/cert.pem"));
        assert_eq!(c.endpoints[0].tls_versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(c.limits.max_message_size, 35 * 1024 * 1024);
        assert_eq!(c.limits.max_recipients, 500);
        assert_eq!(c.smtp.bare_line_endings, BareLineEndings::Reject);
    }

    fn error_of(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("127.0.0.1:587", "nonsense"), "endpoint[0].listen[0]"),
            (GOOD.replace("\"starttls\"", "\"tls\""), "tls_mode"),
            (format!("{GOOD}\n[limits]\nmax_line_length = 80\n"), "limits.max_line_length"),
            (GOOD.replace("data_dir = \"data\"", ""), "data_dir"),
            (format!("{GOOD}\nunknown_key = 1\n"), "unknown_key"),
            (GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_versions = [\"1.0\"]"), "endpoint[0].tls_versions"),
            (GOOD.replace("tls_mode = \"starttls\"", "tls_mode = \"starttls\"\ntls_versions = [\"1.4\"]"), "endpoint[0].tls_versions[0]"),
            (GOOD.replace("mx.example.test", "bad host!"), "hostname"),
            (format!("{GOOD}\n[log]\nlevel = \"verbose\"\n"), "log.level"),
            (format!("{GOOD}\n[queue]\nretry_interval = 0\n"), "queue.retry_interval"),
            (format!("{GOOD}\n[limits]\nmax_sessions_per_ip = 0\n"), "limits.max_sessions_per_ip"),
        ];
        for (text, key) in cases {
            let e = error_of(&text);
            assert!(e.contains(key), "error {e:?} should name {key}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
}
