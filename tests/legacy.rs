//! Acceptance tests for legacy TLS (1.0 and 1.1): the real server on 127.0.0.1 port 0,
//! driven by real legacy clients (OpenSSL's s_client, Python's ssl/smtplib, swaks, sslyze,
//! and the `openssl` crate as a Rust TLS 1.0 client), plus hand-made ClientHello bytes
//! over raw sockets.
//!
//! The points, in order: the standard endpoint explains TLS 1.0/1.1 with 421 4.7.66;
//! `legacy_tls = "refuse"` fails the handshake; the legacy endpoint serves an opted-in
//! tenant over TLS 1.0/1.1; the opt-in is checked at AUTH (534 5.7.9, one text per reason);
//! TLS 1.2/1.3 on the legacy endpoint is served as anywhere; `reject_percent` schedules;
//! bad ClientHellos; a client offering 1.0..1.3 gets TLS 1.3 from rustls; sslyze's view.

mod common;
use common::{client_hello, last_json_line, run, show, FOUR_ENDPOINTS as LEGACY_ENDPOINTS};

use common::{password, split_received, Raw, TestClock, TestServer};
use mailgate::directory::LegacyChanges;
use mailgate::listener::TlsCounters;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const PRINTER: &str = "printer@fabrikam.test";


// ---- helpers --------------------------------------------------------------------------------

/// A `TlsCounters` field of the running server.
macro_rules! count {
    ($t:expr, $field:ident) => {
        TlsCounters::get(&$t.server().tls_counters().$field)
    };
}

/// Polls a counter until it reaches `want` (deadline 10 s): some are bumped by the server
/// after the client has already gone.
async fn wait_count(t: &TestServer, what: &str, field: impl Fn(&TlsCounters) -> u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = field(t.server().tls_counters());
        if now >= want {
            assert_eq!(now, want, "{what}: counter overshot");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: counter is {now}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_starttls(endpoint: &str) -> bool {
    endpoint.ends_with("starttls")
}

fn mode_of(endpoint: &str) -> &'static str {
    if is_starttls(endpoint) {
        "starttls"
    } else {
        "implicit"
    }
}


fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/legacy_client.py")
}


/// `legacy_client.py probe`: the handshake, what the server says first, and what comes
/// back for EHLO + AUTH after it.
async fn py_probe(mode: &'static str, port: u16, lo: &'static str, hi: &'static str) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(client_script()).args(["probe", mode, &port.to_string(), lo, hi]);
    let what = format!("python probe {mode} TLS {lo}..{hi} on port {port}");
    let out = run(cmd, &what).await;
    last_json_line(&out, &what)
}

/// A message tagged by its Subject.
fn write_message(dir: &Path, tag: &str, from: &str, to: &str) -> PathBuf {
    let path = dir.join(format!("{tag}.eml"));
    let msg = format!("From: {from}\r\nTo: {to}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\nSent by {tag}.\r\n");
    std::fs::write(&path, msg).unwrap();
    path
}

/// What `py_send` needs, owned so that sends can run side by side.
#[derive(Clone)]
struct SmtplibSend {
    dir: PathBuf,
    mode: &'static str,
    port: u16,
    lo: &'static str,
    hi: &'static str,
    /// Verify the certificate against this file; `None`: no verification.
    cafile: Option<PathBuf>,
    user: &'static str,
    to: &'static str,
    tag: String,
}

/// `legacy_client.py send`: smtplib with pinned versions. Returns its JSON report.
async fn py_send(s: SmtplibSend) -> Value {
    let file = write_message(&s.dir, &s.tag, s.user, s.to);
    let cafile = s.cafile.as_ref().map_or("-".to_string(), |p| p.display().to_string());
    let mut cmd = Command::new("python3");
    cmd.arg(client_script()).args(["send", s.mode, &s.port.to_string(), s.lo, s.hi, &cafile]);
    cmd.args([s.user, password(s.user), s.user, s.to]).arg(&file);
    let what = format!("python smtplib {} TLS {}..{} on port {} ({})", s.mode, s.lo, s.hi, s.port, s.tag);
    let out = run(cmd, &what).await;
    assert!(out.status.success(), "{what}\n{}", show(&out));
    last_json_line(&out, &what)
}

/// swaks delivering one tagged message; asserts it was queued and returns its stdout.
async fn swaks(port: u16, implicit: bool, protocol: &str, user: &str, to: &str, tag: &str) -> String {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .arg(if implicit { "--tlsc" } else { "--tls" })
        .args(["--tls-protocol", protocol, "--tls-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(["--auth", "PLAIN", "--auth-user", user, "--auth-password", password(user)])
        .args(["--from", user, "--to", to, "--ehlo", "client.test"])
        .args(["--header", &format!("Subject: {tag}")]);
    let what = format!("swaks {protocol} {} ({tag})", if implicit { "--tlsc" } else { "--tls" });
    let out = run(cmd, &what).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && stdout.contains("250 2.0.0 OK queued as"), "{what}\n{}", show(&out));
    stdout
}

/// `openssl s_client` with a pinned legacy version; stdin is empty and ignored, so it
/// prints what the server sends until the server closes.
async fn s_client(port: u16, starttls: bool, version_flag: &str) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version_flag])
        .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-ign_eof"])
        .stdin(std::process::Stdio::null());
    if starttls {
        cmd.args(["-starttls", "smtp"]);
    }
    run(cmd, &format!("openssl s_client {version_flag} on port {port}")).await
}

/// Waits for `n` messages in a mailbox; returns each one's Received header by Subject.
async fn received_by_subject(t: &TestServer, rcpt: &str, n: usize) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for file in t.wait_for_mail(rcpt, n).await {
        let (received, body) = split_received(&file);
        let body = String::from_utf8_lossy(&body);
        let subject = body
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("no Subject in {body}"))
            .trim()
            .to_string();
        out.insert(subject, received);
    }
    assert_eq!(out.len(), n, "{rcpt}: expected {n} distinct messages: {out:#?}");
    out
}

