//! The `mailgate` command line: serve, check-config, demo, and directory administration.
//!
//! Commands own no business logic: each one loads the configuration, calls the same
//! operation the admin API will call (`Directory::add_user`, ...) and prints the result as
//! a table or JSON. Errors go to stderr as one sentence and exit with status 1.

mod queue;

use crate::config::Config;
use crate::directory::{generate_password, Directory, UserChanges};
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
        Command::Tenant(cmd) => with_directory(&cli.config, |dir| Box::pin(tenant(dir, cmd))).await,
        Command::Domain(cmd) => with_directory(&cli.config, |dir| Box::pin(domain(dir, cmd))).await,
        Command::User(cmd) => with_directory(&cli.config, |dir| Box::pin(user(dir, cmd))).await,
        Command::Report(cmd) => report(&cli.config, cmd).await,
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

/// Runs a `tenant|domain|user` command on the directory. After a change, a running
/// server is told to clear its lookup cache (so the change is in force on the next AUTH
/// or RCPT); if it cannot be told, the operator learns when the change will apply.
async fn with_directory<F>(path: &Path, command: F) -> anyhow::Result<()>
where
    F: for<'a> FnOnce(&'a Directory) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>,
{
    let config = Config::load(path)?;
    let dir = Directory::open(&config.directory_path()).await?;
    let result = command(&dir).await;
    if dir.made_changes() {
        if let Err(e) = crate::queue::ops::notify_directory_changed(&config.control_socket()).await {
            eprintln!(
                "warning: the running server could not be told of this change ({e}); it applies within \
                 directory.cache_ttl ({} s)",
                config.directory.cache_ttl
            );
        }
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

async fn tenant(dir: &Directory, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add { name } => {
            dir.add_tenant(&name).await?;
            println!("tenant {name} added");
        }
        TenantCmd::List { format } => {
            let tenants = dir.list_tenants().await?;
            if format == Format::Json {
                return print_json(&tenants);
            }
            println!("{:<24} {:>6}  DOMAINS", "TENANT", "USERS");
            for t in tenants {
                println!("{:<24} {:>6}  {}", t.name, t.users, t.domains.join(","));
            }
        }
        TenantCmd::Show { name, format } => {
            let t = dir.tenant(&name).await?;
            if format == Format::Json {
                return print_json(&t);
            }
            println!("tenant:  {}\ndomains: {}\nusers:   {}", t.name, t.domains.join(", "), t.users);
            print_legacy(&t.legacy);
        }
        TenantCmd::Set { name, allow_legacy_tls, legacy_until, legacy_users, legacy_networks, forbid_legacy_tls } => {
            let changes = crate::directory::LegacyChanges {
                allowed: allow_legacy_tls.map(Into::into),
                until: legacy_until.as_deref().map(parse_until).transpose()?,
                users: legacy_users.as_deref().map(|u| list(u).map(String::from).collect()),
                networks: legacy_networks.as_deref().map(parse_networks).transpose()?,
                forbidden: forbid_legacy_tls.map(Into::into),
            };
            if changes.allowed.is_none()
                && changes.until.is_none()
                && changes.users.is_none()
                && changes.networks.is_none()
                && changes.forbidden.is_none()
            {
                bail!("nothing to change: give --allow-legacy-tls, --legacy-until, --legacy-users, --legacy-networks or --forbid-legacy-tls");
            }
            let s = dir.set_legacy(&name, &changes).await?;
            println!("tenant {name} updated");
            print_legacy(&s);
        }
    }
    Ok(())
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

fn parse_until(s: &str) -> anyhow::Result<Option<chrono::NaiveDate>> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| anyhow::anyhow!("--legacy-until {s:?}: expected a date like 2027-03-31, or none"))
}

fn parse_networks(s: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list(s)
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("--legacy-networks: {n:?} is not a network like 10.1.0.0/16 or an address"))
        })
        .collect()
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

async fn domain(dir: &Directory, cmd: DomainCmd) -> anyhow::Result<()> {
    match cmd {
        DomainCmd::Add { domain, tenant } => {
            dir.add_domain(&domain, &tenant).await?;
            let domain = crate::directory::normalize_domain(&domain)?;
            println!("accepted domain {domain} added to tenant {tenant}");
        }
    }
    Ok(())
}

