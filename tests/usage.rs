//! Acceptance tests for TLS usage recording and reports: the real server on 127.0.0.1
//! port 0 in a temporary directory, driven by real clients (the `openssl` crate pinned to
//! one TLS version, rustls, Python's smtplib and ssl, swaks); then the server is shut down
//! (which stores every usage event) and the real `mailgate report ...` binary is run on the
//! test's configuration file, its JSON and CSV output parsed.
//!
//! The points, in order: exact rows of `report tls` and `report legacy`, with and without
//! `--tenant`; CSV output (parsed by Python's csv module) against the documented headers
//! and the JSON; the what-if agrees with what a later server really does (schedule steps
//! of 50% and 100%, an opt-in end date, the opt-in switched off); recording never holds
//! SMTP up (a buffer of 1, usage disabled), events of sessions open at SIGTERM are stored,
//! one event per connection whatever way it ends; report periods.
//!
//! The what-if reads the configuration, whose ports are 0 here, where a running server
//! names the ports it bound: replies are compared with port numbers elided.

mod common;
use common::{last_json_line, run, show};

use common::{password, Raw, TestClock, TestServer};
use mailgate::directory::LegacyChanges;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::Command;

const ALICE: &str = "alice@contoso.test";
const SCANNER: &str = "scanner@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const PRINTER: &str = "printer@fabrikam.test";
/// Not one of the harness's users: added by the tests that need it.
const PRINTER2: &str = "printer2@fabrikam.test";
const PRINTER2_PASSWORD: &str = "printer2-password-1";

const BIN: &str = env!("CARGO_BIN_EXE_mailgate");


/// A standard implicit-TLS endpoint that refuses legacy hellos with a protocol_version alert.
const REFUSE_ENDPOINT: &str = r#"
[[endpoint]]
name = "standard-refuse"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
tls_versions = ["1.2", "1.3"]
legacy_tls = "refuse"
"#;

/// The four endpoints of [`common::FOUR_ENDPOINTS`], with `schedule` put into both
/// legacy endpoints.
fn endpoints(schedule: &str) -> String {
    let legacy = r#"tls_versions = ["1.0", "1.1", "1.2", "1.3"]"#;
    common::FOUR_ENDPOINTS.replace(legacy, &format!("{legacy}\n{schedule}"))
}

fn pw(user: &str) -> &'static str {
    if user == PRINTER2 {
        PRINTER2_PASSWORD
    } else {
        password(user)
    }
}

fn opt_in(allowed: bool) -> LegacyChanges {
    LegacyChanges { allowed: Some(allowed), ..Default::default() }
}

fn is_starttls(endpoint: &str) -> bool {
    endpoint.ends_with("starttls")
}

// ---- clients --------------------------------------------------------------------------------

/// An OpenSSL client pinned to one version, security level 0 (TLS 1.0/1.1 need it), no
/// certificate check; SNI "localhost".
fn pinned(v: SslVersion) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(v)).unwrap();
    b.set_max_proto_version(Some(v)).unwrap();
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.set_security_level(0);
    b.set_verify(SslVerifyMode::NONE);
    b.build()
}

/// A device: where it connects, with which TLS version, and the name it gives in EHLO.
#[derive(Clone, Copy, Debug)]
struct Device {
    endpoint: &'static str,
    version: SslVersion,
    ehlo: &'static str,
}

/// Connects as `d` (STARTTLS first where the endpoint wants it), does the handshake, reads
/// the greeting (implicit TLS) and sends EHLO. `Err` is the first thing that went wrong:
/// the server's reply, or the handshake error.
async fn open(t: &TestServer, d: &Device) -> Result<Raw, String> {
    let addr = t.addr(d.endpoint);
    let tcp = if is_starttls(d.endpoint) {
        let mut r = Raw::plain(addr, &t.cert_pem).await;
        r.expect(&format!("EHLO {}", d.ehlo), 250).await;
        r.expect("STARTTLS", 220).await;
        r.into_plain()
    } else {
        TcpStream::connect(addr).await.unwrap()
    };
    let connector = pinned(d.version);
    let ssl = connector.configure().unwrap().verify_hostname(false).into_ssl("localhost").unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    if let Err(e) = Pin::new(&mut tls).connect().await {
        return Err(format!("handshake failed: {e}"));
    }
    let mut r = Raw::from_stream(Box::new(tls), &t.cert_pem);
    if !is_starttls(d.endpoint) {
        let (code, text) = r.reply().await;
        if code != 220 {
            return Err(text);
        }
    }
    let (code, text) = r.cmd_lenient(&format!("EHLO {}", d.ehlo)).await;
    if code != 250 {
        return Err(text);
    }
    Ok(r)
}

/// Sends `command`; `Err(reply)` unless the reply has code `want`.
async fn step(r: &mut Raw, command: &str, want: u16) -> Result<(), String> {
    let (code, text) = r.cmd_lenient(command).await;
    if code == want {
        Ok(())
    } else {
        Err(text)
    }
}

fn auth_plain_command(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("AUTH PLAIN {}", base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}")))
}

/// A whole submission by device `d` as `user`: AUTH, then `messages` messages to `to`, then
/// QUIT. `Err` is the first reply (or handshake error) that was not the expected one.
async fn submit(t: &TestServer, d: &Device, user: &str, password: &str, to: &str, messages: usize) -> Result<(), String> {
    let mut r = open(t, d).await?;
    step(&mut r, &auth_plain_command(user, password), 235).await?;
    for i in 0..messages {
        step(&mut r, &format!("MAIL FROM:<{user}>"), 250).await?;
        step(&mut r, &format!("RCPT TO:<{to}>"), 250).await?;
        step(&mut r, "DATA", 354).await?;
        let body = format!("From: {user}\r\nTo: {to}\r\nSubject: usage {i}\r\n\r\nmessage {i} from {}\r\n.", d.ehlo);
        step(&mut r, &body, 250).await?;
    }
    step(&mut r, "QUIT", 221).await
}


fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}


/// `legacy_client.py send`: Python's smtplib pinned to TLS `v`, no certificate check,
/// EHLO client.test. Returns its JSON report.
async fn py_send(t: &TestServer, endpoint: &str, v: &str, user: &str, to: &str) -> Value {
    let file = t.dir.path().join(format!("py-{}.eml", rand_tag()));
    std::fs::write(&file, format!("From: {user}\r\nTo: {to}\r\nSubject: python\r\n\r\nFrom smtplib.\r\n")).unwrap();
    let mode = if is_starttls(endpoint) { "starttls" } else { "implicit" };
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("legacy_client.py"))
        .args(["send", mode, &t.addr(endpoint).port().to_string(), v, v, "-"])
        .args([user, pw(user), user, to])
        .arg(&file);
    let what = format!("python smtplib TLS {v} on {endpoint} as {user}");
    let out = run(cmd, &what).await;
    assert!(out.status.success(), "{what}\n{}", show(&out));
    last_json_line(&out, &what)
}