/// An OpenSSL client pinned to `min..=max`, no certificate check, level 0 set after the
/// cipher list (TLS-NOTES.md).
fn openssl_connector(min: SslVersion, max: SslVersion, ciphers: &str) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(min)).unwrap();
    b.set_max_proto_version(Some(max)).unwrap();
    b.set_cipher_list(ciphers).unwrap();
    b.set_security_level(0);
    b.set_verify(SslVerifyMode::NONE);
    b.build()
}

fn pinned(v: SslVersion) -> SslConnector {
    openssl_connector(v, v, "DEFAULT:@SECLEVEL=0")
}

async fn openssl_handshake(
    tcp: TcpStream,
    connector: &SslConnector,
) -> Result<tokio_openssl::SslStream<TcpStream>, openssl::ssl::Error> {
    let ssl = connector.configure().unwrap().verify_hostname(false).into_ssl("localhost").unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await?;
    Ok(s)
}

/// A TLS session made by the OpenSSL client on `endpoint` (STARTTLS done first where the
/// endpoint wants it); nothing has been read after the handshake.
async fn openssl_session(t: &TestServer, endpoint: &str, connector: &SslConnector) -> Raw {
    let addr = t.addr(endpoint);
    let tcp = if is_starttls(endpoint) {
        let mut r = Raw::plain(addr, &t.cert_pem).await;
        r.expect("EHLO client.test", 250).await;
        r.expect("STARTTLS", 220).await;
        r.into_plain()
    } else {
        TcpStream::connect(addr).await.unwrap()
    };
    let tls = openssl_handshake(tcp, connector).await.unwrap_or_else(|e| panic!("{endpoint}: handshake failed: {e}"));
    Raw::from_stream(Box::new(tls), &t.cert_pem)
}

/// OpenSSL client session, greeting (implicit TLS) and EHLO done; then AUTH PLAIN as `user`.
async fn openssl_login(t: &TestServer, endpoint: &str, connector: &SslConnector, user: &str) -> (u16, String, Raw) {
    let mut r = openssl_session(t, endpoint, connector).await;
    if !is_starttls(endpoint) {
        let (code, text) = r.reply().await;
        assert_eq!(code, 220, "{endpoint}: greeting {text:?}");
    }
    r.expect("EHLO client.test", 250).await;
    let (code, text) = r.auth_plain(user, password(user)).await;
    (code, text, r)
}

/// Sends one message over a logged-in session.
async fn deliver(r: &mut Raw, from: &str, to: &str, tag: &str) {
    r.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    r.expect(&format!("RCPT TO:<{to}>"), 250).await;
    r.expect("DATA", 354).await;
    r.send(format!("From: {from}\r\nTo: {to}\r\nSubject: {tag}\r\n\r\n{tag}\r\n.\r\n").as_bytes()).await;
    let (code, text) = r.reply().await;
    assert_eq!(code, 250, "{tag}: {text}");
}

fn port_of(t: &TestServer, endpoint: &str) -> u16 {
    t.addr(endpoint).port()
}

// ---- 1. the standard endpoint explains TLS 1.0/1.1 ------------------------------------------

const EXPLAIN: &str = "421 4.7.66 TLS 1.0 and 1.1 are not supported on this endpoint. Use TLS 1.2 or later.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_endpoint_answers_legacy_tls_with_421_and_closes() {
    let t = TestServer::start_custom(LEGACY_ENDPOINTS, &[], None).await;
    let cases = [
        ("standard-starttls", "1.0", "TLSv1"),
        ("standard-starttls", "1.1", "TLSv1.1"),
        ("standard-implicit", "1.0", "TLSv1"),
        ("standard-implicit", "1.1", "TLSv1.1"),
    ];
    let mut probes = tokio::task::JoinSet::new();
    for (endpoint, v, want) in cases {
        let port = port_of(&t, endpoint);
        probes.spawn(async move { (endpoint, want, py_probe(mode_of(endpoint), port, v, v).await) });
    }
    let mut texts = Vec::new();
    while let Some(r) = probes.join_next().await {
        let (endpoint, want, p) = r.unwrap();
        assert_eq!(p["handshake"], "ok", "{endpoint} {want}: {p}");
        assert_eq!(p["version"], want, "{endpoint}: {p}");
        let first = p["first"].as_str().unwrap();
        assert!(first.starts_with(EXPLAIN) && first.ends_with("\r\n") && first.lines().count() == 1, "{endpoint} {want}: {p}");
        // The connection is closed: EHLO and AUTH get nothing back.
        assert_eq!(p["after"], "", "{endpoint} {want}: AUTH must be impossible after the 421: {p}");
        texts.push((endpoint, first.to_string()));
    }

    // OpenSSL's s_client sees the same, STARTTLS with TLS 1.1 and implicit TLS with 1.0.
    for (endpoint, flag, protocol) in [("standard-starttls", "-tls1_1", "TLSv1.1"), ("standard-implicit", "-tls1", "TLSv1")] {
        let out = s_client(port_of(&t, endpoint), is_starttls(endpoint), flag).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("Protocol  : {protocol}\n")), "{endpoint} {flag}\n{}", show(&out));
        assert!(stdout.contains(EXPLAIN), "{endpoint} {flag}\n{}", show(&out));
        texts.push((endpoint, stdout.lines().find(|l| l.starts_with("421 ")).unwrap().to_string()));
    }
    assert_eq!(count!(t, explained_421), 6);
    assert_eq!(count!(t, served_rustls), 0);

    // The text points legacy clients at the legacy endpoint of the same TLS mode.
    for (endpoint, text) in texts {
        let legacy = if is_starttls(endpoint) { "legacy-starttls" } else { "legacy-implicit" };
        let port = port_of(&t, legacy);
        assert!(
            text.contains(&format!("legacy endpoint on port {port}.")),
            "{endpoint}: the 421 must name the {legacy} endpoint's port {port}: {text:?}"
        );
    }
}

