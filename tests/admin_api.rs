//! The admin HTTP API against the real `mailgate serve`: driven with Python's urllib
//! (tests/clients/admin_api_check.py: setup through the API, SMTP with the users it made,
//! the legacy opt-in on and off, metrics checked by promtool, the tenant-isolation table
//! over every route, keys, the audit log); the OpenAPI document checked by schemathesis
//! against the live API; the shipped alert rules checked by promtool.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailgate");

/// `mailgate serve`, killed when dropped.
struct Server {
    child: Child,
    listeners: Vec<(String, String)>,
    stderr: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn addr(&self, name: &str) -> String {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone()).unwrap_or_else(|| panic!("no listener {name}"))
    }
    fn port(&self, name: &str) -> String {
        self.addr(name).rsplit(':').next().unwrap().to_string()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn config(dir: &Path) -> std::path::PathBuf {
    let (cert, key) = mailgate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 30).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let path = dir.join("mailgate.toml");
    let text = format!(
        r#"hostname = "localhost"
data_dir = "data"

[[tls.certificate]]
cert = "cert.pem"
key = "key.pem"
{endpoints}
[admin]
listen = "127.0.0.1:0"

# contoso's mailboxes are behind an LMTP server that is down: mail to it waits in the queue.
[[delivery.tenant]]
name = "contoso"
local = "lmtp"
lmtp = "unix:lmtp-down.sock"
"#,
        endpoints = common::FOUR_ENDPOINTS
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("--config").arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "mailgate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An operator key made with `mailgate apikey add --operator`: (id, key).
fn operator_key(config: &Path) -> (String, String) {
    let out = cli(config, &["apikey", "add", "--operator", "--description", "tests"]);
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    let key = out.lines().find_map(|l| l.strip_prefix("key: ")).unwrap().to_string();
    (id, key)
}

fn serve(config: &Path, dir: &Path) -> Server {
    let stderr = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server { child, listeners: Vec::new(), stderr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.listeners.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("the server did not start:\n{}", server.log()));
        if let Some(rest) = line.strip_prefix("listening ") {
            let (name, addr) = rest.split_once(' ').unwrap();
            server.listeners.push((name.to_string(), addr.to_string()));
        }
    }
    server
}

#[test]
fn the_api_runs_the_migration_workflow_isolates_tenants_and_audits_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (id, key) = operator_key(&config);
    let server = serve(&config, dir.path());
    let settings = serde_json::json!({
        "admin": server.addr("admin"),
        "standard": server.port("standard-starttls"),
        "legacy": server.port("legacy-starttls"),
        "operator_key": key,
        "operator_id": id,
        "mailgate": BIN,
        "config": config,
        "cafile": dir.path().join("cert.pem"),
        "dir": dir.path(),
    });
    let settings_path = dir.path().join("settings.json");
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/admin_api_check.py"))
        .arg(&settings_path)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim_end().ends_with("ok"),
        "{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    // The CLI reads the same audit log.
    let audit = cli(&config, &["audit", "list", "--tenant", "fabrikam", "--format", "json"]);
    let records: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert!(records.as_array().unwrap().iter().all(|r| r["tenant"] == "fabrikam"));
    assert!(records.as_array().unwrap().iter().any(|r| r["action"] == "tenant.legacy"));
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (_, key) = operator_key(&config);
    cli(&config, &["tenant", "add", "contoso"]);
    cli(&config, &["domain", "add", "contoso.test", "--tenant", "contoso"]);
    let server = serve(&config, dir.path());
    let base = format!("http://{}", server.addr("admin"));
    // Revoking keys is left out: the run would revoke its own key and test nothing more.
    let out = Command::new("schemathesis")
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"])
        .args(["--exclude-operation-id", "delete_api_v1_apikeys__id_", "--max-examples", "25", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis must be installed (.ci/run installs it from PyPI)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis failed:\n{text}\nserver log:\n{}", server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules", concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts/mailgate-rules.yml")])
        .output()
        .expect("promtool must be installed (Debian package prometheus; .ci/run installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_slow_http_client_is_cut_off_and_does_not_hold_the_listener() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = serve(&config, dir.path());
    let admin = server.addr("admin");
    // Half a request line, then nothing: the header read timeout (10 s) ends it.
    let mut slow = std::net::TcpStream::connect(&admin).unwrap();
    slow.write_all(b"GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Meanwhile the listener answers others (curl: a client we did not write).
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{admin}/api/v1/openapi.json")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(55), "the slow client was never cut off");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "{}", String::from_utf8_lossy(&buf));
}