/// `legacy_client.py probe`: handshake with TLS `v`, then what the server says first.
async fn py_probe(t: &TestServer, endpoint: &str, v: &str) -> Value {
    let mode = if is_starttls(endpoint) { "starttls" } else { "implicit" };
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("legacy_client.py")).args(["probe", mode, &t.addr(endpoint).port().to_string(), v, v]);
    let what = format!("python probe TLS {v} on {endpoint}");
    let out = run(cmd, &what).await;
    last_json_line(&out, &what)
}

/// `smtplib_send.py`: a modern client (TLS 1.2+, certificate verified), EHLO client.test.
async fn py_modern_send(t: &TestServer, endpoint: &str, user: &str, to: &str) {
    let file = t.dir.path().join(format!("modern-{}.eml", rand_tag()));
    std::fs::write(&file, format!("From: {user}\r\nTo: {to}\r\nSubject: modern\r\n\r\nFrom smtplib.\r\n")).unwrap();
    let mode = if is_starttls(endpoint) { "starttls" } else { "implicit" };
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("smtplib_send.py"))
        .args([mode, "127.0.0.1", &t.addr(endpoint).port().to_string()])
        .arg(&t.cert_path)
        .args([user, pw(user), user, to])
        .arg(&file);
    let what = format!("smtplib_send.py on {endpoint} as {user}");
    let out = run(cmd, &what).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("refused: {}"), "{what}\n{}", show(&out));
}

/// swaks delivering one message with TLS `protocol` (swaks's name: tlsv1_2, ...).
async fn swaks(t: &TestServer, endpoint: &str, protocol: &str, user: &str, to: &str, ehlo: &str) -> String {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", "127.0.0.1", "--port", &t.addr(endpoint).port().to_string()])
        .arg(if is_starttls(endpoint) { "--tls" } else { "--tlsc" })
        .args(["--tls-protocol", protocol, "--tls-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(["--auth", "PLAIN", "--auth-user", user, "--auth-password", pw(user)])
        .args(["--from", user, "--to", to, "--ehlo", ehlo]);
    let what = format!("swaks {protocol} on {endpoint} as {user}");
    let out = run(cmd, &what).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && stdout.contains("250 2.0.0 OK queued as"), "{what}\n{}", show(&out));
    stdout
}

fn rand_tag() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

// ---- the CLI --------------------------------------------------------------------------------

/// `mailgate --config <the test's file> <args>`.
async fn cli(t: &TestServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(t.config_path()).args(args).env_remove("MAILGATE_CONFIG").env("RUST_LOG", "error");
    run(cmd, &format!("mailgate {}", args.join(" "))).await
}

/// `mailgate report <args> --format json`: the rows.
async fn report(t: &TestServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = cli(t, &all).await;
    assert!(out.status.success(), "mailgate {}\n{}", all.join(" "), show(&out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("mailgate {}: not JSON ({e})\n{}", all.join(" "), show(&out)));
    v.as_array().unwrap_or_else(|| panic!("mailgate {}: not an array: {v}", all.join(" "))).clone()
}

/// `mailgate report <args> --format csv`, parsed by Python's csv module (strict): the
/// header and the rows.
async fn report_csv(t: &TestServer, args: &[&str]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "csv"]);
    let out = cli(t, &all).await;
    let what = format!("mailgate {}", all.join(" "));
    assert!(out.status.success(), "{what}\n{}", show(&out));
    // RFC 4180: CRLF line ends (none of these fields holds a line break).
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'), "{what}: CRLF lines expected: {text:?}");
    let csv_file = t.dir.path().join(format!("report-{}.csv", rand_tag()));
    std::fs::write(&csv_file, &out.stdout).unwrap();
    let script = "import csv, json, sys\n\
                  with open(sys.argv[1], newline='') as f:\n    rows = list(csv.reader(f, strict=True))\n\
                  print(json.dumps(rows))\n";
    let mut py = Command::new("python3");
    py.args(["-c", script]).arg(&csv_file);
    let parsed = run(py, "python3 csv").await;
    assert!(parsed.status.success(), "{what}: Python's csv module cannot parse it\n{}\n{}", show(&parsed), show(&out));
    let rows: Vec<Vec<String>> = serde_json::from_slice(&parsed.stdout).unwrap();
    let mut rows = rows.into_iter();
    let header = rows.next().unwrap_or_else(|| panic!("{what}: no header line\n{}", show(&out)));
    (header, rows.collect())
}

// ---- checking rows --------------------------------------------------------------------------

/// `t10d0512ab_0123456789ab_0123456789ab`: JA4-style, TLS version `v` ("10".."13"), `d`
/// with SNI, `i` without.
fn assert_fingerprint(fp: &Value, v: &str, sni: bool, what: &str) {
    let fp = fp.as_str().unwrap_or_else(|| panic!("{what}: fingerprint {fp}"));
    let prefix = format!("t{v}{}", if sni { 'd' } else { 'i' });
    let parts: Vec<&str> = fp.split('_').collect();
    let hex12 = |s: &str| s.len() == 12 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    assert!(
        fp.starts_with(&prefix) && parts.len() == 3 && parts[0].len() == 10 && hex12(parts[1]) && hex12(parts[2]),
        "{what}: fingerprint {fp:?} is not a {prefix}... JA4-style fingerprint"
    );
}