// ---- 2. legacy_tls = "refuse" ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_fails_legacy_handshakes_and_serves_modern_clients() {
    let refuse = r#"
[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
legacy_tls = "refuse"
[[endpoint]]
name = "standard-implicit"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
legacy_tls = "refuse"
"#;
    let t = TestServer::start_custom(refuse, &[ALICE], None).await;
    let (sp, ip) = (port_of(&t, "standard-starttls"), port_of(&t, "standard-implicit"));
    for (mode, port, v) in [("starttls", sp, "1.0"), ("implicit", ip, "1.0"), ("starttls", sp, "1.1"), ("implicit", ip, "1.1")] {
        let p = py_probe(mode, port, v, v).await;
        assert_eq!(p["handshake"], "failed", "{mode} TLS {v}: {p}");
        let error = p["error"].as_str().unwrap().to_lowercase();
        assert!(error.contains("alert protocol version"), "{mode} TLS {v}: {p}");
    }
    let out = s_client(sp, true, "-tls1").await;
    let all = show(&out);
    assert!(!out.status.success() && all.contains("alert protocol version"), "s_client -tls1 -starttls smtp\n{all}");
    assert!(!all.contains("421 4.7.66"), "refused, not explained\n{all}");
    assert_eq!(count!(t, refused_at_handshake), 5);
    assert_eq!(count!(t, explained_421), 0);
    assert_eq!(count!(t, served_openssl), 0);

    // TLS 1.2 and 1.3 clients deliver as usual, certificate verified.
    let base = SmtplibSend {
        dir: t.dir.path().to_owned(),
        mode: "starttls",
        port: sp,
        lo: "1.2",
        hi: "1.2",
        cafile: Some(t.cert_path.clone()),
        user: ALICE,
        to: ALICE,
        tag: String::new(),
    };
    let sends = [
        SmtplibSend { tag: "refuse-starttls-tls12".into(), ..base.clone() },
        SmtplibSend { tag: "refuse-starttls-tls13".into(), lo: "-", hi: "-", ..base.clone() },
        SmtplibSend { tag: "refuse-implicit-tls12".into(), mode: "implicit", port: ip, ..base.clone() },
        SmtplibSend { tag: "refuse-implicit-tls13".into(), mode: "implicit", port: ip, lo: "-", hi: "-", ..base.clone() },
    ];
    for s in sends.clone() {
        let r = py_send(s.clone()).await;
        assert_eq!(r["sent"], true, "{}: {r}", s.tag);
    }
    let received = received_by_subject(&t, ALICE, 4).await;
    for (tag, version) in [
        ("refuse-starttls-tls12", "TLSv1.2"),
        ("refuse-starttls-tls13", "TLSv1.3"),
        ("refuse-implicit-tls12", "TLSv1.2"),
        ("refuse-implicit-tls13", "TLSv1.3"),
    ] {
        assert!(received[tag].contains(&format!("(using {version} with cipher TLS")), "{tag}: {}", received[tag]);
    }
}

// ---- 3. the legacy endpoint serves an opted-in tenant ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoint_serves_opted_in_tenant_over_tls10_and_tls11() {
    let t = TestServer::start_custom(LEGACY_ENDPOINTS, &[BOB, PRINTER], None).await;
    let on = LegacyChanges { allowed: Some(true), ..Default::default() };
    t.server().directory.set_legacy("fabrikam", &on).await.unwrap();
    let (lsp, lip) = (port_of(&t, "legacy-starttls"), port_of(&t, "legacy-implicit"));

    // swaks, STARTTLS and implicit TLS, TLS 1.0 and 1.1.
    let out = swaks(lsp, false, "tlsv1", PRINTER, BOB, "swaks-starttls-tls10").await;
    assert!(out.contains("TLS started with cipher TLSv1:"), "{out}");
    let out = swaks(lip, true, "tlsv1", PRINTER, BOB, "swaks-implicit-tls10").await;
    assert!(out.contains("TLS started with cipher TLSv1:"), "{out}");
    let out = swaks(lip, true, "tlsv1_1", PRINTER, BOB, "swaks-implicit-tls11").await;
    assert!(out.contains("TLS started with cipher TLSv1.1:"), "{out}");

    // Python's smtplib, likewise.
    let base = SmtplibSend {
        dir: t.dir.path().to_owned(),
        mode: "starttls",
        port: lsp,
        lo: "1.0",
        hi: "1.0",
        cafile: None,
        user: PRINTER,
        to: BOB,
        tag: String::new(),
    };
    for (tag, mode, port, v, want) in [
        ("python-starttls-tls10", "starttls", lsp, "1.0", "TLSv1"),
        ("python-implicit-tls10", "implicit", lip, "1.0", "TLSv1"),
        ("python-starttls-tls11", "starttls", lsp, "1.1", "TLSv1.1"),
    ] {
        let r = py_send(SmtplibSend { tag: tag.into(), mode, port, lo: v, hi: v, ..base.clone() }).await;
        assert_eq!(r["sent"], true, "{tag}: {r}");
        assert_eq!(r["version"], want, "{tag}: {r}");
    }

    let received = received_by_subject(&t, BOB, 6).await;
    for (tag, version) in [
        ("swaks-starttls-tls10", "TLSv1.0"),
        ("swaks-implicit-tls10", "TLSv1.0"),
        ("swaks-implicit-tls11", "TLSv1.1"),
        ("python-starttls-tls10", "TLSv1.0"),
        ("python-implicit-tls10", "TLSv1.0"),
        ("python-starttls-tls11", "TLSv1.1"),
    ] {
        let r = &received[tag];
        assert!(r.contains(&format!("(using {version} with cipher TLS_ECDHE_RSA_WITH_")), "{tag}: {r}");
        assert!(r.contains("(authenticated sender: printer@fabrikam.test)"), "{tag}: {r}");
    }
    assert_eq!(count!(t, served_openssl), 6);
    assert_eq!(count!(t, explained_421), 0);
}