/// Reads a password from stdin (first line), or generates one to print once.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((generate_password(), true));
    }
    let mut s = String::new();
    std::io::stdin().take(4096).read_to_string(&mut s)?;
    let p = s.lines().next().unwrap_or("").to_string();
    if p.is_empty() {
        bail!("--password-stdin: no password on standard input");
    }
    Ok((p, false))
}

async fn user(dir: &Directory, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add { address, password_stdin, smtp_auth } => {
            let (pw, generated) = password(password_stdin)?;
            let u = dir.add_user(&address, &pw, smtp_auth.into()).await?;
            println!("user {} added to tenant {}", u.address, u.tenant);
            if generated {
                println!("password: {pw}");
                eprintln!("(shown once; it is stored only as an argon2id hash)");
            }
        }
        UserCmd::List { tenant, format } => {
            let users = dir.list_users(tenant.as_deref()).await?;
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
            let u = dir.set_user(&address, &changes).await?;
            println!("user {}: enabled {}, smtp-auth {}", u.address, on_off(u.enabled), on_off(u.smtp_auth));
        }
        UserCmd::Passwd { address, password_stdin } => {
            let (pw, generated) = password(password_stdin)?;
            dir.set_password(&address, &pw).await?;
            println!("password of {} changed", address.to_lowercase());
            if generated {
                println!("password: {pw}");
                eprintln!("(shown once; it is stored only as an argon2id hash)");
            }
        }
    }
    Ok(())
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

async fn report(path: &Path, cmd: ReportCmd) -> anyhow::Result<()> {
    use crate::usage::report::{legacy_report, tls_report, what_if, Period, Scenario, SuiteKind};
    use crate::usage::store::{RollupFilter, SqliteUsageStore, UsageStore};
    let config = Config::load(path)?;
    let args = match &cmd {
        ReportCmd::Tls(a) | ReportCmd::Legacy(a) | ReportCmd::WhatIf { args: a, .. } => a.clone(),
    };
    let today = crate::clock::today(&crate::clock::system_clock());
    let period = Period::parse(args.since.as_deref(), args.from.as_deref(), args.to.as_deref(), today).map_err(anyhow::Error::msg)?;
    if !config.data_dir.is_dir() {
        bail!("data_dir {} does not exist: check {} (is this the server's configuration?)", config.data_dir.display(), path.display());
    }
    let dir = Directory::open(&config.directory_path()).await?;
    let store = SqliteUsageStore::open(&config.usage_path()).await?;
    let rows = store.period_totals(&RollupFilter { tenant: args.tenant.clone(), from: period.from, to: period.to }).await?;
    // A tenant with history but since removed still has a report; an unknown name is an error.
    if let (Some(t), true) = (&args.tenant, rows.is_empty()) {
        dir.tenant(t).await?;
    }
    match cmd {
        ReportCmd::Tls(_) => print_report(&tls_report(&rows), args.format),
        ReportCmd::Legacy(_) => print_report(&legacy_report(&rows), args.format),
        ReportCmd::WhatIf { on, disable_legacy, drop, endpoint, .. } => {
            if let Some(e) = endpoint.as_deref().filter(|e| !config.endpoints.iter().any(|x| x.name == *e)) {
                let names: Vec<&str> = config.endpoints.iter().map(|x| x.name.as_str()).collect();
                bail!("--endpoint {e:?}: no such endpoint in {} (endpoints: {})", path.display(), names.join(", "));
            }
            let scenario = match (on, disable_legacy, drop) {
                (_, true, _) => Scenario::DisableLegacy,
                (_, _, Some(k)) => Scenario::DropSuites(
                    SuiteKind::parse(&k).ok_or_else(|| anyhow::anyhow!("--drop {k:?}: expected static-rsa or cbc"))?,
                    endpoint,
                ),
                (Some(d), false, None) => Scenario::On(
                    chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                        .map_err(|_| anyhow::anyhow!("--on {d:?}: expected a date like 2027-03-01"))?,
                ),
                (None, false, None) => bail!("give --on DATE, --disable-legacy or --drop static-rsa|cbc"),
            };
            let mut tenants = std::collections::HashMap::new();
            for t in rows.iter().map(|r| r.tenant.clone()).filter(|t| !t.is_empty()) {
                if let std::collections::hash_map::Entry::Vacant(e) = tenants.entry(t) {
                    let settings = dir.legacy_settings(e.key()).await.unwrap_or_default();
                    e.insert(settings);
                }
            }
            print_report(&what_if(&rows, &config.endpoints, &tenants, scenario, period, today), args.format)
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