/// `last_seen` is RFC 3339 UTC and within the test's sessions.
fn assert_last_seen(v: &Value, from: i64, to: i64, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: last_seen {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{what}: last_seen {s:?}: {e}"));
    assert!(s.ends_with('Z'), "{what}: last_seen {s:?} in UTC");
    assert!((from - 1..=to + 1).contains(&t.timestamp()), "{what}: last_seen {s} not within the test ({from}..{to})");
}

fn without(row: &Value, keys: &[&str]) -> Value {
    let mut r = row.clone();
    for k in keys {
        r.as_object_mut().unwrap().remove(*k).unwrap_or_else(|| panic!("no {k} in {row}"));
    }
    r
}

/// The same rows, order aside; the message shows both sides.
fn assert_same_rows(what: &str, got: &[Value], want: &[Value]) {
    let sorted = |v: &[Value]| {
        let mut v: Vec<String> = v.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        v.sort();
        v
    };
    let (g, w) = (sorted(got), sorted(want));
    assert!(g == w, "{what}: rows differ\n--- got:\n{}\n--- want:\n{}", g.join("\n"), w.join("\n"));
}

fn of_tenant(rows: &[Value], tenant: &str) -> Vec<Value> {
    rows.iter().filter(|r| r["tenant"] == tenant).cloned().collect()
}

fn senders(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|r| r["sender"].as_str().unwrap().to_string()).collect()
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

// ---- 1. exact report rows -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_legacy_reports_list_exactly_what_happened() {
    let config = format!("{}{REFUSE_ENDPOINT}", endpoints(""));
    let mut t = TestServer::start_custom(&config, &[ALICE, SCANNER, BOB, PRINTER], None).await;
    t.server().directory.set_legacy("fabrikam", &opt_in(true)).await.unwrap();
    let started = chrono::Utc::now().timestamp();

    // fabrikam's printer, TLS 1.0 on the legacy STARTTLS endpoint: a session with two
    // messages, then one with one; and TLS 1.1 on the legacy implicit endpoint (smtplib).
    let printer10 = Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "printer-3f.fabrikam.lan" };
    submit(&t, &printer10, PRINTER, pw(PRINTER), BOB, 2).await.unwrap();
    submit(&t, &printer10, PRINTER, pw(PRINTER), BOB, 1).await.unwrap();
    let r = py_send(&t, "legacy-implicit", "1.1", PRINTER, BOB).await;
    assert_eq!((&r["sent"], &r["version"]), (&json!(true), &json!("TLSv1.1")), "{r}");

    // fabrikam's bob: TLS 1.2 (swaks, one message) and TLS 1.3 (rustls, three messages in
    // one session) on the standard STARTTLS endpoint.
    let out = swaks(&t, "standard-starttls", "tlsv1_2", BOB, ALICE, "bob-laptop.fabrikam.lan").await;
    assert!(out.contains("TLS started with cipher TLSv1.2:"), "{out}");
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, BOB).await;
    for i in 0..3 {
        r.expect(&format!("MAIL FROM:<{BOB}>"), 250).await;
        r.expect(&format!("RCPT TO:<{ALICE}>"), 250).await;
        r.expect("DATA", 354).await;
        r.expect(&format!("Subject: bob {i}\r\n\r\nbob {i}\r\n."), 250).await;
    }
    r.expect("QUIT", 221).await;

    // contoso's scanner, TLS 1.0 on the legacy endpoint: contoso has not opted in.
    let scanner = Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "scanner.contoso.lan" };
    let refused = submit(&t, &scanner, SCANNER, pw(SCANNER), ALICE, 1).await.unwrap_err();
    assert!(refused.starts_with("534 5.7.9 Legacy TLS (TLS 1.0) is not enabled for your organization"), "{refused}");

    // contoso's alice: TLS 1.3 on the standard implicit endpoint (smtplib, certificate
    // verified); and a device of hers with an old password, TLS 1.0 on the legacy endpoint.
    py_modern_send(&t, "standard-implicit", ALICE, BOB).await;
    let phone = Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "alice-phone.contoso.lan" };
    let failed = submit(&t, &phone, ALICE, "an-old-password", BOB, 1).await.unwrap_err();
    assert!(failed.starts_with("535 5.7.8 "), "{failed}");

    // An unauthenticated TLS 1.0 client on the standard STARTTLS endpoint: told 421.
    let p = py_probe(&t, "standard-starttls", "1.0").await;
    assert_eq!(p["version"], "TLSv1", "{p}");
    assert!(p["first"].as_str().unwrap().starts_with("421 4.7.66 "), "{p}");

    // Failed logins over TLS 1.3: an unknown user of contoso's domain belongs to contoso; a
    // login in no tenant's domain belongs to no tenant.
    let guess = Device { endpoint: "standard-implicit", version: SslVersion::TLS1_3, ehlo: "guess.contoso.lan" };
    let failed = submit(&t, &guess, "nobody@contoso.test", "whatever-password", ALICE, 1).await.unwrap_err();
    assert!(failed.starts_with("535 5.7.8 "), "{failed}");
    let mystery = Device { endpoint: "standard-implicit", version: SslVersion::TLS1_3, ehlo: "mystery.elsewhere.lan" };
    let failed = submit(&t, &mystery, "someone@elsewhere.test", "whatever-password", ALICE, 1).await.unwrap_err();
    assert!(failed.starts_with("535 5.7.8 "), "{failed}");

    // A TLS 1.0 hello on the endpoint in refuse mode: no handshake at all.
    let kiosk = Device { endpoint: "standard-refuse", version: SslVersion::TLS1, ehlo: "kiosk" };
    let e = open(&t, &kiosk).await.err().expect("TLS 1.0 must be refused on standard-refuse");
    assert!(e.starts_with("handshake failed"), "{e}");

    t.stop().await;
    let ended = chrono::Utc::now().timestamp();

    // ---- report tls
    let tls = report(&t, &["tls"]).await;
    let mut devices: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for row in &tls {
        let what = format!("report tls row {row}");
        assert_last_seen(&row["last_seen"], started, ended, &what);
        let d = row["devices"].as_array().unwrap_or_else(|| panic!("{what}: devices"));
        assert!(!d.is_empty(), "{what}: no devices");
        devices.insert((row["tenant"].as_str().unwrap().into(), row["sender"].as_str().unwrap().into()), d.clone());
    }
    let tls_row = |tenant: &str, sender: &str, sessions: i64, messages: i64, pct: [f64; 4], endpoints: &[&str]| {
        json!({
            "tenant": tenant, "sender": sender, "sessions": sessions, "messages": messages,
            "tls10_pct": pct[0], "tls11_pct": pct[1], "tls12_pct": pct[2], "tls13_pct": pct[3],
            "endpoints": endpoints,
        })
    };
    let want_tls = vec![
        // The unauthenticated client completed a (TLS 1.0) handshake before its 421, and the
        // login in no tenant's domain a TLS 1.3 one; no message: shares of sessions. The
        // hello refused on standard-refuse completed no handshake and is not here.
        tls_row("", "[127.0.0.1]", 2, 0, [50.0, 0.0, 0.0, 50.0], &["standard-implicit", "standard-starttls"]),
        // Shares are of messages: the failed TLS 1.0 login sent none.
        tls_row("contoso", ALICE, 2, 1, [0.0, 0.0, 0.0, 100.0], &["legacy-starttls", "standard-implicit"]),
        // No message: shares of sessions.
        tls_row("contoso", "nobody@contoso.test", 1, 0, [0.0, 0.0, 0.0, 100.0], &["standard-implicit"]),
        tls_row("contoso", SCANNER, 1, 0, [100.0, 0.0, 0.0, 0.0], &["legacy-starttls"]),
        tls_row("fabrikam", BOB, 2, 4, [0.0, 0.0, 25.0, 75.0], &["standard-starttls"]),
        tls_row("fabrikam", PRINTER, 3, 4, [75.0, 25.0, 0.0, 0.0], &["legacy-implicit", "legacy-starttls"]),
    ];
    let got: Vec<Value> = tls.iter().map(|r| without(r, &["last_seen", "devices"])).collect();
    assert_same_rows("report tls", &got, &want_tls);

    // Devices: (fingerprint version, SNI sent, EHLO name) per sender.
    /// (fingerprint version, SNI sent, EHLO name)
    type Dev = (&'static str, bool, &'static str);
    let want_devices: [(&str, &str, &[Dev]); 6] = [
        ("", "[127.0.0.1]", &[("10", true, "client.test"), ("13", true, "mystery.elsewhere.lan")]),
        ("contoso", "nobody@contoso.test", &[("13", true, "guess.contoso.lan")]),
        ("contoso", ALICE, &[("10", true, "alice-phone.contoso.lan"), ("13", false, "client.test")]),
        ("contoso", SCANNER, &[("10", true, "scanner.contoso.lan")]),
        ("fabrikam", BOB, &[("12", false, "bob-laptop.fabrikam.lan"), ("13", true, "client.test")]),
        ("fabrikam", PRINTER, &[("10", true, "printer-3f.fabrikam.lan"), ("11", false, "client.test")]),
    ];
    let mut fingerprints: BTreeMap<(String, String), String> = BTreeMap::new();
    for (tenant, sender, want) in want_devices {
        let got = &devices[&(tenant.to_string(), sender.to_string())];
        let what = format!("report tls devices of {tenant}/{sender}: {got:?}");
        let mut ehlos: Vec<&str> = got.iter().map(|d| d["ehlo"].as_str().unwrap()).collect();
        ehlos.sort();
        let mut want_ehlos: Vec<&str> = want.iter().map(|w| w.2).collect();
        want_ehlos.sort();
        assert_eq!(ehlos, want_ehlos, "{what}");
        for (v, sni, ehlo) in want {
            let d = got.iter().find(|d| d["ehlo"] == *ehlo).unwrap();
            assert_fingerprint(&d["fingerprint"], v, *sni, &what);
            fingerprints.insert((sender.to_string(), ehlo.to_string()), d["fingerprint"].as_str().unwrap().to_string());
        }
    }

    // ---- report legacy
    let legacy = report(&t, &["legacy"]).await;
    for row in &legacy {
        let what = format!("report legacy row {row}");
        assert_last_seen(&row["last_seen"], started, ended, &what);
        let v = row["offered_max"].as_str().unwrap().trim_start_matches("TLSv1.").to_string();
        assert_fingerprint(&row["fingerprint"], &format!("1{v}"), row["sni"] != "", &what);
        // The device is the one the TLS report shows (where that report has the sender).
        if let Some(fp) = fingerprints.get(&(row["sender"].as_str().unwrap().into(), row["ehlo"].as_str().unwrap().into())) {
            assert_eq!(row["fingerprint"], *fp, "{what}: not the fingerprint `report tls` shows");
        }
    }
    let legacy_row = |tenant: &str, sender: &str, sni: &str, ehlo: &str, endpoint: &str, version: &str, offered: &str, outcome: &str, sessions: i64, messages: i64| {
        json!({
            "tenant": tenant, "sender": sender, "client_ip": "127.0.0.1", "sni": sni, "ehlo": ehlo,
            "endpoint": endpoint, "version": version, "offered_max": offered, "outcome": outcome,
            "sessions": sessions, "messages": messages,
            // The server's first TLS 1.0 suite for an RSA certificate; none without a handshake.
            "cipher": if version.is_empty() { "" } else { "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" },
        })
    };
    let want_legacy = vec![
        legacy_row("", "[127.0.0.1]", "localhost", "", "standard-refuse", "", "TLSv1.0", "refused_at_handshake", 1, 0),
        legacy_row("", "[127.0.0.1]", "localhost", "client.test", "standard-starttls", "TLSv1.0", "TLSv1.0", "explained_421", 1, 0),
        legacy_row("contoso", ALICE, "localhost", "alice-phone.contoso.lan", "legacy-starttls", "TLSv1.0", "TLSv1.0", "auth_failed", 1, 0),
        legacy_row("contoso", SCANNER, "localhost", "scanner.contoso.lan", "legacy-starttls", "TLSv1.0", "TLSv1.0", "not_opted_in", 1, 0),
        legacy_row("fabrikam", PRINTER, "", "client.test", "legacy-implicit", "TLSv1.1", "TLSv1.1", "delivered", 1, 1),
        legacy_row("fabrikam", PRINTER, "localhost", "printer-3f.fabrikam.lan", "legacy-starttls", "TLSv1.0", "TLSv1.0", "delivered", 2, 3),
    ];
    for row in &legacy {
        // Every one of these clients offered the OpenSSL client's legacy list, which has it.
        let offered = row["offered_ciphers"].as_str().unwrap();
        assert!(offered.contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), "report legacy: offered_ciphers of {row}");
    }
    let got: Vec<Value> = legacy.iter().map(|r| without(r, &["last_seen", "fingerprint", "offered_ciphers"])).collect();
    assert_same_rows("report legacy", &got, &want_legacy);

    // ---- --tenant: exactly that tenant's rows, never another's or those of no tenant.
    for tenant in ["contoso", "fabrikam"] {
        for (kind, all) in [("tls", &tls), ("legacy", &legacy)] {
            let only = report(&t, &[kind, "--tenant", tenant]).await;
            let what = format!("report {kind} --tenant {tenant}");
            assert!(only.iter().all(|r| r["tenant"] == tenant), "{what}: a row of another tenant: {only:#?}");
            assert!(!only.is_empty(), "{what}: no rows");
            assert_same_rows(&what, &only, &of_tenant(all, tenant));
        }
    }
    // The what-if with the opt-in off lists the legacy devices served today only: not the
    // scanner (already refused), nor the explained, refused or failed attempts.
    let disable = report(&t, &["what-if", "--disable-legacy"]).await;
    let got: BTreeSet<(String, String, String, i64, i64)> = disable
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("sender"), s("endpoint"), s("version"), r["sessions"].as_i64().unwrap(), r["messages"].as_i64().unwrap())
        })
        .collect();
    let want = BTreeSet::from([
        (PRINTER.to_string(), "legacy-implicit".to_string(), "TLSv1.1".to_string(), 1, 1),
        (PRINTER.to_string(), "legacy-starttls".to_string(), "TLSv1.0".to_string(), 2, 3),
    ]);
    assert_eq!(got, want, "what-if --disable-legacy: {disable:#?}");
    assert!(disable.iter().all(|r| r["tenant"] == "fabrikam" && r["reply"].as_str().unwrap().starts_with("534 5.7.9 ")), "{disable:#?}");

    let contoso = BTreeSet::from([ALICE.to_string(), SCANNER.to_string(), "nobody@contoso.test".to_string()]);
    assert_eq!(senders(&of_tenant(&tls, "contoso")), contoso);
}