// ---- 4. the tenant opt-in, checked at AUTH -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_opt_in_is_checked_at_auth_with_one_reply_per_reason() {
    // A third legacy endpoint that does not ask for the opt-in.
    let config = format!(
        "{LEGACY_ENDPOINTS}\n[[endpoint]]\nname = \"legacy-open-implicit\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"implicit\"\n\
         tls_versions = [\"1.0\", \"1.2\"]\nlegacy_requires_opt_in = false\n"
    );
    let clock = TestClock::at("2027-06-30");
    let t = TestServer::start_custom(&config, &[ALICE, BOB], Some(clock.clock())).await;
    let dir = &t.server().directory;
    let tls10 = pinned(SslVersion::TLS1);
    let tls11 = pinned(SslVersion::TLS1_1);
    let std_starttls = port_of(&t, "standard-starttls");
    let std_implicit = port_of(&t, "standard-implicit");

    // Logs `user` in over the legacy STARTTLS endpoint with TLS 1.0: the reply to AUTH.
    async fn auth10(t: &TestServer, c: &SslConnector, user: &str) -> (u16, String) {
        let (code, text, mut r) = openssl_login(t, "legacy-starttls", c, user).await;
        if code == 534 {
            // Refused at AUTH: no mail either.
            let (mail, _) = r.cmd(&format!("MAIL FROM:<{user}>")).await;
            assert_eq!(mail, 530, "MAIL after a 534 must need AUTH");
        }
        (code, text)
    }
    fn assert_534(what: &str, (code, text): &(u16, String), words: &[&str]) {
        assert_eq!(*code, 534, "{what}: {text}");
        assert!(text.starts_with("534 5.7.9 Legacy TLS (TLS 1.0) "), "{what}: {text}");
        for w in words {
            assert!(text.contains(w), "{what}: {w:?} missing from {text:?}");
        }
    }

    // contoso has not opted in: 534 at AUTH, over TLS 1.0 and 1.1, STARTTLS and implicit.
    let contoso10 = auth10(&t, &tls10, ALICE).await;
    assert_534("contoso, TLS 1.0", &contoso10, &["is not enabled for your organization; use TLS 1.2 or later on port "]);
    let (code, contoso11, _) = openssl_login(&t, "legacy-implicit", &tls11, ALICE).await;
    assert_eq!(code, 534, "{contoso11}");
    assert!(contoso11.starts_with("534 5.7.9 Legacy TLS (TLS 1.1) is not enabled for your organization"), "{contoso11}");
    // A real client sees the same: smtplib's login fails with 534 and MAIL gets 530.
    let r = py_send(SmtplibSend {
        dir: t.dir.path().to_owned(),
        mode: "starttls",
        port: port_of(&t, "legacy-starttls"),
        lo: "1.0",
        hi: "1.0",
        cafile: None,
        user: ALICE,
        to: ALICE,
        tag: "python-contoso-tls10".into(),
    })
    .await;
    assert_eq!(r["auth"][0], 534, "{r}");
    assert!(r["auth"][1].as_str().unwrap().starts_with("5.7.9 Legacy TLS (TLS 1.0) is not enabled"), "{r}");
    assert_eq!(r["mail"][0], 530, "{r}");
    // On an endpoint with legacy_requires_opt_in = false, contoso is served.
    let (code, text, mut r) = openssl_login(&t, "legacy-open-implicit", &tls10, ALICE).await;
    assert_eq!(code, 235, "{text}");
    deliver(&mut r, ALICE, ALICE, "open-endpoint-tls10").await;

    // fabrikam, before and after opting in: each change applies to the next session.
    assert_534("fabrikam before opting in", &auth10(&t, &tls10, BOB).await, &["is not enabled for your organization"]);
    dir.set_legacy("fabrikam", &LegacyChanges { allowed: Some(true), ..Default::default() }).await.unwrap();
    assert_eq!(auth10(&t, &tls10, BOB).await.0, 235);

    // Expiry: the end date is inclusive; the day after, 534 naming the date.
    let until = |d: &str| LegacyChanges { until: Some(Some(d.parse().unwrap())), ..Default::default() };
    dir.set_legacy("fabrikam", &until("2027-06-30")).await.unwrap();
    assert_eq!(auth10(&t, &tls10, BOB).await.0, 235, "the last day is included");
    dir.set_legacy("fabrikam", &until("2027-06-29")).await.unwrap();
    let expired = auth10(&t, &tls10, BOB).await;
    assert_534("until in the past", &expired, &["for your organization ended on 2027-06-29", "use TLS 1.2 or later"]);
    // The same when the clock moves past the date.
    dir.set_legacy("fabrikam", &until("2027-06-30")).await.unwrap();
    clock.set("2027-07-01");
    assert_534("clock past until", &auth10(&t, &tls10, BOB).await, &["ended on 2027-06-30"]);
    clock.set("2027-06-30");
    dir.set_legacy("fabrikam", &LegacyChanges { until: Some(None), ..Default::default() }).await.unwrap();
    assert_eq!(auth10(&t, &tls10, BOB).await.0, 235);

    // Users in scope.
    let users = |u: &[&str]| LegacyChanges { users: Some(u.iter().map(|s| s.to_string()).collect()), ..Default::default() };
    dir.set_legacy("fabrikam", &users(&[PRINTER])).await.unwrap();
    let out_of_scope = auth10(&t, &tls10, BOB).await;
    assert_534("user out of scope", &out_of_scope, &["is not enabled for bob@fabrikam.test", "add this account to the legacy opt-in"]);
    dir.set_legacy("fabrikam", &users(&[PRINTER, BOB])).await.unwrap();
    assert_eq!(auth10(&t, &tls10, BOB).await.0, 235);
    dir.set_legacy("fabrikam", &users(&[])).await.unwrap();

    // Networks in scope.
    let nets = |n: &[&str]| LegacyChanges { networks: Some(n.iter().map(|s| s.parse().unwrap()).collect()), ..Default::default() };
    dir.set_legacy("fabrikam", &nets(&["10.0.0.0/8"])).await.unwrap();
    let wrong_net = auth10(&t, &tls10, BOB).await;
    assert_534("network out of scope", &wrong_net, &["is not allowed from 127.0.0.1 for your organization", "add this network to the legacy opt-in"]);
    dir.set_legacy("fabrikam", &nets(&["10.0.0.0/8", "127.0.0.0/8"])).await.unwrap();
    assert_eq!(auth10(&t, &tls10, BOB).await.0, 235);

    // The operator's veto wins over the opt-in; lifting it restores the opt-in.
    dir.set_legacy("fabrikam", &LegacyChanges { forbidden: Some(true), ..Default::default() }).await.unwrap();
    let vetoed = auth10(&t, &tls10, BOB).await;
    assert_534("vetoed", &vetoed, &["is forbidden for your organization by the service operator"]);
    dir.set_legacy("fabrikam", &LegacyChanges { forbidden: Some(false), ..Default::default() }).await.unwrap();
    let (code, text, mut r) = openssl_login(&t, "legacy-starttls", &tls10, BOB).await;
    assert_eq!(code, 235, "{text}");
    deliver(&mut r, BOB, BOB, "fabrikam-after-veto-lifted").await;

    // Each reason has its own text.
    let texts = [&contoso10.1, &expired.1, &out_of_scope.1, &wrong_net.1, &vetoed.1];
    for (i, a) in texts.iter().enumerate() {
        for b in &texts[i + 1..] {
            assert_ne!(a, b);
        }
    }
    t.wait_for_mail(ALICE, 1).await;
    let received = received_by_subject(&t, BOB, 1).await;
    assert!(received["fabrikam-after-veto-lifted"].contains("(using TLSv1.0 with cipher TLS_ECDHE_RSA_WITH_"));

    // The way out names the standard endpoint of the same TLS mode.
    assert!(
        contoso10.1.ends_with(&format!("use TLS 1.2 or later on port {std_starttls}\r\n")),
        "the 534 must name the standard STARTTLS endpoint's port {std_starttls}: {:?}",
        contoso10.1
    );
    assert!(
        contoso11.ends_with(&format!("use TLS 1.2 or later on port {std_implicit}\r\n")),
        "the 534 must name the standard implicit endpoint's port {std_implicit}: {contoso11:?}"
    );
}

