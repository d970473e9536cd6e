//! The `mailgate` command line: serve, check-config, demo, and directory administration.
//!
//! Commands own no business logic: each one loads the configuration, calls the operation
//! of `crate::ops` that the admin API calls too, as the operator (the audit log names the
//! OS user), and prints the result as a table, CSV or JSON. Errors go to stderr as one
//! sentence and exit with status 1.

mod ban;
mod queue;

use crate::config::Config;
use crate::directory::UserChanges;
use crate::ops::{Caller, KeyRequest, LegacyUpdate, NewUser, Ops, OpsError, ReportQuery, WhatIfQuery};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "mailgate", version, about = "Multi-tenant SMTP submission gateway")]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "MAILGATE_CONFIG", default_value = "./mailgate.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or Ctrl-C.
    Serve,
    /// Validate the configuration file and the certificates it names.
    CheckConfig,
    /// Set up and run a self-contained demo on 127.0.0.1.
    Demo(crate::demo::DemoArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage accepted domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// TLS usage reports.
    #[command(subcommand)]
    Report(ReportCmd),
    /// Usage data maintenance.
    #[command(subcommand)]
    Usage(UsageCmd),
    /// Inspect and act on queued messages.
    #[command(subcommand)]
    Queue(queue::QueueCmd),
    /// Admin API keys (for the HTTP API and the dashboard).
    #[command(subcommand)]
    Apikey(ApiKeyCmd),
    /// The audit log: every change made by the CLI or the API.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Bans at AUTH (made by [auth_limits] or by hand).
    #[command(subcommand)]
    Ban(ban::BanCmd),
}

