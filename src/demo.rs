//! `mailgate demo`: a working gateway on 127.0.0.1 in one command.
//!
//! The demo directory holds everything: `mailgate.toml` (so every CLI command works with
//! `--config DIR/mailgate.toml`), a self-signed RSA-2048 certificate for `localhost` in
//! `tls/`, the directory database, the spool and the Maildirs. The first run creates the
//! tenants `contoso` (contoso.test: alice, scanner) and `fabrikam` (fabrikam.test: bob,
//! printer) with random passwords written to `demo-credentials.txt` (mode 0600); later
//! runs reuse the directory as it is. Ports follow `--port-base N`: standard STARTTLS on
//! N+87, standard implicit TLS on N+65, legacy STARTTLS on N+88 and legacy implicit TLS on
//! N+66 (`--port-base 0` picks free ports). `fabrikam` has opted in to legacy TLS, `contoso`
//! has not, so both sides of the legacy policy can be tried at once. The admin HTTP API
//! listens on N+80; `demo-admin-keys.txt` (mode 0600) holds an operator key and one
//! tenant-admin key per tenant, one `scope key` per line.

use crate::config::Config;
use crate::directory::{generate_password, Directory, DirectoryError};
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The demo directory (created if missing, reused as it is if present).
    #[arg(long, default_value = "./mailgate-demo")]
    pub data: PathBuf,
    /// First port: standard STARTTLS N+87, implicit N+65; legacy STARTTLS N+88, implicit N+66; admin API N+80; 0 picks free ports.
    #[arg(long, default_value_t = 2500)]
    pub port_base: u16,
    /// Relay remote recipients through this smart host (HOST:PORT), over STARTTLS with TLS 1.2+.
    #[arg(long, value_name = "HOST:PORT")]
    pub smarthost: Option<String>,
    /// Trust only this CA (PEM) for the smart host's certificate (default: the system roots).
    #[arg(long, value_name = "FILE", requires = "smarthost")]
    pub smarthost_ca: Option<PathBuf>,
    /// The smart host uses implicit TLS (port 465 style) instead of STARTTLS.
    #[arg(long, requires = "smarthost")]
    pub smarthost_implicit_tls: bool,
    /// Log in to the smart host as this user (AUTH PLAIN/LOGIN) ...
    #[arg(long, value_name = "USER", requires_all = ["smarthost", "smarthost_password_file"])]
    pub smarthost_user: Option<String>,
    /// ... with the password in this file.
    #[arg(long, value_name = "FILE", requires = "smarthost_user")]
    pub smarthost_password_file: Option<PathBuf>,
}

/// The `[delivery]` and `[[smarthost]]` tables for `--smarthost`, added to the demo's
/// configuration for this run only (the file on disk is not changed).
fn smarthost_tables(args: &DemoArgs) -> anyhow::Result<Option<String>> {
    let Some(address) = &args.smarthost else { return Ok(None) };
    let absolute = |p: &Path| -> anyhow::Result<String> {
        let p = std::path::absolute(p).with_context(|| format!("{}", p.display()))?;
        anyhow::ensure!(p.is_file(), "{} is not a readable file", p.display());
        Ok(p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""))
    };
    let mut t = format!(
        "\n# Added by `mailgate demo --smarthost` for this run.\n[delivery]\nsmarthost = \"demo-smarthost\"\n\n[[smarthost]]\nname = \"demo-smarthost\"\naddress = {address:?}\ntls = \"{}\"\n",
        if args.smarthost_implicit_tls { "implicit" } else { "starttls" }
    );
    if let Some(ca) = &args.smarthost_ca {
        t.push_str(&format!("ca_file = \"{}\"\n", absolute(ca)?));
    }
    if let (Some(user), Some(pw)) = (&args.smarthost_user, &args.smarthost_password_file) {
        t.push_str(&format!("username = {user:?}\npassword_file = \"{}\"\n", absolute(pw)?));
    }
    Ok(Some(t))
}