// ---- 5. TLS 1.2/1.3 on the legacy endpoint -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoint_serves_tls12_and_tls13_without_opt_in() {
    let t = TestServer::start_custom(LEGACY_ENDPOINTS, &[ALICE], None).await;
    let base = SmtplibSend {
        dir: t.dir.path().to_owned(),
        mode: "starttls",
        port: port_of(&t, "legacy-starttls"),
        lo: "1.2",
        hi: "1.2",
        cafile: Some(t.cert_path.clone()),
        user: ALICE,
        to: ALICE,
        tag: String::new(),
    };
    let implicit = port_of(&t, "legacy-implicit");
    for s in [
        SmtplibSend { tag: "legacy-starttls-tls12".into(), ..base.clone() },
        SmtplibSend { tag: "legacy-starttls-tls13".into(), lo: "1.3", hi: "1.3", ..base.clone() },
        SmtplibSend { tag: "legacy-implicit-tls12".into(), mode: "implicit", port: implicit, ..base.clone() },
        SmtplibSend { tag: "legacy-implicit-tls13".into(), mode: "implicit", port: implicit, lo: "1.3", hi: "1.3", ..base.clone() },
    ] {
        let r = py_send(s.clone()).await;
        assert_eq!(r["sent"], true, "{}: contoso has not opted in, but TLS 1.2+ needs no opt-in: {r}", s.tag);
    }
    assert_eq!(count!(t, served_rustls), 4);
    // A TLS 1.2 client with only a CBC suite rustls lacks is served by OpenSSL, still as TLS 1.2.
    let cbc = openssl_connector(SslVersion::TLS1_2, SslVersion::TLS1_2, "AES128-SHA");
    let (code, text, mut r) = openssl_login(&t, "legacy-starttls", &cbc, ALICE).await;
    assert_eq!(code, 235, "{text}");
    deliver(&mut r, ALICE, ALICE, "legacy-starttls-tls12-cbc").await;
    assert_eq!(count!(t, served_openssl), 1);

    let received = received_by_subject(&t, ALICE, 5).await;
    for (tag, using) in [
        ("legacy-starttls-tls12", "(using TLSv1.2 with cipher TLS_ECDHE_RSA_WITH_"),
        ("legacy-starttls-tls13", "(using TLSv1.3 with cipher TLS13_"),
        ("legacy-implicit-tls12", "(using TLSv1.2 with cipher TLS_ECDHE_RSA_WITH_"),
        ("legacy-implicit-tls13", "(using TLSv1.3 with cipher TLS13_"),
        ("legacy-starttls-tls12-cbc", "(using TLSv1.2 with cipher TLS_RSA_WITH_AES_128_CBC_SHA)"),
    ] {
        assert!(received[tag].contains(using), "{tag}: {}", received[tag]);
    }
}

// ---- 6. reject_percent schedules ----------------------------------------------------------

fn schedule_endpoint(name: &str, percent: u8) -> String {
    format!(
        "[[endpoint]]\nname = \"{name}\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"implicit\"\n\
         tls_versions = [\"1.0\", \"1.1\", \"1.2\", \"1.3\"]\n\
         schedule = [{{ from = \"2020-01-01\", reject_percent = {percent} }}]\n"
    )
}

const DEFERRED: &str = "421 4.7.66 TLS 1.0 and 1.1 are being retired on this endpoint and this session was deferred; try again later. Use TLS 1.2 or later.";