// ---- 2. CSV ----------------------------------------------------------------------------------

const TLS_HEADER: &str = "tenant,sender,sessions,messages,tls10_pct,tls11_pct,tls12_pct,tls13_pct,endpoints,last_seen,devices";
const LEGACY_HEADER: &str =
    "tenant,sender,client_ip,sni,ehlo,fingerprint,endpoint,version,offered_max,outcome,sessions,messages,last_seen,cipher,offered_ciphers";
const WHAT_IF_HEADER: &str =
    "tenant,sender,endpoint,version,fingerprint,ehlo,client_ip,sessions,messages,affected_pct,messages_per_day,reply,cipher";

/// A CSV cell against the JSON value of the same column.
fn assert_cell(column: &str, cell: &str, json: &Value, what: &str) {
    let ok = match json {
        Value::String(s) => cell == s,
        Value::Number(n) if n.is_i64() || n.is_u64() => cell == n.to_string(),
        Value::Number(n) => cell.parse::<f64>().ok() == n.as_f64(),
        Value::Array(items) if column == "endpoints" => {
            cell == items.iter().map(|i| i.as_str().unwrap()).collect::<Vec<_>>().join(" ")
        }
        Value::Array(items) if column == "devices" => items.iter().all(|d| {
            cell.contains(d["fingerprint"].as_str().unwrap()) && cell.contains(d["ehlo"].as_str().unwrap())
        }),
        _ => false,
    };
    assert!(ok, "{what}: column {column}: CSV {cell:?}, JSON {json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reports_parse_with_the_documented_headers_and_match_the_json() {
    let mut t = TestServer::start_custom(&endpoints(""), &[ALICE, SCANNER, BOB, PRINTER], None).await;
    t.server().directory.set_legacy("fabrikam", &opt_in(true)).await.unwrap();
    // An EHLO name with a comma and quotes: CSV must quote it.
    let printer = Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "printer,\"lobby\"" };
    submit(&t, &printer, PRINTER, pw(PRINTER), BOB, 2).await.unwrap();
    let printer11 = Device { endpoint: "legacy-implicit", version: SslVersion::TLS1_1, ehlo: "printer-11.fabrikam.lan" };
    submit(&t, &printer11, PRINTER, pw(PRINTER), BOB, 1).await.unwrap();
    let scanner = Device { endpoint: "legacy-implicit", version: SslVersion::TLS1, ehlo: "scanner.contoso.lan" };
    assert!(submit(&t, &scanner, SCANNER, pw(SCANNER), ALICE, 1).await.unwrap_err().starts_with("534 5.7.9 "));
    let bob = Device { endpoint: "standard-implicit", version: SslVersion::TLS1_3, ehlo: "bob-laptop.fabrikam.lan" };
    submit(&t, &bob, BOB, pw(BOB), ALICE, 1).await.unwrap();
    t.stop().await;

    let future = (today() + chrono::Days::new(30)).to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["tls"], TLS_HEADER),
        (&["tls", "--tenant", "fabrikam"], TLS_HEADER),
        (&["legacy"], LEGACY_HEADER),
        (&["legacy", "--tenant", "contoso"], LEGACY_HEADER),
        (&["what-if", "--disable-legacy"], WHAT_IF_HEADER),
        (&["what-if", "--on", &future], WHAT_IF_HEADER),
    ];
    for (args, header) in cases {
        let what = format!("report {}", args.join(" "));
        let json = report(&t, args).await;
        let (got_header, rows) = report_csv(&t, args).await;
        assert_eq!(got_header.join(","), header, "{what}: CSV header");
        assert_eq!(rows.len(), json.len(), "{what}: CSV rows vs JSON rows\nCSV: {rows:?}\nJSON: {json:#?}");
        // The JSON keys are the CSV columns.
        for (row, j) in rows.iter().zip(&json) {
            let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), got_header.len(), "{what}: JSON keys {keys:?} vs CSV header");
            assert_eq!(row.len(), got_header.len(), "{what}: {row:?}");
            for (column, cell) in got_header.iter().zip(row) {
                assert_cell(column, cell, &j[column.as_str()], &what);
            }
        }
        // Not vacuous: every case has rows (the what-if on a date lists nothing, as no
        // schedule is set and fabrikam is opted in).
        if !args.contains(&"--on") {
            assert!(!json.is_empty(), "{what}: no rows");
        } else {
            assert!(json.is_empty(), "{what}: nothing changes on {future}: {json:#?}");
        }
    }
    // The quoted EHLO name came through intact.
    let (_, rows) = report_csv(&t, &["legacy", "--tenant", "fabrikam"]).await;
    assert!(rows.iter().any(|r| r[4] == "printer,\"lobby\""), "{rows:?}");
    // Table output works too, with the same headers in capitals.
    let out = cli(&t, &["report", "legacy"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.starts_with("TENANT  "), "{}", show(&out));
}