#[derive(Subcommand)]
enum ApiKeyCmd {
    /// Make a key for the operator or one tenant's admin; it is printed once.
    Add {
        /// A key with every right (all tenants, metrics, the veto).
        #[arg(long, conflicts_with = "tenant", required_unless_present = "tenant")]
        operator: bool,
        /// A key for this tenant's admin: it sees and changes this tenant only.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Last day (inclusive, UTC) the key works, YYYY-MM-DD.
        #[arg(long)]
        expires: Option<String>,
        /// Accept the key only from this network (CIDR or address); repeatable.
        #[arg(long, value_name = "CIDR")]
        allow_ip: Vec<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Revoke a key: refused from the next request on.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Changes, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// The last N days or weeks: 7d, 12w (default 30d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(clap::Args, Clone)]
struct ReportArgs {
    /// Only this tenant's rows.
    #[arg(long)]
    tenant: Option<String>,
    /// The last N days or weeks, ending today: 7d, 90d, 12w (default 7d).
    #[arg(long)]
    since: Option<String>,
    /// First day, YYYY-MM-DD (with --to, default today).
    #[arg(long)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD.
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ReportFormat {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Per sender: messages, share of each TLS version, endpoints, last seen, devices.
    Tls(ReportArgs),
    /// Every sender and device that used or tried TLS below 1.2, refused attempts included.
    Legacy(ReportArgs),
    /// Who would fail on a date (schedule and opt-in end dates), or with the opt-in off.
    WhatIf {
        #[command(flatten)]
        args: ReportArgs,
        /// The date to evaluate, YYYY-MM-DD.
        #[arg(long, conflicts_with_all = ["disable_legacy", "drop"], required_unless_present_any = ["disable_legacy", "drop"])]
        on: Option<String>,
        /// The tenant's legacy-TLS opt-in switched off.
        #[arg(long, conflicts_with = "drop")]
        disable_legacy: bool,
        /// A kind of cipher suite no longer served: static-rsa (RSA key exchange) or cbc.
        #[arg(long, value_name = "static-rsa|cbc")]
        drop: Option<String>,
        /// With --drop: only on this endpoint (default: every endpoint).
        #[arg(long, requires = "drop")]
        endpoint: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsageCmd {
    /// Load synthetic usage events (for benchmarks): raw events and their daily rollups.
    LoadSynthetic {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Spread over this many days, ending today.
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long, default_value_t = 20)]
        tenants: u32,
        /// Senders per tenant.
        #[arg(long, default_value_t = 200)]
        senders: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(v: OnOff) -> bool {
        matches!(v, OnOff::On)
    }
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Add a tenant.
    Add { name: String },
    /// List tenants.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one tenant.
    Show {
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Change a tenant's legacy TLS (1.0/1.1) settings.
    Set {
        name: String,
        /// Opt in to legacy TLS on endpoints that require an opt-in.
        #[arg(long, value_enum)]
        allow_legacy_tls: Option<OnOff>,
        /// Last day (inclusive) of the opt-in, YYYY-MM-DD; "none" removes the end date.
        #[arg(long)]
        legacy_until: Option<String>,
        /// Only these users (comma-separated addresses); "" means all users.
        #[arg(long)]
        legacy_users: Option<String>,
        /// Only clients in these networks (comma-separated CIDRs); "" means any network.
        #[arg(long)]
        legacy_networks: Option<String>,
        /// Operator veto: the tenant cannot opt in.
        #[arg(long, value_enum)]
        forbid_legacy_tls: Option<OnOff>,
    },
}

#[derive(Subcommand)]
enum DomainCmd {
    /// Add an accepted domain to a tenant.
    Add {
        domain: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read from stdin or generated and printed once.
    Add {
        address: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, value_enum, default_value = "on")]
        smtp_auth: OnOff,
    },
    /// List users.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Change a user's settings.
    Set {
        address: String,
        #[arg(long, value_enum)]
        smtp_auth: Option<OnOff>,
        #[arg(long, value_enum)]
        enabled: Option<OnOff>,
    },
    /// Set a new password (from stdin, or generated and printed once).
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Commands that print (`queue list | head`) end quietly when the reader goes away, as
/// Unix tools do, instead of panicking on a broken pipe. Not for the server: a client
/// closing its socket must never end the process.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve | Command::Demo(_)) {
        restore_sigpipe();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailgate: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(&cli.config).await,
        Command::CheckConfig => check_config(&cli.config),
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Tenant(cmd) => with_ops(&cli.config, |ops, c| Box::pin(tenant(ops, c, cmd))).await,
        Command::Domain(cmd) => with_ops(&cli.config, |ops, c| Box::pin(domain(ops, c, cmd))).await,
        Command::User(cmd) => with_ops(&cli.config, |ops, c| Box::pin(user(ops, c, cmd))).await,
        Command::Apikey(cmd) => with_ops(&cli.config, |ops, c| Box::pin(apikey(ops, c, cmd))).await,
        Command::Ban(cmd) => with_ops(&cli.config, |ops, c| Box::pin(ban::run(ops, c, cmd))).await,
        Command::Audit(cmd) => match cmd {
            AuditCmd::List { tenant, since, format } => with_ops(&cli.config, |ops, c| Box::pin(audit(ops, c, tenant, since, format))).await,
        },
        Command::Report(cmd) => with_ops(&cli.config, |ops, c| Box::pin(report(ops, c, cmd))).await,
        Command::Usage(cmd) => usage(&cli.config, cmd).await,
        Command::Queue(cmd) => queue::run(&cli.config, cmd).await,
    }
}

async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(path)?);
    crate::server::init_logging(&config.log.level);
    crate::server::run_until_signal(config, |_| {}).await
}


fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let (keys, kinds) = crate::tls::load_keys(&config.certificates).context("TLS certificates")?;
    let mut endpoints = Vec::new();
    for ep in &config.endpoints {
        let tls = crate::tls::EndpointTls::new(&config.certificates, &keys, kinds, &ep.tls_versions, &ep.tls)
            .with_context(|| format!("endpoint {}: TLS configuration", ep.name))?;
        endpoints.push(endpoint_tls_lines(ep, &tls, crate::clock::today(&crate::clock::system_clock())));
    }
    for s in &config.smarthosts {
        crate::delivery::smarthost::check_offline(s).map_err(|e| anyhow::anyhow!("smart host {}: {e}", s.name))?;
    }
    if let Some(tokens) = &config.smtp.xoauth2_tokens_file {
        std::fs::read(tokens).with_context(|| format!("smtp.xoauth2_tokens_file {}", tokens.display()))?;
    }
    let smarthosts = match config.smarthosts.len() {
        0 => String::new(),
        n => format!(", {n} smart host(s)"),
    };
    println!(
        "{}: OK ({} endpoint(s), {} certificate(s){smarthosts}, data_dir {})",
        path.display(),
        config.endpoints.len(),
        config.certificates.len(),
        config.data_dir.display()
    );
    for lines in endpoints {
        print!("{lines}");
    }
    Ok(())
}