/// `n` TLS 1.0 sessions, 8 at a time; returns how many were answered 421 4.7.66 (the
/// others must have been greeted with 220).
async fn explained_out_of(t: &TestServer, endpoint: &str, n: usize) -> usize {
    let addr = t.addr(endpoint);
    let connector = Arc::new(pinned(SslVersion::TLS1));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (connector, next, cert) = (connector.clone(), next.clone(), t.cert_pem.clone());
        workers.spawn(async move {
            let mut explained = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let tls = openssl_handshake(tcp, &connector).await.expect("TLS 1.0 handshake");
                assert_eq!(tls.ssl().version_str(), "TLSv1");
                let mut r = Raw::from_stream(Box::new(tls), &cert);
                let (code, text) = r.reply().await;
                match code {
                    220 => {}
                    421 => {
                        // A draw of a step below 100% is a deferral; 100% is "not supported".
                        assert!(text.starts_with(EXPLAIN) || text.starts_with(DEFERRED), "{text}");
                        assert!(r.closed().await, "closed after the 421");
                        explained += 1;
                    }
                    _ => panic!("neither greeting nor 421: {text:?}"),
                }
            }
            explained
        });
    }
    let mut explained = 0;
    while let Some(r) = workers.join_next().await {
        explained += r.unwrap();
    }
    explained
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_percent_schedule_explains_that_share_of_legacy_sessions() {
    let config = [schedule_endpoint("p0", 0), schedule_endpoint("p50", 50), schedule_endpoint("p100", 100)].concat()
        + "[tls]\nschedule_seed = 7\n";
    let t = TestServer::start_custom(&config, &[], None).await;
    let p50 = explained_out_of(&t, "p50", 200).await;
    assert!((70..=130).contains(&p50), "reject_percent = 50: {p50} of 200 sessions got 421 (35% to 65% expected)");
    assert_eq!(explained_out_of(&t, "p0", 50).await, 0, "reject_percent = 0 explains none");
    assert_eq!(explained_out_of(&t, "p100", 50).await, 50, "reject_percent = 100 explains all");
    assert_eq!(count!(t, explained_421), p50 as u64 + 50);

    // The same seed makes the same draws: another server answers the same share.
    let again = TestServer::start_custom(&config, &[], None).await;
    assert_eq!(explained_out_of(&again, "p50", 200).await, p50, "schedule_seed = 7 must be reproducible");
}

// ---- 7. bad input on the TLS hello ---------------------------------------------------------

/// A TLS 1.2 hello with signature_algorithms, supported_groups and ec_point_formats.
fn tls12_hello() -> Vec<u8> {
    let ext = [
        &[0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x08, 0x04, 0x04, 0x01, 0x04, 0x03][..],
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17],
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00],
    ]
    .concat();
    client_hello(0x0301, 0x0303, &[0xc02f, 0xc030, 0x009c], &ext)
}

/// The first flight of a real (rustls) client: one record holding its ClientHello.
fn rustls_hello(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert_eq!(hello[0], 0x16);
    assert_eq!(u16::from_be_bytes([hello[3], hello[4]]) as usize, hello.len() - 5, "one record");
    hello
}

/// A real rustls ClientHello grown with a padding extension (RFC 7685) to a record body
/// of exactly 16384 bytes, the largest a record may carry.
fn max_size_hello(cert_pem: &str) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(common::rustls_client_config(cert_pem), "localhost".try_into().unwrap()).unwrap();
    let rec = rustls_hello(&mut conn);
    let mut hs = rec[5..].to_vec();
    let grow = 16384 - hs.len();
    let pad = grow - 4;
    // Locate the extensions length: version, random, session id, suites, compression.
    let mut i = 4 + 2 + 32;
    i += 1 + hs[i] as usize;
    i += 2 + u16::from_be_bytes([hs[i], hs[i + 1]]) as usize;
    i += 1 + hs[i] as usize;
    let ext_len = u16::from_be_bytes([hs[i], hs[i + 1]]) as usize + grow;
    hs[i..i + 2].copy_from_slice(&(ext_len as u16).to_be_bytes());
    hs.extend_from_slice(&[0x00, 0x15]);
    hs.extend_from_slice(&(pad as u16).to_be_bytes());
    hs.extend(std::iter::repeat_n(0u8, pad));
    let body_len = hs.len() - 4;
    hs[1..4].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    assert_eq!(hs.len(), 16384);
    let mut out = rec[..3].to_vec();
    out.extend_from_slice(&16384u16.to_be_bytes());
    out.extend_from_slice(&hs);
    out
}

/// How the server ended a connection that sent it bad bytes.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A clean close (FIN) after these bytes (none, or an alert record).
    Closed(Vec<u8>),
    /// A reset after these bytes: the server closed the socket with bytes of ours still
    /// unread, so the client's read fails with ECONNRESET instead of returning 0.
    Reset(Vec<u8>),
}

/// Reads until the server closes; panics if it has not within `limit`.
async fn until_closed(tcp: &mut TcpStream, limit: Duration, what: &str) -> End {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut b = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut b)).await {
            Ok(Ok(0)) => return End::Closed(got),
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return End::Reset(got),
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: the server did not close within {limit:?} (read so far: {got:?})"),
        }
    }
}