// ---- 3. the what-if agrees with reality -----------------------------------------------------

/// The senders of the what-if test and their devices.
fn fleet() -> [(&'static str, Device, &'static str); 4] {
    [
        (PRINTER, Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "printer.fabrikam.lan" }, BOB),
        (PRINTER2, Device { endpoint: "legacy-implicit", version: SslVersion::TLS1_1, ehlo: "printer2.fabrikam.lan" }, BOB),
        (BOB, Device { endpoint: "legacy-starttls", version: SslVersion::TLS1_2, ehlo: "bob-laptop.fabrikam.lan" }, ALICE),
        (ALICE, Device { endpoint: "standard-implicit", version: SslVersion::TLS1_3, ehlo: "alice-laptop.contoso.lan" }, BOB),
    ]
}

/// Every sender of the fleet submits one message; returns those that failed, with the
/// reply that stopped them.
async fn replay(t: &TestServer) -> BTreeMap<String, String> {
    let mut failed = BTreeMap::new();
    for (user, device, to) in fleet() {
        if let Err(reply) = submit(t, &device, user, pw(user), to, 1).await {
            failed.insert(user.to_string(), reply.trim_end().to_string());
        }
    }
    failed
}

/// "port 12345" -> "port N": the what-if reads the configuration, whose ports are 0 here.
fn ports_elided(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("port ") {
        out.push_str(&rest[..i + 5]);
        rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out + rest
}

/// Rows of a what-if as (sender, reply) with the ports elided.
fn predicted(rows: &[Value]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|r| (r["sender"].as_str().unwrap().to_string(), ports_elided(r["reply"].as_str().unwrap())))
        .collect()
}

fn elided(failed: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    failed.iter().map(|(s, r)| (s.clone(), ports_elided(r))).collect()
}