/// What `check-config` prints of an endpoint: its profile, then per version the suites a
/// client can get, in the server's order, or what happens instead.
fn endpoint_tls_lines(ep: &crate::config::Endpoint, tls: &crate::tls::EndpointTls, today: chrono::NaiveDate) -> String {
    use crate::tls::TlsVersion;
    let listen: Vec<String> = ep.listen.iter().map(|a| a.to_string()).collect();
    let custom = match (ep.tls.custom_tls12, ep.tls.custom_tls13) {
        (false, false) => "",
        _ => " with tls_ciphers/tls13_ciphersuites",
    };
    let mode = if ep.tls_mode == crate::config::TlsMode::Starttls { "starttls" } else { "implicit" };
    let mut out = format!("endpoint {} ({mode}, {}): tls_profile {:?}{custom}\n", ep.name, listen.join(" "), ep.tls.profile.name());
    let suites = |v: TlsVersion| tls.suites_at(v).iter().map(|s| s.openssl).collect::<Vec<_>>().join(" ");
    for v in [TlsVersion::Tls13, TlsVersion::Tls12, TlsVersion::Tls11, TlsVersion::Tls10] {
        let what = if !v.is_legacy() && tls.serves(v) {
            suites(v)
        } else if v == TlsVersion::Tls12 {
            format!("only to answer 421 (TLS 1.2 is not listed): {}", suites(v))
        } else if v == TlsVersion::Tls13 {
            "not offered".to_string()
        } else {
            match crate::policy::legacy_rule(ep, today) {
                crate::policy::LegacyRule::Refuse => "refused with a protocol_version alert (legacy_tls \"refuse\" today)".to_string(),
                _ if !tls.serves(v) => format!("only to answer 421 4.7.66, no mail: {}", suites(v)),
                crate::policy::LegacyRule::Explain => format!("only to answer 421 4.7.66 (legacy_tls \"explain\" today), no mail: {}", suites(v)),
                _ => format!("{} (tenants that opted in)", suites(v)),
            }
        };
        out.push_str(&format!("  {}: {what}\n", v.human()));
    }
    out
}

/// Runs a command on the operations layer as the CLI's caller (the operator, named by
/// the OS user in the audit log); prints what the operations left to say on stderr.
async fn with_ops<F>(path: &Path, command: F) -> anyhow::Result<()>
where
    F: for<'a> FnOnce(&'a Ops, &'a Caller) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>,
{
    let config = Arc::new(Config::load(path)?);
    let ops = Ops::open(config).await?;
    let caller = Caller::cli();
    let result = command(&ops, &caller).await;
    for w in ops.take_warnings() {
        eprintln!("warning: {w}");
    }
    result
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

async fn tenant(ops: &Ops, c: &Caller, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add { name } => {
            ops.add_tenant(c, &name).await?;
            println!("tenant {name} added");
        }
        TenantCmd::List { format } => {
            let tenants = ops.list_tenants(c).await?;
            if format == Format::Json {
                return print_json(&tenants);
            }
            println!("{:<24} {:>6}  DOMAINS", "TENANT", "USERS");
            for t in tenants {
                println!("{:<24} {:>6}  {}", t.name, t.users, t.domains.join(","));
            }
        }
        TenantCmd::Show { name, format } => {
            let t = ops.tenant(c, &name).await?;
            if format == Format::Json {
                return print_json(&t);
            }
            println!("tenant:  {}\ndomains: {}\nusers:   {}", t.name, t.domains.join(", "), t.users);
            print_legacy(&t.legacy);
        }
        TenantCmd::Set { name, allow_legacy_tls, legacy_until, legacy_users, legacy_networks, forbid_legacy_tls } => {
            let update = LegacyUpdate {
                allowed: allow_legacy_tls.map(Into::into),
                until: legacy_until.as_deref().map(parse_until).transpose()?,
                users: legacy_users.as_deref().map(|u| list(u).map(String::from).collect()),
                networks: legacy_networks.as_deref().map(|n| list(n).map(String::from).collect()),
                forbidden: forbid_legacy_tls.map(Into::into),
            };
            if update.allowed.is_none()
                && update.until.is_none()
                && update.users.is_none()
                && update.networks.is_none()
                && update.forbidden.is_none()
            {
                bail!("nothing to change: give --allow-legacy-tls, --legacy-until, --legacy-users, --legacy-networks or --forbid-legacy-tls");
            }
            let s = ops.set_legacy(c, &name, &update).await.map_err(cli_error(&[
                ("until", "--legacy-until"),
                ("users", "--legacy-users"),
                ("networks", "--legacy-networks"),
            ]))?;
            println!("tenant {name} updated");
            print_legacy(&s);
        }
    }
    Ok(())
}