/// A fatal protocol_version alert, as the server sends it.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// Sends `bytes` as the ClientHello on a fresh implicit-TLS connection; the server must
/// close (with nothing or an alert) within 5 s.
async fn bad_hello(t: &TestServer, bytes: &[u8], what: &str) -> End {
    let mut tcp = TcpStream::connect(t.addr("standard-implicit")).await.unwrap();
    // The server may close before taking all of it.
    let _ = tcp.write_all(bytes).await;
    let end = until_closed(&mut tcp, Duration::from_secs(5), what).await;
    match &end {
        End::Closed(b) | End::Reset(b) => {
            assert!(b.is_empty() || b[0] == 0x15, "{what}: only an alert may come back: {b:?}");
        }
    }
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_hellos_are_closed_counted_and_survived() {
    let t = TestServer::start_custom(&format!("{LEGACY_ENDPOINTS}\n[limits]\ntls_hello_timeout = 1\n"), &[ALICE], None).await;
    // How each connection ended; a clean close is checked last, after everything else.
    let mut ends: Vec<(&str, End)> = Vec::new();

    // Not TLS at all.
    ends.push(("HTTP", bad_hello(&t, b"GET / HTTP/1.0\r\n\r\n", "HTTP instead of a ClientHello").await));
    wait_count(&t, "hello_not_tls", |c| TlsCounters::get(&c.hello_not_tls), 1).await;
    // The same after STARTTLS.
    let mut r = Raw::plain(t.addr("standard-starttls"), &t.cert_pem).await;
    r.expect("EHLO client.test", 250).await;
    r.expect("STARTTLS", 220).await;
    let mut tcp = r.into_plain();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    ends.push(("HTTP after STARTTLS", until_closed(&mut tcp, Duration::from_secs(5), "HTTP after STARTTLS").await));
    wait_count(&t, "hello_not_tls", |c| TlsCounters::get(&c.hello_not_tls), 2).await;

    // An SSLv2 CLIENT-HELLO: 7 cipher specs, no session id, a 16-byte challenge.
    let mut sslv2 = vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10];
    sslv2.extend_from_slice(&[0x01, 0x00, 0x80, 0x07, 0x00, 0xc0, 0x03, 0x00, 0x80, 0x00, 0x00, 0x35, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x0a, 0x00, 0x00, 0xff]);
    sslv2.extend_from_slice(&[0x5a; 16]);
    assert_eq!(sslv2.len(), 2 + 0x2e);
    ends.push(("SSLv2", bad_hello(&t, &sslv2, "SSLv2 hello").await));
    wait_count(&t, "hello_sslv2", |c| TlsCounters::get(&c.hello_sslv2), 1).await;

    // An SSLv3-only hello: a protocol_version alert, then the close.
    let sslv3 = client_hello(0x0300, 0x0300, &[0x002f, 0x0035, 0x000a], &[]);
    let end = bad_hello(&t, &sslv3, "SSLv3 hello").await;
    assert_eq!(end, End::Closed(PROTOCOL_VERSION_ALERT.to_vec()), "SSLv3: a protocol_version alert and a clean close");
    wait_count(&t, "refused_at_handshake", |c| TlsCounters::get(&c.refused_at_handshake), 1).await;

    // A record declaring 0xFFFF bytes, and one a byte over the limit.
    let end = bad_hello(&t, &[0x16, 0x03, 0x01, 0xff, 0xff], "record length 0xFFFF").await;
    assert_eq!(end, End::Closed(Vec::new()));
    let mut over = vec![0x16, 0x03, 0x01, 0x40, 0x01];
    over.extend(std::iter::repeat_n(0u8, 16385));
    ends.push(("record length 16385", bad_hello(&t, &over, "record length 16385").await));
    wait_count(&t, "hello_oversized", |c| TlsCounters::get(&c.hello_oversized), 2).await;

    // A hello trickled one byte a second: closed once tls_hello_timeout (1 s) has passed.
    let hello = tls12_hello();
    let mut tcp = TcpStream::connect(t.addr("standard-implicit")).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in &hello {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        // The trickle's pace: wait up to a second for the server to react.
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!("trickled hello: unexpected {:?}", &b[..n]),
            Err(_) if started.elapsed() > Duration::from_secs(5) => break,
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "trickled hello: still open after {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3), "closed after {elapsed:?}, expected ~1 s");
    wait_count(&t, "hello_timeout", |c| TlsCounters::get(&c.hello_timeout), 1).await;

    // A hello split across two records: not parseable from the first, still served (rustls
    // reassembles it), and the session works.
    let (addr, cert) = (t.addr("standard-implicit"), t.cert_pem.clone());
    let greeting = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Write};
        let mut conn = rustls::ClientConnection::new(common::rustls_client_config(&cert), "localhost".try_into().unwrap()).unwrap();
        let hello = rustls_hello(&mut conn);
        let body = &hello[5..];
        let cut = body.len() / 2;
        let mut split = Vec::new();
        for part in [&body[..cut], &body[cut..]] {
            split.extend_from_slice(&hello[..3]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&split).unwrap();
        let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut line = String::new();
        tls.read_line(&mut line).expect("greeting after a split hello");
        line
    })
    .await
    .unwrap();
    assert!(greeting.starts_with("220 mx.test "), "split hello: {greeting:?}");
    wait_count(&t, "hello_unparsed", |c| TlsCounters::get(&c.hello_unparsed), 1).await;

    // A hello record of the maximum size (16384 bytes of body) is a hello like any other:
    // parsed, and answered with a ServerHello.
    let mut tcp = TcpStream::connect(t.addr("standard-implicit")).await.unwrap();
    tcp.write_all(&max_size_hello(&t.cert_pem)).await.unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head)).await.expect("ServerHello within 5 s").unwrap();
    assert_eq!((head[0], head[5]), (0x16, 0x02), "max-size hello: a ServerHello record expected: {head:?}");
    drop(tcp);
    wait_count(&t, "handshake_failed (max-size hello, client gone)", |c| TlsCounters::get(&c.handshake_failed), 1).await;

    // Nothing else was counted, and the server still serves: a normal client delivers.
    let c = t.server().tls_counters();
    let counts = [
        ("hello_not_tls", &c.hello_not_tls, 2),
        ("hello_sslv2", &c.hello_sslv2, 1),
        ("hello_oversized", &c.hello_oversized, 2),
        ("hello_timeout", &c.hello_timeout, 1),
        ("hello_unparsed", &c.hello_unparsed, 1),
        ("hello_closed", &c.hello_closed, 0),
        ("refused_at_handshake", &c.refused_at_handshake, 1),
        ("served_rustls", &c.served_rustls, 1),
        ("served_openssl", &c.served_openssl, 0),
    ];
    for (name, c, want) in counts {
        assert_eq!(TlsCounters::get(c), want, "{name}");
    }
    let mut r = Raw::logged_in(t.starttls_addr(), &t.cert_pem, ALICE).await;
    deliver(&mut r, ALICE, ALICE, "after-bad-hellos").await;
    let (code, text, mut r) = openssl_login(&t, "legacy-implicit", &pinned(SslVersion::TLS1_2), ALICE).await;
    assert_eq!(code, 235, "{text}");
    deliver(&mut r, ALICE, ALICE, "after-bad-hellos-openssl").await;
    received_by_subject(&t, ALICE, 2).await;

    // A clean close: the client's read returns 0 (after an alert at most), not a reset.
    let resets: Vec<&str> = ends.iter().filter(|(_, e)| matches!(e, End::Reset(_))).map(|(w, _)| *w).collect();
    assert!(resets.is_empty(), "the server reset these connections instead of closing them cleanly: {resets:?}");
}