/// Outcome per (endpoint, version) in `report legacy` for one day, with session counts.
async fn legacy_outcomes(t: &TestServer, day: &str) -> BTreeSet<(String, String, String, String, i64)> {
    let rows = report(t, &["legacy", "--from", day, "--to", day]).await;
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("sender"), s("endpoint"), s("version"), s("outcome"), r["sessions"].as_i64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_lists_exactly_the_senders_that_then_fail_with_that_reply() {
    let schedule =
        r#"schedule = [{ from = "2029-09-01", reject_percent = 50 }, { from = "2030-01-01", reject_percent = 100 }]"#;
    let config = format!("{}\n[tls]\nschedule_seed = 11\n", endpoints(schedule));
    let mut t = TestServer::start_custom(&config, &[ALICE, BOB, PRINTER], None).await;
    let dir = t.server().directory.clone();
    dir.add_user(PRINTER2, PRINTER2_PASSWORD, true).await.unwrap();
    dir.set_legacy("fabrikam", &opt_in(true)).await.unwrap();

    // Server A, the real clock: everyone delivers.
    let failed = replay(&t).await;
    assert!(failed.is_empty(), "before the schedule, every sender delivers: {failed:#?}");
    t.stop().await;

    // What-ifs, while the server is down.
    let row = |sender: &str, endpoint: &str, version: &str, ehlo: &str, pct: u8, per_day: f64, reply: &str| {
        json!({
            "tenant": "fabrikam", "sender": sender, "endpoint": endpoint, "version": version, "ehlo": ehlo,
            "client_ip": "127.0.0.1", "sessions": 1, "messages": 1, "affected_pct": pct,
            "messages_per_day": per_day, "reply": reply, "cipher": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        })
    };
    // Both legacy senders, with this share, messages per day and reply (ports elided).
    let both = |pct: u8, per_day: f64, reply: &dyn Fn(&str) -> String| {
        vec![
            row(PRINTER, "legacy-starttls", "TLSv1.0", "printer.fabrikam.lan", pct, per_day, &reply("1.0")),
            row(PRINTER2, "legacy-implicit", "TLSv1.1", "printer2.fabrikam.lan", pct, per_day, &reply("1.1")),
        ]
    };
    let what_if = |args: Vec<&'static str>| {
        let t = &t;
        async move {
            let rows = report(t, &[&["what-if"][..], &args].concat()).await;
            for r in &rows {
                let v = &r["version"].as_str().unwrap()["TLSv1.".len()..];
                assert_fingerprint(&r["fingerprint"], &format!("1{v}"), true, &format!("what-if {args:?} row {r}"));
            }
            let elided: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut r = without(r, &["fingerprint"]);
                    r["reply"] = json!(ports_elided(r["reply"].as_str().unwrap()));
                    r
                })
                .collect();
            (rows, elided)
        }
    };

    // The 100% step: exactly the legacy senders, all their sessions (one message over the
    // default 7 days: 0.14 a day), told the version is not supported.
    let explain = "421 4.7.66 TLS 1.0 and 1.1 are not supported on this endpoint. Use TLS 1.2 or later.";
    let (on_2030, got) = what_if(vec!["--on", "2030-01-01"]).await;
    assert_same_rows("what-if --on 2030-01-01", &got, &both(100, 0.14, &|_| explain.to_string()));
    // The 50% step: half their sessions, told to try again later.
    let deferred = "421 4.7.66 TLS 1.0 and 1.1 are being retired on this endpoint and this session was deferred; try again later. Use TLS 1.2 or later.";
    let (on_sept, got) = what_if(vec!["--on", "2029-09-01"]).await;
    assert_same_rows("what-if --on 2029-09-01", &got, &both(50, 0.07, &|_| deferred.to_string()));
    // The day before the first step, nobody; and nobody of contoso.
    assert_eq!(what_if(vec!["--on", "2029-08-31"]).await.0, Vec::<Value>::new(), "what-if --on 2029-08-31");
    assert_eq!(what_if(vec!["--on", "2030-01-01", "--tenant", "contoso"]).await.0, Vec::<Value>::new());
    // fabrikam's opt-in off: the same legacy senders, told 534 5.7.9.
    let not_enabled =
        |v: &str| format!("534 5.7.9 Legacy TLS (TLS {v}) is not enabled for your organization; use TLS 1.2 or later on port N");
    let (disable, got) = what_if(vec!["--disable-legacy"]).await;
    assert_same_rows("what-if --disable-legacy", &got, &both(100, 0.14, &not_enabled));
    // An opt-in end date (set as an administrator would, with the server down): the day
    // after it, the same senders, told it ended.
    let out = cli(&t, &["tenant", "set", "fabrikam", "--legacy-until", "2029-06-30"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(what_if(vec!["--on", "2029-06-30"]).await.0, Vec::<Value>::new(), "the end date is included");
    let ended = |v: &str| format!("534 5.7.9 Legacy TLS (TLS {v}) for your organization ended on 2029-06-30; use TLS 1.2 or later on port N");
    let (on_july, got) = what_if(vec!["--on", "2029-07-01"]).await;
    assert_same_rows("what-if --on 2029-07-01", &got, &both(100, 0.14, &ended));

    // Server B on the same data and the same clients, its clock moved. Those that fail are
    // exactly those the what-if listed, with the reply it predicted (which names the
    // configured port, 0 here, where the server names the port it bound: ports elided).
    let clock = TestClock::at("2029-07-01");
    let mut t = t.restart(Some(clock.clock())).await;
    let failed = replay(&t).await;
    assert_eq!(elided(&failed), predicted(&on_july), "on 2029-07-01, after the opt-in's end");
    assert!(failed[PRINTER].ends_with(&format!("on port {}", t.addr("standard-starttls").port())), "{}", failed[PRINTER]);
    assert!(failed[PRINTER2].ends_with(&format!("on port {}", t.addr("standard-implicit").port())), "{}", failed[PRINTER2]);

    // The 50% step (end date lifted): only the legacy senders ever fail, with the predicted
    // reply, some sessions and not others.
    t.server().directory.set_legacy("fabrikam", &LegacyChanges { until: Some(None), ..Default::default() }).await.unwrap();
    clock.set("2029-09-01");
    let mut deferrals = 0;
    let predicted_sept = predicted(&on_sept);
    for _ in 0..8 {
        for (sender, reply) in replay(&t).await {
            assert_eq!(Some(&ports_elided(&reply)), predicted_sept.get(&sender), "{sender} on 2029-09-01");
            deferrals += 1;
        }
    }
    assert!((1..16).contains(&deferrals), "50%: {deferrals} of 16 legacy sessions deferred");

    // The 100% step.
    clock.set("2030-01-02");
    let failed = replay(&t).await;
    assert_eq!(elided(&failed), predicted(&on_2030), "on 2030-01-02");

    // Back to today with fabrikam's opt-in off.
    clock.set(&today().to_string());
    t.server().directory.set_legacy("fabrikam", &opt_in(false)).await.unwrap();
    let failed = replay(&t).await;
    assert_eq!(elided(&failed), predicted(&disable), "today, with the opt-in off");
    t.stop().await;

    // What server B recorded. The sessions told 421 right after the handshake never reached
    // AUTH: they are known by address and device only.
    let ip = "[127.0.0.1]".to_string();
    let o = |sender: &str, endpoint: &str, version: &str, outcome: &str, n: i64| {
        (sender.to_string(), endpoint.to_string(), version.to_string(), outcome.to_string(), n)
    };
    assert_eq!(
        legacy_outcomes(&t, "2030-01-02").await,
        BTreeSet::from([o(&ip, "legacy-implicit", "TLSv1.1", "explained_421", 1), o(&ip, "legacy-starttls", "TLSv1.0", "explained_421", 1)])
    );
    let sept = legacy_outcomes(&t, "2029-09-01").await;
    let count = |outcome: &str| sept.iter().filter(|r| r.3 == outcome).map(|r| r.4).sum::<i64>();
    assert_eq!((count("deferred_by_schedule"), count("delivered")), (deferrals, 16 - deferrals), "2029-09-01: {sept:#?}");
    assert_eq!(
        legacy_outcomes(&t, "2029-07-01").await,
        BTreeSet::from([
            o(PRINTER, "legacy-starttls", "TLSv1.0", "opt_in_expired", 1),
            o(PRINTER2, "legacy-implicit", "TLSv1.1", "opt_in_expired", 1)
        ])
    );
    // The devices refused are the devices predicted.
    let fp = |rows: &[Value], endpoint: &str| rows.iter().find(|r| r["endpoint"] == endpoint).map(|r| r["fingerprint"].clone());
    let b = report(&t, &["legacy", "--from", "2030-01-02", "--to", "2030-01-02"]).await;
    for endpoint in ["legacy-starttls", "legacy-implicit"] {
        assert_eq!(fp(&b, endpoint), fp(&on_2030, endpoint), "{endpoint}: the device refused is the device predicted");
    }
}

// ---- 4. recording never blocks SMTP ---------------------------------------------------------

/// Waits until `f` reaches `want` (deadline 10 s); it must not go beyond.
async fn wait_until_equal(what: &str, want: u64, f: impl Fn() -> u64) {
    wait_until_equal_within(what, want, f, Duration::from_secs(10)).await
}

async fn wait_until_equal_within(what: &str, want: u64, f: impl Fn() -> u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = f();
        if now >= want {
            assert_eq!(now, want, "{what}");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_usage_buffer_drops_events_and_never_holds_sessions_up() {
    let config = format!("{}\n[usage]\nbuffer = 1\n", endpoints(""));
    let mut t = TestServer::start_custom(&config, &[ALICE, BOB], None).await;
    // One login each first, so that the concurrent ones find their password verified.
    for user in [ALICE, BOB] {
        let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, user).await;
        r.expect("QUIT", 221).await;
    }
    const N: usize = 20;
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..N {
        let (addr, cert) = (if i % 2 == 0 { t.starttls_addr() } else { t.implicit_addr() }, t.cert_pem.clone());
        let user = if i % 3 == 0 { BOB } else { ALICE };
        sessions.spawn(async move {
            let mut r = if i % 2 == 0 {
                Raw::starttls(addr, &cert).await
            } else {
                let mut r = Raw::implicit(addr, &cert).await;
                r.expect("EHLO client.test", 250).await;
                r
            };
            r.expect(&auth_plain_command(user, password(user)), 235).await;
            r.expect(&format!("MAIL FROM:<{user}>"), 250).await;
            r.expect(&format!("RCPT TO:<{ALICE}>"), 250).await;
            r.expect("DATA", 354).await;
            r.expect(&format!("Subject: concurrent {i}\r\n\r\n{i}\r\n."), 250).await;
            r.expect("QUIT", 221).await;
        });
    }
    let started = Instant::now();
    while let Some(r) = sessions.join_next().await {
        r.unwrap();
    }
    let elapsed = started.elapsed();
    t.wait_for_mail(ALICE, N).await;
    let connections = N as u64 + 2;
    let rec = t.server().recorder();
    wait_until_equal("recorded + dropped = connections", connections, || rec.recorded() + rec.dropped()).await;
    let (recorded, dropped) = (rec.recorded(), rec.dropped());
    eprintln!("{N} concurrent sessions in {elapsed:?}: {recorded} events recorded, {dropped} dropped");
    t.stop().await;

    // What was queued was stored, nothing more: the TLS report counts those sessions.
    let tls = report(&t, &["tls"]).await;
    let stored: i64 = tls.iter().map(|r| r["sessions"].as_i64().unwrap()).sum();
    assert_eq!(stored as u64, recorded, "sessions in `report tls` against events recorded: {tls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_usage_disabled_sessions_work_and_reports_are_empty() {
    let config = format!("{}\n[usage]\nenabled = false\n", endpoints(""));
    let mut t = TestServer::start_custom(&config, &[ALICE, PRINTER, BOB], None).await;
    t.server().directory.set_legacy("fabrikam", &opt_in(true)).await.unwrap();
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    r.expect(&format!("RCPT TO:<{BOB}>"), 250).await;
    r.expect("DATA", 354).await;
    r.expect("Subject: disabled\r\n\r\nx\r\n.", 250).await;
    r.expect("QUIT", 221).await;
    let printer = Device { endpoint: "legacy-starttls", version: SslVersion::TLS1, ehlo: "printer.fabrikam.lan" };
    submit(&t, &printer, PRINTER, pw(PRINTER), BOB, 1).await.unwrap();
    t.wait_for_mail(BOB, 2).await;
    let rec = t.server().recorder();
    assert_eq!((rec.recorded(), rec.dropped()), (0, 0));
    t.stop().await;
    for args in [&["tls"][..], &["legacy"], &["what-if", "--disable-legacy"], &["what-if", "--on", "2030-01-01"]] {
        assert_eq!(report(&t, args).await, Vec::<Value>::new(), "report {}", args.join(" "));
    }
}

/// `mailgate serve` stopped by SIGTERM with sessions still open: their events (recorded as
/// the shutdown tells them 421) are stored before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_sessions_open_at_sigterm_are_stored_before_the_process_exits() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut t = TestServer::start_custom(&endpoints(""), &[ALICE], None).await;
    t.stop().await;
    let stderr = std::fs::File::create(t.dir.path().join("serve.stderr")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(t.config_path())
        .arg("serve")
        .env_remove("MAILGATE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut listeners = BTreeMap::new();
    while listeners.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("listening lines within 20 s")
            .unwrap()
            .expect("mailgate serve ended before listening");
        if let ["listening", name, addr] = line.split_whitespace().collect::<Vec<_>>()[..] {
            listeners.insert(name.to_string(), addr.parse::<std::net::SocketAddr>().unwrap());
        }
    }
    let addr = listeners["standard-starttls"];
    // One session delivers; five stay logged in and idle.
    let mut r = Raw::logged_in(addr, &t.cert_pem, ALICE).await;
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    r.expect(&format!("RCPT TO:<{ALICE}>"), 250).await;
    r.expect("DATA", 354).await;
    r.expect("Subject: before sigterm\r\n\r\nx\r\n.", 250).await;
    r.expect("QUIT", 221).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(Raw::logged_in(addr, &t.cert_pem, ALICE).await);
    }
    let pid = child.id().unwrap().to_string();
    let st = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    for r in &mut idle {
        let (code, text) = r.reply().await;
        assert_eq!(code, 421, "an idle session at shutdown: {text:?}");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exit within 30 s").unwrap();
    assert!(status.success(), "mailgate serve after SIGTERM: {status}");
    let tls = report(&t, &["tls"]).await;
    assert_eq!(tls.len(), 1, "{tls:#?}");
    assert_eq!((&tls[0]["sender"], &tls[0]["sessions"], &tls[0]["messages"]), (&json!(ALICE), &json!(6), &json!(1)), "{tls:#?}");
}

/// docs/reports.md: "one usage event per connection, whatever way it ends", garbage
/// instead of a ClientHello included; and a connection told 421 because its address is
/// over `max_sessions_per_ip`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_one_event_whatever_way_it_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = format!("{}\n[limits]\nmax_sessions_per_ip = 1\n", endpoints(""));
    let t = TestServer::start_custom(&config, &[], None).await;
    let rec = t.server().recorder();
    async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await.expect("closed within 10 s").ok();
        got
    }
    // A session holding the only place of 127.0.0.1, and another connection, told 421.
    let mut held = Raw::plain(t.starttls_addr(), &t.cert_pem).await;
    let mut busy = TcpStream::connect(t.starttls_addr()).await.unwrap();
    let said = String::from_utf8_lossy(&until_closed(&mut busy).await).into_owned();
    assert!(said.starts_with("421 "), "over max_sessions_per_ip: {said:?}");
    held.expect("QUIT", 221).await;
    // HTTP instead of a ClientHello (one connection, whether served or, if the held
    // session's place is not yet free, refused as busy).
    let mut tcp = TcpStream::connect(t.implicit_addr()).await.unwrap();
    let _ = tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    until_closed(&mut tcp).await;
    wait_until_equal_within("events for 3 connections (held, busy, HTTP)", 3, || rec.recorded() + rec.dropped(), Duration::from_secs(5)).await;
}

// ---- 5. periods -----------------------------------------------------------------------------

/// `mailgate report ...` fails with status 1 and a one-line message containing `words`.
async fn assert_report_error(t: &TestServer, args: &[&str], words: &[&str]) {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let out = cli(t, &all).await;
    let what = format!("mailgate {}", all.join(" "));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: status 1 expected\n{}", show(&out));
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout\n{}", show(&out));
    assert!(stderr.starts_with("mailgate: error: ") && stderr.trim_end().lines().count() == 1, "{what}: one line\n{}", show(&out));
    for w in words {
        assert!(stderr.contains(w), "{what}: {w:?} missing from {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_periods_are_checked_and_include_today() {
    let mut t = TestServer::start_custom(&endpoints(""), &[ALICE], None).await;
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    r.expect("QUIT", 221).await;
    let mut r = Raw::implicit(t.implicit_addr(), &t.cert_pem).await;
    r.expect("EHLO client.test", 250).await;
    r.expect(&auth_plain_command(ALICE, password(ALICE)), 235).await;
    r.expect(&format!("MAIL FROM:<{ALICE}>"), 250).await;
    r.expect(&format!("RCPT TO:<{ALICE}>"), 250).await;
    r.expect("DATA", 354).await;
    r.expect("Subject: today\r\n\r\nx\r\n.", 250).await;
    r.expect("QUIT", 221).await;
    t.stop().await;

    let day = |offset: i64| (today() + chrono::Duration::days(offset)).to_string();
    let (d_499, d_1, d0) = (day(-499), day(-1), day(0));
    for kind in [&["tls"][..], &["legacy"], &["what-if", "--disable-legacy"]] {
        fn joined<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
            [a, b].concat()
        }
        assert_report_error(&t, &joined(kind, &["--since", "0d"]), &["--since", "0d"]).await;
        assert_report_error(&t, &joined(kind, &["--from", "2026-02-30"]), &["--from", "2026-02-30"]).await;
        assert_report_error(&t, &joined(kind, &["--since", "500d"]), &["500d", "400"]).await;
        assert_report_error(&t, &joined(kind, &["--from", &d_499, "--to", &d0]), &["400"]).await;
        assert_report_error(&t, &joined(kind, &["--from", &d0, "--to", &d_1]), &["--to", "--from"]).await;
        assert_report_error(&t, &joined(kind, &["--since", "7d", "--from", &d_1]), &["--since", "--from"]).await;
    }
    // An unknown tenant is an error, not an empty report.
    assert_report_error(&t, &["tls", "--tenant", "nosuch"], &["nosuch"]).await;
    // The longest period allowed is fine.
    report(&t, &["tls", "--since", "400d"]).await;

    // Today's sessions are in any period that includes today, and in none that does not.
    let sessions = |rows: &[Value]| rows.iter().map(|r| r["sessions"].as_i64().unwrap()).sum::<i64>();
    for args in [
        vec!["tls"],
        vec!["tls", "--since", "1d"],
        vec!["tls", "--from", &day(-1), "--to", &day(1)],
        vec!["tls", "--from", &day(-1)],
        vec!["tls", "--from", &day(0), "--to", &day(0)],
    ] {
        let rows = report(&t, &args).await;
        assert_eq!(sessions(&rows), 2, "report {}: {rows:#?}", args.join(" "));
        assert_eq!(rows[0]["sender"], ALICE);
    }
    for args in [vec!["tls", "--from", &day(-9), "--to", &day(-1)], vec!["tls", "--from", &day(1), "--to", &day(3)]] {
        assert_eq!(report(&t, &args).await, Vec::<Value>::new(), "report {}", args.join(" "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_periods_are_refused_with_a_message_not_a_panic() {
    let mut t = TestServer::start_custom(&endpoints(""), &[], None).await;
    t.stop().await;
    for since in ["100000000d", "2000000000000000000w"] {
        assert_report_error(&t, &["tls", "--since", since], &["--since"]).await;
    }
    assert_report_error(&t, &["tls", "--from", "0001-01-01"], &["days"]).await;
}

/// A TLS 1.0 device refused at AUTH (534: its tenant has not opted in) that keeps its
/// connection open is in `mailgate report legacy` while the connection is still open; when
/// it ends, the session still counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_device_that_stays_connected_is_reported_before_it_leaves() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut t = TestServer::start_custom(common::FOUR_ENDPOINTS, &[PRINTER], None).await;
    let port = t.addr("legacy-starttls").port().to_string();
    let mut child = Command::new("python3")
        .arg(clients_dir().join("hold_open.py"))
        .args([port.as_str(), PRINTER, password(PRINTER)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let auth = stdout.next_line().await.unwrap().expect("the AUTH reply");
    assert!(auth.starts_with("534 5.7.9 ") && auth.ends_with("TLSv1"), "{auth}");

    // Polled, the client still connected: the writer stores within its batch interval.
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let rows = report(&t, &["legacy"]).await;
        if let Some(r) = rows.iter().find(|r| r["sender"] == PRINTER) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "the refused session is not in the legacy report within 20 s: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((row["outcome"].as_str(), row["sessions"].as_i64(), row["version"].as_str()), (Some("not_opted_in"), Some(1), Some("TLSv1.0")));
    assert_eq!(row["ehlo"], "printer-hold.fabrikam.lan");

    // The connection was open all along: NOOP on it is answered.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let noop = stdout.next_line().await.unwrap().expect("the NOOP reply");
    assert!(noop.starts_with("250"), "{noop}");
    assert!(child.wait().await.unwrap().success());
    t.stop().await;
    let rows: Vec<Value> = report(&t, &["legacy"]).await.into_iter().filter(|r| r["sender"] == PRINTER).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["outcome"].as_str(), rows[0]["sessions"].as_i64()), (Some("not_opted_in"), Some(1)), "one session, counted once");
}

/// A long session's messages reach the reports while it stays connected; the session
/// still counts once, with all its messages, after it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sessions_messages_are_reported_while_it_goes_on() {
    let mut t = TestServer::start_custom(common::STANDARD_ENDPOINTS, &[ALICE], None).await;
    let mut c = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    let transaction = format!("MAIL FROM:<{ALICE}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n");
    for n in 1..=2u32 {
        c.send(transaction.as_bytes()).await;
        for _ in 0..3 {
            c.reply().await;
        }
        assert_eq!(c.cmd(&format!("Subject: {n}\r\n\r\nbody\r\n.")).await.0, 250);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = report(&t, &["tls"]).await;
            if rows.iter().any(|r| r["sender"] == ALICE && r["messages"] == n) {
                break;
            }
            assert!(Instant::now() < deadline, "message {n} is not in the report within 20 s: {rows:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(c.cmd("NOOP").await.0, 250, "the session is still open");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    t.stop().await;
    let rows: Vec<Value> = report(&t, &["tls"]).await.into_iter().filter(|r| r["sender"] == ALICE).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["sessions"].as_i64(), rows[0]["messages"].as_i64()), (Some(1), Some(2)), "{rows:?}");
}