/// An operation's error in the CLI's words: a field named by its flag.
fn cli_error(flags: &'static [(&'static str, &'static str)]) -> impl Fn(OpsError) -> anyhow::Error {
    move |e| match &e {
        OpsError::Invalid { field, message } => {
            let base = field.split('[').next().unwrap_or_default();
            match flags.iter().find(|(f, _)| *f == base) {
                Some((_, flag)) => anyhow::anyhow!("{flag}: {message}"),
                None => anyhow::Error::new(e),
            }
        }
        _ => anyhow::Error::new(e),
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

fn parse_until(s: &str) -> anyhow::Result<Option<chrono::NaiveDate>> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    parse_date(s, "--legacy-until").map(Some).map_err(|e| anyhow::anyhow!("{e}, or none"))
}

fn parse_date(s: &str, flag: &str) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| anyhow::anyhow!("{flag} {s:?}: expected a date like 2027-03-31"))
}

fn print_legacy(l: &crate::directory::LegacySettings) {
    let all = |v: &[String], what: &str| if v.is_empty() { format!("all {what}") } else { v.join(", ") };
    println!("legacy TLS (1.0/1.1):");
    println!("  opted in:  {}", on_off(l.allowed));
    println!("  until:     {}", l.until.map_or("no end date".to_string(), |d| format!("{d} (inclusive)")));
    println!("  users:     {}", all(&l.users, "users"));
    let nets: Vec<String> = l.networks.iter().map(|n| n.to_string()).collect();
    println!("  networks:  {}", all(&nets, "networks"));
    println!("  forbidden by operator: {}", if l.forbidden { "yes (the tenant cannot opt in)" } else { "no" });
}

async fn domain(ops: &Ops, c: &Caller, cmd: DomainCmd) -> anyhow::Result<()> {
    match cmd {
        DomainCmd::Add { domain, tenant } => {
            let d = ops.add_domain(c, &domain, &tenant).await?;
            println!("accepted domain {} added to tenant {tenant}", d.name);
        }
    }
    Ok(())
}

/// Reads a password from stdin (first line); `None`: one is generated and printed once.
fn password(from_stdin: bool) -> anyhow::Result<Option<String>> {
    if !from_stdin {
        return Ok(None);
    }
    let mut s = String::new();
    std::io::stdin().take(4096).read_to_string(&mut s)?;
    let p = s.lines().next().unwrap_or("").to_string();
    if p.is_empty() {
        bail!("--password-stdin: no password on standard input");
    }
    Ok(Some(p))
}

fn print_generated(generated: Option<String>) {
    if let Some(pw) = generated {
        println!("password: {pw}");
        eprintln!("(shown once; it is stored only as an argon2id hash)");
    }
}

async fn user(ops: &Ops, c: &Caller, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add { address, password_stdin, smtp_auth } => {
            let new = NewUser { address, password: password(password_stdin)?, smtp_auth: smtp_auth.into() };
            let (u, generated) = ops.add_user(c, &new).await?;
            println!("user {} added to tenant {}", u.address, u.tenant);
            print_generated(generated);
        }
        UserCmd::List { tenant, format } => {
            let users = ops.list_users(c, tenant.as_deref()).await?;
            if format == Format::Json {
                return print_json(&users);
            }
            println!("{:<40} {:<20} {:<8} SMTP_AUTH", "ADDRESS", "TENANT", "ENABLED");
            for u in users {
                println!("{:<40} {:<20} {:<8} {}", u.address, u.tenant, on_off(u.enabled), on_off(u.smtp_auth));
            }
        }
        UserCmd::Set { address, smtp_auth, enabled } => {
            if smtp_auth.is_none() && enabled.is_none() {
                bail!("nothing to change: give --smtp-auth on|off and/or --enabled on|off");
            }
            let changes = UserChanges { smtp_auth: smtp_auth.map(Into::into), enabled: enabled.map(Into::into) };
            let u = ops.set_user(c, &address, &changes).await?;
            println!("user {}: enabled {}, smtp-auth {}", u.address, on_off(u.enabled), on_off(u.smtp_auth));
        }
        UserCmd::Passwd { address, password_stdin } => {
            let pw = password(password_stdin)?;
            let generated = ops.set_password(c, &address, pw.as_deref()).await?;
            println!("password of {} changed", address.trim().to_lowercase());
            print_generated(generated);
        }
    }
    Ok(())
}