/// Reads `scope key` lines; keeps those that still work, makes the missing ones (an
/// operator key and one tenant-admin key per demo tenant), and writes the file (0600).
async fn admin_keys(dir: &Directory, path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut keys = read_credentials(path);
    let today = crate::clock::today(&crate::clock::system_clock());
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    for scope in std::iter::once("operator").chain(TENANTS.iter().map(|t| t.0)) {
        let works = match keys.get(scope) {
            Some(k) => matches!(dir.verify_api_key(k, local, today).await?, Ok(key) if key.tenant.as_deref() == (scope != "operator").then_some(scope)),
            None => false,
        };
        if !works {
            let new = crate::directory::NewKey {
                tenant: (scope != "operator").then(|| scope.to_string()),
                description: format!("made by mailgate demo for {scope}"),
                ..Default::default()
            };
            let (_, key) = dir.add_api_key(&new).await?;
            keys.insert(scope.to_string(), key);
        }
    }
    let text: String = keys.iter().map(|(s, k)| format!("{s} {k}\n")).collect();
    write_private(path, text.as_bytes())?;
    Ok(keys)
}

const TENANTS: [(&str, &str, [&str; 2]); 2] =
    [("contoso", "contoso.test", ["alice", "scanner"]), ("fabrikam", "fabrikam.test", ["bob", "printer"])];

fn port(base: u16, offset: u16) -> anyhow::Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(offset).with_context(|| format!("--port-base {base} is too high (the demo uses up to N+88)"))
}

fn demo_config(base: u16) -> anyhow::Result<String> {
    Ok(format!(
        r#"# Mailgate demo configuration, written by `mailgate demo`; the demo reuses it as it is.
# Reference: docs/configuration.md
hostname = "localhost"
data_dir = "."

[[tls.certificate]]
cert = "tls/cert.pem"
key = "tls/key.pem"

[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:{starttls}"]
tls_mode = "starttls"
tls_versions = ["1.2", "1.3"]

[[endpoint]]
name = "standard-implicit"
listen = ["127.0.0.1:{implicit}"]
tls_mode = "implicit"
tls_versions = ["1.2", "1.3"]

# Legacy endpoints: TLS 1.0 and 1.1 too, for tenants that opted in
# (mailgate tenant set NAME --allow-legacy-tls on).
[[endpoint]]
name = "legacy-starttls"
listen = ["127.0.0.1:{legacy_starttls}"]
tls_mode = "starttls"
tls_versions = ["1.0", "1.1", "1.2", "1.3"]

[[endpoint]]
name = "legacy-implicit"
listen = ["127.0.0.1:{legacy_implicit}"]
tls_mode = "implicit"
tls_versions = ["1.0", "1.1", "1.2", "1.3"]

# Every demo client comes from 127.0.0.1, TLS scanners (testssl.sh, sslyze) included: no
# limit on new connections a minute here (the default is 600 per address).
[limits]
max_connections_per_ip_per_minute = 0
{admin}"#,
        starttls = port(base, 87)?,
        implicit = port(base, 65)?,
        legacy_starttls = port(base, 88)?,
        legacy_implicit = port(base, 66)?,
        admin = admin_table(base)?,
    ))
}

/// The admin API's table: HTTP on 127.0.0.1 N+80 (keys in `demo-admin-keys.txt`).
fn admin_table(base: u16) -> anyhow::Result<String> {
    Ok(format!(
        "\n# The admin HTTP API and /metrics (docs/admin-api.md); keys: demo-admin-keys.txt.\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
        port(base, 80)?
    ))
}

const SAMPLE: &str = "From: alice@contoso.test\r\nTo: scanner@contoso.test\r\nSubject: Hello from the Mailgate demo\r\n\r\nIt works.\r\n";

/// Creates what is missing in the demo directory; returns the config path.
fn prepare_files(dir: &Path, base: u16) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("tls")).with_context(|| format!("cannot create {}", dir.display()))?;
    let cert = dir.join("tls/cert.pem");
    let key = dir.join("tls/key.pem");
    if !cert.exists() || !key.exists() {
        let (c, k) = crate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 825)?;
        std::fs::write(&cert, c)?;
        write_private(&key, k.as_bytes())?;
    }
    let config = dir.join("mailgate.toml");
    if !config.exists() {
        std::fs::write(&config, demo_config(base)?)?;
    }
    let sample = dir.join("sample-message.eml");
    if !sample.exists() {
        std::fs::write(&sample, SAMPLE)?;
    }
    Ok(config)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