// ---- 8. a client offering 1.0 to 1.3 gets TLS 1.3 from rustls -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_offering_tls10_to_tls13_is_served_tls13_by_rustls() {
    let t = TestServer::start_custom(LEGACY_ENDPOINTS, &[ALICE], None).await;
    let base = SmtplibSend {
        dir: t.dir.path().to_owned(),
        mode: "starttls",
        port: 0,
        lo: "1.0",
        hi: "-",
        cafile: None,
        user: ALICE,
        to: ALICE,
        tag: String::new(),
    };
    let endpoints = ["standard-starttls", "standard-implicit", "legacy-starttls", "legacy-implicit"];
    for endpoint in endpoints {
        let s = SmtplibSend { tag: format!("wide-{endpoint}"), mode: mode_of(endpoint), port: port_of(&t, endpoint), ..base.clone() };
        let r = py_send(s).await;
        assert_eq!(r["sent"], true, "{endpoint}: {r}");
        assert_eq!(r["version"], "TLSv1.3", "{endpoint}: {r}");
    }
    assert_eq!(count!(t, served_rustls), 4);
    assert_eq!(count!(t, served_openssl), 0);
    let received = received_by_subject(&t, ALICE, 4).await;
    for endpoint in endpoints {
        let r = &received[&format!("wide-{endpoint}")];
        assert!(r.contains("(using TLSv1.3 with cipher TLS13_"), "{endpoint}: {r}");
    }
}

// ---- 9. sslyze ----------------------------------------------------------------------------

/// Accepted cipher suites per version, from sslyze's JSON for one server.
fn sslyze_accepted(json: &Value, what: &str) -> HashMap<&'static str, Vec<String>> {
    let server = &json["server_scan_results"][0];
    assert_eq!(server["scan_status"], "COMPLETED", "{what}: {server}");
    let mut out = HashMap::new();
    for (version, key) in [
        ("1.0", "tls_1_0_cipher_suites"),
        ("1.1", "tls_1_1_cipher_suites"),
        ("1.2", "tls_1_2_cipher_suites"),
        ("1.3", "tls_1_3_cipher_suites"),
    ] {
        let scan = &server["scan_result"][key];
        assert_eq!(scan["status"], "COMPLETED", "{what} {key}: {scan}");
        let accepted: Vec<String> = scan["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("{what} {key}: {scan}"))
            .iter()
            .map(|c| c["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(scan["result"]["is_tls_version_supported"], !accepted.is_empty(), "{what} {key}");
        out.insert(version, accepted);
    }
    out
}

async fn sslyze(dir: &Path, port: u16, name: &str) -> Value {
    let file = dir.join(format!("sslyze-{name}.json"));
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "sslyze", "--starttls", "smtp", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3"])
        .args(["--mozilla_config", "disable", "--json_out"])
        .arg(&file)
        .arg(format!("127.0.0.1:{port}"));
    let what = format!("sslyze against {name}");
    let out = run(cmd, &what).await;
    assert!(out.status.success(), "{what} (is sslyze installed? pip install sslyze)\n{}", show(&out));
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_sees_legacy_versions_only_on_the_legacy_endpoint() {
    let config = LEGACY_ENDPOINTS.replacen(
        "tls_mode = \"starttls\"\ntls_versions = [\"1.2\", \"1.3\"]",
        "tls_mode = \"starttls\"\ntls_versions = [\"1.2\", \"1.3\"]\nlegacy_tls = \"refuse\"",
        1,
    );
    assert_ne!(config, LEGACY_ENDPOINTS);
    // sslyze opens hundreds of connections a minute from 127.0.0.1, as scanners do.
    let config = format!("{config}\n[limits]\nmax_connections_per_ip_per_minute = 0\n");
    let t = TestServer::start_custom(&config, &[], None).await;
    let standard = sslyze(t.dir.path(), port_of(&t, "standard-starttls"), "standard-refuse").await;
    let standard = sslyze_accepted(&standard, "standard endpoint (refuse)");
    assert!(count!(t, refused_at_handshake) > 0, "sslyze's TLS 1.0/1.1 attempts were refused at the handshake");
    let legacy = sslyze(t.dir.path(), port_of(&t, "legacy-starttls"), "legacy").await;
    let legacy = sslyze_accepted(&legacy, "legacy endpoint");

    for v in ["1.0", "1.1"] {
        assert!(standard[v].is_empty(), "standard endpoint in refuse mode accepted TLS {v}: {:?}", standard[v]);
        assert!(
            legacy[v].iter().any(|c| c == "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
            "legacy endpoint must accept TLS {v}: {:?}",
            legacy[v]
        );
    }
    for v in ["1.2", "1.3"] {
        assert!(!standard[v].is_empty(), "standard endpoint must accept TLS {v}");
        assert!(!legacy[v].is_empty(), "legacy endpoint must accept TLS {v}");
    }
}