async fn apikey(ops: &Ops, c: &Caller, cmd: ApiKeyCmd) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCmd::Add { operator, tenant, description, expires, allow_ip } => {
            let expires = expires.as_deref().map(|d| parse_date(d, "--expires")).transpose()?;
            let r = KeyRequest { operator, tenant, description: description.unwrap_or_default(), expires, allow_ips: allow_ip };
            let (k, key) = ops.add_key(c, &r).await.map_err(cli_error(&[("expires", "--expires"), ("allow_ips", "--allow-ip"), ("tenant", "--tenant")]))?;
            println!("API key {} added ({})", k.id, k.tenant.as_deref().map_or("operator".to_string(), |t| format!("tenant {t}")));
            println!("key: {key}");
            eprintln!("(shown once; it is stored only as a SHA-256 digest: use it as `Authorization: Bearer {}...`)", &key[..16]);
        }
        ApiKeyCmd::List { tenant, format } => {
            let keys = ops.list_keys(c, tenant.as_deref()).await?;
            if format == Format::Json {
                return print_json(&keys);
            }
            println!("{:<13} {:<9} {:<16} {:<10} {:<10} {:<20} DESCRIPTION", "ID", "SCOPE", "TENANT", "EXPIRES", "STATE", "ALLOW_IPS");
            for k in keys {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires.is_some_and(|d| d < ops.today()) {
                    "expired"
                } else {
                    "active"
                };
                let expires = k.expires.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
                let ips = if k.allow_ips.is_empty() { "any".to_string() } else { k.allow_ips.join(",") };
                println!("{:<13} {:<9} {:<16} {:<10} {:<10} {:<20} {}", k.id, k.scope, k.tenant.as_deref().unwrap_or("-"), expires, state, ips, k.description);
            }
        }
        ApiKeyCmd::Revoke { id } => {
            ops.revoke_key(c, &id).await?;
            println!("API key {id} revoked; it is refused from the next request on");
        }
    }
    Ok(())
}

async fn audit(ops: &Ops, c: &Caller, tenant: Option<String>, since: Option<String>, format: ReportFormat) -> anyhow::Result<()> {
    let records = ops.audit(c, tenant.as_deref(), since.as_deref(), None).await.map_err(cli_error(&[("since", "--since")]))?;
    if format == ReportFormat::Json {
        return print_json(&records);
    }
    print_report(&records, format)
}

impl crate::usage::report::Tabular for crate::directory::AuditRecord {
    fn headers() -> &'static [&'static str] {
        &["time", "actor", "scope", "tenant", "action", "object", "before", "after"]
    }
    fn cells(&self) -> Vec<String> {
        let text = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
        let time = chrono::DateTime::from_timestamp(self.time, 0).map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        vec![
            time.unwrap_or_default(),
            self.actor.clone(),
            self.scope.clone(),
            self.tenant.clone().unwrap_or_default(),
            self.action.clone(),
            self.object.clone(),
            text(&self.before),
            text(&self.after),
        ]
    }
}

fn print_report<T: crate::usage::report::Tabular>(rows: &[T], format: ReportFormat) -> anyhow::Result<()> {
    use crate::usage::report::{to_csv, to_table};
    match format {
        ReportFormat::Json => print_json(&rows),
        ReportFormat::Csv => {
            print!("{}", to_csv(rows));
            Ok(())
        }
        ReportFormat::Table => {
            print!("{}", to_table(rows));
            Ok(())
        }
    }
}

async fn report(ops: &Ops, c: &Caller, cmd: ReportCmd) -> anyhow::Result<()> {
    let args = match &cmd {
        ReportCmd::Tls(a) | ReportCmd::Legacy(a) | ReportCmd::WhatIf { args: a, .. } => a.clone(),
    };
    let q = ReportQuery { tenant: args.tenant.clone(), since: args.since.clone(), from: args.from.clone(), to: args.to.clone() };
    let flags: &[(&str, &str)] = &[("on", "--on"), ("drop", "--drop"), ("endpoint", "--endpoint")];
    match cmd {
        ReportCmd::Tls(_) => print_report(&ops.tls_report(c, &q).await?, args.format),
        ReportCmd::Legacy(_) => print_report(&ops.legacy_report(c, &q).await?, args.format),
        ReportCmd::WhatIf { on, disable_legacy, drop, endpoint, .. } => {
            let w = WhatIfQuery { on, disable_legacy, drop, endpoint };
            print_report(&ops.what_if(c, &q, &w).await.map_err(cli_error(flags))?, args.format)
        }
    }
}

async fn usage(path: &Path, cmd: UsageCmd) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    std::fs::create_dir_all(&config.data_dir)?;
    match cmd {
        UsageCmd::LoadSynthetic { events, days, tenants, senders, seed } => {
            let store = crate::usage::store::SqliteUsageStore::open_bulk(&config.usage_path()).await?;
            let start = std::time::Instant::now();
            let spec = crate::usage::synthetic::Spec { events, days, tenants, senders, seed };
            crate::usage::synthetic::load(&store, &spec, chrono::Utc::now()).await?;
            println!("loaded {events} synthetic events ({tenants} tenants x {senders} senders over {days} days) in {:.1} s", start.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