/// Reads `address password` lines.
fn read_credentials(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, p)| (a.to_string(), p.trim().to_string())))
        .collect()
}

/// Creates the demo tenants and users that are missing; returns every demo credential.
async fn seed(dir: &Directory, creds_path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut creds = read_credentials(creds_path);
    for (tenant, domain, users) in TENANTS {
        match dir.add_tenant(tenant).await {
            Ok(()) | Err(DirectoryError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match dir.add_domain(domain, tenant).await {
            Ok(()) | Err(DirectoryError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for local in users {
            let address = format!("{local}@{domain}");
            let exists = dir.user(&address).await?.is_some();
            match (exists, creds.contains_key(&address)) {
                (true, true) => {}
                (false, _) => {
                    let pw = generate_password();
                    dir.add_user(&address, &pw, true).await?;
                    creds.insert(address, pw);
                }
                (true, false) => {
                    // The credentials file lost it: give a fresh password so the file is true.
                    let pw = generate_password();
                    dir.set_password(&address, &pw).await?;
                    creds.insert(address, pw);
                }
            }
        }
    }
    // fabrikam keeps an old printer: it opted in to legacy TLS; contoso did not.
    let opt_in = crate::directory::LegacyChanges { allowed: Some(true), ..Default::default() };
    let fabrikam = dir.legacy_settings("fabrikam").await?;
    if fabrikam.forbidden {
        tracing::warn!("fabrikam is forbidden legacy TLS (--forbid-legacy-tls on); the TLS 1.0 example will be refused");
    } else if !fabrikam.allowed {
        dir.set_legacy("fabrikam", &opt_in).await?;
    }
    let text: String = creds.iter().map(|(a, p)| format!("{a} {p}\n")).collect();
    write_private(creds_path, text.as_bytes())?;
    Ok(creds)
}

fn banner(dir: &Path, server: &crate::server::RunningServer, creds: &BTreeMap<String, String>, keys: &BTreeMap<String, String>) -> String {
    let starttls = server.addr("standard-starttls");
    let implicit = server.addr("standard-implicit");
    let pw = creds.get("alice@contoso.test").map(String::as_str).unwrap_or("PASSWORD");
    let d = dir.display();
    let mut s = String::from("\nMailgate demo is running.\n\nEndpoints:\n");
    for (name, addr) in &server.listeners {
        s.push_str(&format!("  {name:<20} {addr}\n"));
    }
    s.push_str(&format!(
        "\nTenants: contoso (contoso.test: alice, scanner), fabrikam (fabrikam.test: bob, printer)\n\
         Passwords: {d}/demo-credentials.txt\nConfig:    {d}/mailgate.toml (use it with any command: mailgate user list --config {d}/mailgate.toml)\n\
         Mailboxes: {d}/maildir/<domain>/<user>/new/\n\n"
    ));
    if let Some(a) = starttls {
        s.push_str(&format!(
            "Send with swaks (STARTTLS, TLS 1.2+):\n  swaks --server 127.0.0.1 --port {port} --tls --auth PLAIN \\\n    --auth-user alice@contoso.test --auth-password '{pw}' \\\n    --from alice@contoso.test --to scanner@contoso.test\n\n",
            port = a.port()
        ));
    }
    if let Some(a) = implicit {
        s.push_str(&format!(
            "Send with curl (implicit TLS):\n  curl --ssl-reqd --cacert {d}/tls/cert.pem --url smtps://localhost:{port} \\\n    --user 'alice@contoso.test:{pw}' --mail-from alice@contoso.test \\\n    --mail-rcpt scanner@contoso.test --upload-file {d}/sample-message.eml\n\n",
            port = a.port()
        ));
    }
    if let Some(a) = server.addr("legacy-starttls") {
        let printer = creds.get("printer@fabrikam.test").map(String::as_str).unwrap_or("PASSWORD");
        s.push_str(&format!(
            "Send over TLS 1.0 as fabrikam's printer (fabrikam opted in to legacy TLS; contoso did not):\n  swaks --server 127.0.0.1 --port {port} --tls --tls-protocol tlsv1 --tls-cipher 'DEFAULT:@SECLEVEL=0' \\\n    --auth PLAIN --auth-user printer@fabrikam.test --auth-password '{printer}' \\\n    --from printer@fabrikam.test --to bob@fabrikam.test\n\n",
            port = a.port()
        ));
    }
    if let Some(a) = starttls {
        s.push_str(&format!(
            "TLS 1.0 on the standard endpoint gets a readable refusal (421 4.7.66):\n  swaks --server 127.0.0.1 --port {port} --tls --tls-protocol tlsv1 --tls-cipher 'DEFAULT:@SECLEVEL=0' --quit-after TLS\n\n",
            port = a.port()
        ));
    }
    if let Some(a) = server.addr("admin") {
        let key = keys.get("contoso").map(String::as_str).unwrap_or("KEY");
        s.push_str(&format!(
            "Admin API (keys: {d}/demo-admin-keys.txt; docs/admin-api.md), as contoso's admin:\n  curl -s -H 'Authorization: Bearer {key}' http://{a}/api/v1/reports/legacy?since=7d\n\n"
        ));
    }
    match server.config.smarthost_for("contoso") {
        Some(up) => s.push_str(&format!(
            "Remote recipients are relayed through the smart host {}:{} ({}, TLS 1.2+, certificate checked against {}{}).\n\
             Queue: mailgate queue list --config {d}/mailgate.toml   (the --smarthost settings apply to this run only)\n\n",
            up.host,
            up.port,
            if up.tls == crate::config::SmarthostTls::Implicit { "implicit TLS" } else { "STARTTLS" },
            up.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the system roots".into()),
            if matches!(up.auth, crate::config::SmarthostAuth::None) { "" } else { "; AUTH" },
        )),
        None => s.push_str("Remote recipients are refused (550 5.7.1): relay them with mailgate demo --smarthost HOST:PORT.\n\n"),
    }
    s.push_str("Press Ctrl-C to stop.\n");
    s
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config_path = prepare_files(&args.data, args.port_base)?;
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let mut extra = String::new();
    if let Some(tables) = smarthost_tables(&args)? {
        anyhow::ensure!(
            !text.contains("[delivery]") && !text.contains("[[smarthost]]"),
            "{} already configures delivery; edit it there instead of using --smarthost",
            config_path.display()
        );
        extra.push_str(&tables);
    }
    // A demo directory made before the admin API: the API for this run too.
    if !text.contains("[admin]") {
        extra.push_str(&admin_table(args.port_base)?);
    }
    let config = Config::from_toml(&config_path, &format!("{text}{extra}"))?;
    let config = Arc::new(config);
    crate::server::init_logging(&config.log.level);
    let dir = Directory::open(&config.directory_path()).await?;
    let creds = seed(&dir, &args.data.join("demo-credentials.txt")).await?;
    let keys = admin_keys(&dir, &args.data.join("demo-admin-keys.txt")).await?;
    let data = args.data.clone();
    crate::server::run_until_signal(config, move |server| {
        println!("{}", banner(&data, server, &creds, &keys));
    })
    .await
}
