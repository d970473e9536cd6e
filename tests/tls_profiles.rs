//! Acceptance tests for the TLS profiles, against the real demo (`mailgate demo`, its own
//! configuration and certificate) driven by clients we did not write: every suite that
//! OpenSSL knows is tried with `openssl s_client` per endpoint and per version, and the
//! set that completes must equal the profile's documented set exactly; the TLS 1.0/1.1
//! handshake of a standard endpoint must carry nothing but the `421 4.7.66`; a hello
//! without a shared suite gets a handshake_failure alert and is recorded with its offered
//! suites; the what-if names a client that used static RSA; testssl.sh's verdicts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailgate");

/// The two tests that run hundreds of handshakes take turns: on a 2-core machine, side by
/// side they only slow each other down (and every other test of this file).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- what the docs promise (docs/legacy-tls.md, "TLS profiles"), for an RSA certificate ----

const TLS13: &[&str] = &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];
const INTERMEDIATE_12: &[&str] = &["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"];
const LEGACY_10: &[&str] = &["ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES128-SHA", "AES256-SHA"];
const LEGACY_12: &[&str] = &[
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
];

// ---- a mailgate process ---------------------------------------------------------------------

struct Mailgate {
    child: Child,
    listeners: BTreeMap<String, SocketAddr>,
}

impl Mailgate {
    /// Runs `mailgate ARGS` and waits for its four `listening NAME ADDR` lines (60 s: the
    /// demo hashes its users' passwords with argon2 first, slow in a debug build on a busy
    /// machine).
    fn start(args: &[&str], stderr: &Path) -> Mailgate {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(stderr).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("MAILGATE_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn mailgate");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut listeners = BTreeMap::new();
        while listeners.len() < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("mailgate {args:?}: no four listening lines in 60 s; stderr:\n{}", std::fs::read_to_string(stderr).unwrap_or_default())
            });
            if let ["listening", name, addr] = line.split_whitespace().collect::<Vec<_>>()[..] {
                listeners.insert(name.to_string(), addr.parse().unwrap());
            }
        }
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Mailgate { child, listeners }
    }

    fn port(&self, endpoint: &str) -> u16 {
        self.listeners[endpoint].port()
    }
}

impl Drop for Mailgate {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// The demo in a temporary directory, on free ports.
fn demo(dir: &Path) -> Mailgate {
    let data = dir.join("demo");
    Mailgate::start(&["demo", "--data", data.to_str().unwrap(), "--port-base", "0"], &dir.join("demo-stderr.log"))
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--config").arg(config).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn show(o: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn is_starttls(endpoint: &str) -> bool {
    endpoint.ends_with("starttls")
}

// ---- openssl s_client over every suite --------------------------------------------------------

/// Every TLS 1.0-1.2 suite the machine's OpenSSL knows, and its TLS 1.3 suites.
fn openssl_suites() -> (Vec<String>, Vec<String>) {
    let list = |args: &[&str]| -> Vec<String> {
        let out = Command::new("openssl").arg("ciphers").args(args).output().expect("openssl ciphers");
        assert!(out.status.success(), "openssl ciphers {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().split(':').map(String::from).collect()
    };
    let all = list(&["ALL:COMPLEMENTOFALL:@SECLEVEL=0"]);
    let tls13: Vec<String> = all.iter().filter(|c| c.starts_with("TLS_")).cloned().collect();
    let tls12: Vec<String> = all.into_iter().filter(|c| !c.starts_with("TLS_")).collect();
    assert!(tls12.len() > 40, "OpenSSL lists only {} suites", tls12.len());
    // The CCM suites exist in OpenSSL but are not in its default TLS 1.3 list.
    let mut tls13 = tls13;
    for extra in ["TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"] {
        if !tls13.iter().any(|c| c == extra) {
            tls13.push(extra.to_string());
        }
    }
    (tls12, tls13)
}

/// One s_client handshake with one suite at one version: the suite that completed, if any.
fn s_client(port: u16, starttls: bool, version: &str, suite: &str) -> Option<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "openssl", "s_client", "-connect", &format!("127.0.0.1:{port}"), &format!("-{version}")]);
    if version == "tls1_3" {
        cmd.args(["-ciphersuites", suite]);
    } else {
        cmd.args(["-cipher", &format!("{suite}:@SECLEVEL=0")]);
    }
    if starttls {
        cmd.args(["-starttls", "smtp"]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let got = text.lines().find_map(|l| l.split_once("Cipher is ").map(|(_, c)| c.trim().to_string()))?;
    (got != "(NONE)").then_some(got)
}

/// Tries every suite at `version`, a few at a time; returns those that completed.
fn completing(port: u16, starttls: bool, version: &str, suites: &[String]) -> BTreeSet<String> {
    let chunks: Vec<Vec<String>> = suites.chunks(suites.len().div_ceil(6).max(1)).map(|c| c.to_vec()).collect();
    let version = version.to_string();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let version = version.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for suite in chunk {
                    if let Some(got) = s_client(port, starttls, &version, &suite) {
                        assert_eq!(got, suite, "asked for {suite}, got {got}");
                        ok.push(got);
                    }
                }
                ok
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_openssl_suite_per_demo_endpoint_and_version_completes_exactly_as_the_profile_says() {
    let _turn = heavy();
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    let (tls12, tls13) = openssl_suites();
    let cases: [(&str, &str, &[&str]); 16] = [
        ("standard-starttls", "tls1_3", TLS13),
        ("standard-starttls", "tls1_2", INTERMEDIATE_12),
        // Completed only to send the 421 (checked below): no mail passes.
        ("standard-starttls", "tls1_1", LEGACY_10),
        ("standard-starttls", "tls1", LEGACY_10),
        ("standard-implicit", "tls1_3", TLS13),
        ("standard-implicit", "tls1_2", INTERMEDIATE_12),
        ("standard-implicit", "tls1_1", LEGACY_10),
        ("standard-implicit", "tls1", LEGACY_10),
        ("legacy-starttls", "tls1_3", TLS13),
        ("legacy-starttls", "tls1_2", LEGACY_12),
        ("legacy-starttls", "tls1_1", LEGACY_10),
        ("legacy-starttls", "tls1", LEGACY_10),
        ("legacy-implicit", "tls1_3", TLS13),
        ("legacy-implicit", "tls1_2", LEGACY_12),
        ("legacy-implicit", "tls1_1", LEGACY_10),
        ("legacy-implicit", "tls1", LEGACY_10),
    ];
    let mut wrong = Vec::new();
    for (endpoint, version, want) in cases {
        let suites = if version == "tls1_3" { &tls13 } else { &tls12 };
        let got = completing(server.port(endpoint), is_starttls(endpoint), version, suites);
        if got != set(want) {
            wrong.push(format!("{endpoint} {version}: completed {got:?}, the profile says {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "suites that complete differ from the profiles:\n{}", wrong.join("\n"));
}

// ---- the TLS 1.0/1.1 handshake of a standard endpoint carries only the 421 -----------------

/// An OpenSSL client (the `openssl` crate) pinned to one version and suite list.
fn connector(v: openssl::ssl::SslVersion, ciphers: &str) -> openssl::ssl::SslConnector {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(v)).unwrap();
    b.set_max_proto_version(Some(v)).unwrap();
    b.set_cipher_list(&format!("{ciphers}:@SECLEVEL=0")).unwrap();
    b.set_security_level(0);
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    b.build()
}

fn read_line(s: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Plain TCP to the endpoint, with STARTTLS done where it wants it.
fn tcp_for_tls(addr: SocketAddr, starttls: bool) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if starttls {
        assert!(read_line(&mut tcp).starts_with("220 "));
        tcp.write_all(b"EHLO client.test\r\n").unwrap();
        while !read_line(&mut tcp).starts_with("250 ") {}
        tcp.write_all(b"STARTTLS\r\n").unwrap();
        assert!(read_line(&mut tcp).starts_with("220 "));
    }
    tcp
}

#[test]
fn legacy_handshakes_on_standard_endpoints_carry_only_the_421_then_the_close() {
    use openssl::ssl::SslVersion;
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    for endpoint in ["standard-starttls", "standard-implicit"] {
        for (v, suite) in [(SslVersion::TLS1, "AES128-SHA"), (SslVersion::TLS1_1, "ECDHE-RSA-AES256-SHA"), (SslVersion::TLS1, "ECDHE-RSA-AES128-SHA")] {
            let tcp = tcp_for_tls(server.listeners[endpoint], is_starttls(endpoint));
            let ssl = connector(v, suite).configure().unwrap().verify_hostname(false).into_ssl("localhost").unwrap();
            let mut tls = ssl.connect(tcp).unwrap_or_else(|e| panic!("{endpoint} {v:?} {suite}: {e}"));
            // Everything the server says in this session, before the client says anything
            // (writing after the server's close could reset the connection): one 421.
            let mut all = Vec::new();
            let end = tls.read_to_end(&mut all);
            let text = String::from_utf8_lossy(&all);
            assert!(
                text.starts_with("421 4.7.66 TLS 1.0 and 1.1 are not supported on this endpoint.") && text.matches("\r\n").count() == 1,
                "{endpoint} {v:?} {suite}: the server said {text:?}"
            );
            assert!(end.is_ok(), "{endpoint} {v:?}: the 421 ends with a clean TLS close: {end:?}");
        }
    }
}

// ---- no shared suite: a handshake_failure alert, recorded with the offered suites ----------

/// Polls `mailgate report legacy --format json` until a row matches (20 s): the usage
/// writer stores events within a second.
fn wait_for_report_row(config: &Path, args: &[&str], what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(what, || {
        let out = cli(config, args);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
        rows.as_array().unwrap().iter().find(|r| pred(r)).cloned()
    })
}

/// Polls `f` until it yields (20 s, then fails naming `what`): for what the server does
/// after the client is done (the usage writer, the queue runner).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hello_without_a_shared_suite_gets_handshake_failure_and_is_recorded_with_its_suites() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    let config = dir.path().join("demo/mailgate.toml");
    for endpoint in ["standard-starttls", "standard-implicit"] {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", server.port(endpoint)), "-tls1_2"])
            .args(["-cipher", "AES128-SHA:ECDHE-RSA-AES256-SHA:@SECLEVEL=0"])
            .args(if is_starttls(endpoint) { &["-starttls", "smtp"][..] } else { &[][..] })
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("alert handshake failure"), "{endpoint}: expected a handshake_failure alert:\n{text}");
        assert!(text.contains("Cipher is (NONE)"), "{endpoint}: no suite may complete:\n{text}");
    }
    let row = wait_for_report_row(&config, &["report", "legacy", "--format", "json"], "a no_shared_cipher row", |r| {
        r["outcome"] == "no_shared_cipher" && r["endpoint"] == "standard-implicit"
    });
    let offered = row["offered_ciphers"].as_str().unwrap();
    assert!(
        offered.contains("TLS_RSA_WITH_AES_128_CBC_SHA") && offered.contains("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
        "offered suites recorded: {row:#}"
    );
    assert_eq!(row["offered_max"], "TLSv1.2", "{row:#}");
    assert_eq!(row["version"], "", "no handshake completed: {row:#}");

    // A TLS 1.2 hello without signature_algorithms: SHA-1 is its only signature scheme
    // (RFC 5246 §7.4.1.4.1), which no endpoint signs with at TLS 1.2, whichever stack.
    for (endpoint, suite) in [("standard-implicit", 0xC02Fu16), ("legacy-implicit", 0xC013), ("legacy-implicit", 0xC02F)] {
        let mut tcp = TcpStream::connect(server.listeners[endpoint]).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(&hello_without_sigalgs(suite)).unwrap();
        let mut got = [0u8; 7];
        tcp.read_exact(&mut got).unwrap();
        assert_eq!(got, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], "{endpoint} {suite:04x}: a handshake_failure alert");
    }
}

/// A TLS 1.2 ClientHello with supported_groups and ec_point_formats, no signature_algorithms.
fn hello_without_sigalgs(suite: u16) -> Vec<u8> {
    let ext: &[u8] = &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x0b, 0x00, 0x02, 0x01, 0x00];
    common::client_hello(0x0301, 0x0303, &[suite], ext)
}

// ---- what the suites show: Received header, reports, what-if -------------------------------

fn demo_password(dir: &Path, user: &str) -> String {
    let creds = std::fs::read_to_string(dir.join("demo/demo-credentials.txt")).unwrap();
    creds.lines().find_map(|l| l.strip_prefix(&format!("{user} "))).unwrap_or_else(|| panic!("no {user} in {creds}")).trim().to_string()
}

/// Sends one message with swaks at TLS 1.2 with one suite.
fn swaks_tls12(port: u16, user: &str, password: &str, suite: &str, tag: &str) {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string(), "--tls", "--tls-protocol", "tlsv1_2"])
        .args(["--tls-cipher", &format!("{suite}:@SECLEVEL=0")])
        .args(["--auth", "PLAIN", "--auth-user", user, "--auth-password", password])
        .args(["--from", user, "--to", "bob@fabrikam.test", "--ehlo", &format!("{tag}.client.test")])
        .args(["--header", &format!("Subject: {tag}")])
        .output()
        .expect("swaks (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("250 2.0.0 OK queued as"), "swaks {suite}: {}", show(&out));
}

/// Waits for a message with this Subject in a Maildir and returns it.
fn wait_for_mail(maildir: &Path, tag: &str) -> String {
    eventually(&format!("message {tag} in {}", maildir.display()), || {
        std::fs::read_dir(maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .find(|m| m.contains(&format!("Subject: {tag}")))
    })
}

#[test]
fn the_what_if_names_the_client_that_needs_static_rsa_on_the_legacy_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    let config = dir.path().join("demo/mailgate.toml");
    let port = server.port("legacy-starttls");
    // The printer knows only static RSA; bob's client ECDHE as well as static RSA.
    swaks_tls12(port, "printer@fabrikam.test", &demo_password(dir.path(), "printer@fabrikam.test"), "AES128-SHA", "rsa-only");
    swaks_tls12(port, "bob@fabrikam.test", &demo_password(dir.path(), "bob@fabrikam.test"), "AES128-SHA:ECDHE-RSA-AES128-SHA", "with-ecdhe");
    let maildir = dir.path().join("demo/maildir/fabrikam.test/bob");
    let m = wait_for_mail(&maildir, "rsa-only");
    assert!(m.contains("using TLSv1.2 with cipher TLS_RSA_WITH_AES_128_CBC_SHA"), "Received header:\n{m}");
    let m = wait_for_mail(&maildir, "with-ecdhe");
    assert!(m.contains("using TLSv1.2 with cipher TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), "server order: ECDHE first\n{m}");

    let args = ["report", "what-if", "--drop", "static-rsa", "--endpoint", "legacy-starttls", "--format", "json"];
    let row = wait_for_report_row(&config, &args, "the printer in the what-if", |r| r["sender"] == "printer@fabrikam.test");
    assert_eq!(row["cipher"], "TLS_RSA_WITH_AES_128_CBC_SHA", "{row:#}");
    assert_eq!(row["affected_pct"], 100, "{row:#}");
    assert!(row["reply"].as_str().unwrap().contains("handshake_failure"), "{row:#}");
    let out = cli(&config, &args);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("bob@fabrikam.test"), "bob's client has ECDHE: {}", show(&out));
    // Nobody breaks if only the standard endpoint dropped it, and CBC off names both.
    let out = cli(&config, &["report", "what-if", "--drop", "static-rsa", "--endpoint", "standard-starttls", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]", "{}", show(&out));
    let cbc = ["report", "what-if", "--drop", "cbc", "--format", "json"];
    wait_for_report_row(&config, &cbc, "bob under --drop cbc", |r| r["sender"] == "bob@fabrikam.test");
    // A wrong endpoint or kind is a clear error.
    let out = cli(&config, &["report", "what-if", "--drop", "static-rsa", "--endpoint", "nope"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such endpoint"), "{}", show(&out));
    let out = cli(&config, &["report", "what-if", "--drop", "rc4"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("static-rsa or cbc"), "{}", show(&out));
}

// ---- check-config ---------------------------------------------------------------------------

fn with_endpoint_lines(config: &Path, name: &str, lines: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let marker = format!("name = \"{name}\"\n");
    assert!(text.contains(&marker), "{name} in {text}");
    let out = config.with_file_name(format!("edited-{}.toml", text.len() + lines.len()));
    std::fs::write(&out, text.replacen(&marker, &format!("{marker}{lines}\n"), 1)).unwrap();
    out
}

#[test]
fn check_config_prints_the_suites_and_refuses_weak_or_unknown_names_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    drop(demo(dir.path()));
    let config = dir.path().join("demo/mailgate.toml");
    let out = cli(&config, &["check-config"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("endpoint standard-implicit (implicit, 127.0.0.1:"), "{text}");
    assert!(text.contains(&format!("  TLS 1.2: {}\n", INTERMEDIATE_12.join(" "))), "{text}");
    assert!(text.contains(&format!("  TLS 1.2: {}\n", LEGACY_12.join(" "))), "{text}");
    assert!(text.contains(&format!("  TLS 1.0: only to answer 421 4.7.66, no mail: {}\n", LEGACY_10.join(" "))), "{text}");

    let cases = [
        ("standard-starttls", "tls_ciphers = [\"ECDHE-RSA-AES128-GCM-SHA256\", \"DES-CBC3-SHA\"]", "endpoint[0].tls_ciphers[1]", "weak"),
        ("standard-starttls", "tls_ciphers = \"ECDHE-RSA-AES128-GCM-SHA256:RC4-SHA\"", "endpoint[0].tls_ciphers[1]", "weak"),
        ("standard-implicit", "tls_ciphers = [\"NULL-SHA256\"]", "endpoint[1].tls_ciphers[0]", "weak"),
        ("standard-implicit", "tls_ciphers = [\"ADH-AES128-SHA\"]", "endpoint[1].tls_ciphers[0]", "weak"),
        ("standard-implicit", "tls_ciphers = [\"EXP-RC4-MD5\"]", "endpoint[1].tls_ciphers[0]", "weak"),
        ("standard-implicit", "tls_ciphers = [\"NOT-A-SUITE\"]", "endpoint[1].tls_ciphers[0]", "not a cipher suite"),
        ("standard-implicit", "tls_profile = \"paranoid\"", "tls_profile", "paranoid"),
        ("legacy-starttls", "tls_profile = \"intermediate\"", "endpoint[2].tls_profile", "TLS 1.0"),
        ("standard-starttls", "tls_profile = \"modern\"", "endpoint[0].tls_profile", "TLS 1.2"),
        ("standard-starttls", "tls13_ciphersuites = [\"TLS_AES_128_CCM_8_SHA256\"]", "endpoint[0].tls13_ciphersuites[0]", "not served"),
    ];
    for (endpoint, line, key, words) in cases {
        let bad = with_endpoint_lines(&config, endpoint, line);
        for cmd in [&["check-config"][..], &["serve"][..]] {
            let out = cli(&bad, cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd:?} with {line}: {}", show(&out));
            assert!(err.contains(key) && err.contains(words), "{cmd:?} with {line}: should name {key} and say {words:?}: {err}");
        }
    }
    // A good expert list is taken, and printed in its order.
    let good = with_endpoint_lines(&config, "standard-implicit", "tls_ciphers = [\"ECDHE-RSA-AES256-GCM-SHA384\", \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]");
    let out = cli(&good, &["check-config"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("  TLS 1.2: ECDHE-RSA-AES256-GCM-SHA384 ECDHE-RSA-AES128-GCM-SHA256\n"), "{}", show(&out));
}

// ---- RSA and ECDSA certificates side by side ------------------------------------------------

#[test]
fn with_an_ecdsa_certificate_beside_the_rsa_one_both_kinds_of_suites_are_served() {
    let dir = tempfile::tempdir().unwrap();
    drop(demo(dir.path()));
    let tls = dir.path().join("demo/tls");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(tls.join("ecdsa-key.pem"))
        .arg("-out")
        .arg(tls.join("ecdsa-cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let config = dir.path().join("demo/mailgate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let pair = "key = \"tls/key.pem\"\n";
    assert!(text.contains(pair), "{text}");
    let both = text.replacen(pair, &format!("{pair}\n[[tls.certificate]]\ncert = \"tls/ecdsa-cert.pem\"\nkey = \"tls/ecdsa-key.pem\"\n"), 1);
    std::fs::write(&config, both).unwrap();
    let out = cli(&config, &["check-config"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("  TLS 1.2: ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-RSA-AES128-GCM-SHA256 "), "{}", show(&out));

    let server = Mailgate::start(&["--config", config.to_str().unwrap(), "serve"], &dir.path().join("serve-stderr.log"));
    let (std, legacy) = (server.port("standard-implicit"), server.port("legacy-implicit"));
    let cases = [
        (std, "tls1_2", "ECDHE-ECDSA-AES128-GCM-SHA256", true),
        (std, "tls1_2", "ECDHE-ECDSA-CHACHA20-POLY1305", true),
        (std, "tls1_2", "ECDHE-RSA-AES256-GCM-SHA384", true),
        (std, "tls1_2", "ECDHE-ECDSA-AES128-SHA", false),
        (std, "tls1_2", "ECDHE-ECDSA-AES128-SHA256", false),
        (legacy, "tls1", "ECDHE-ECDSA-AES128-SHA", true),
        (legacy, "tls1", "ECDHE-RSA-AES128-SHA", true),
        (legacy, "tls1_2", "ECDHE-ECDSA-AES256-SHA", true),
        (legacy, "tls1_2", "ECDHE-ECDSA-AES256-SHA384", false),
    ];
    for (port, version, suite, completes) in cases {
        let got = s_client(port, false, version, suite);
        assert_eq!(got.is_some(), completes, "port {port} {version} {suite}: {got:?}");
    }
}

// ---- testssl.sh's verdicts on the standard endpoints ------------------------------------------

/// Runs testssl.sh (Debian's `testssl`, installed by .ci/run) against one endpoint: protocols,
/// cipher categories, every suite per protocol and the vulnerability checks; its JSON.
fn testssl(dir: &Path, port: u16, starttls: bool, name: &str) -> Vec<serde_json::Value> {
    let json = dir.join(format!("testssl-{name}.json"));
    let mut cmd = Command::new("testssl");
    // NXCONNECT: testssl probes the local OpenSSL with `s_client -connect invalid.`, which
    // asks the system resolver; this points those probes at 127.0.0.1 (no traffic leaves
    // the machine). `-n none`: no reverse lookup of the target. `--warnings batch`: never
    // wait on stdin. The exit code is 7 for any non-HTTP service, so only the JSON counts.
    cmd.env("NXCONNECT", "127.0.0.1:0");
    cmd.args(["--quiet", "--color", "0", "--warnings", "batch", "-n", "none", "-p", "-s", "-E", "-U", "--jsonfile"]).arg(&json);
    if starttls {
        cmd.args(["-t", "smtp"]);
    }
    let out = cmd.arg(format!("127.0.0.1:{port}")).stdin(Stdio::null()).output().expect("testssl (Debian package testssl.sh; .ci/run installs it)");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("testssl {name} wrote no JSON ({e}): {}", show(&out)));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("testssl {name}: {e}: {text}"));
    assert!(findings.iter().any(|f| f["id"] == "scanTime"), "testssl {name} did not finish: {}", show(&out));
    findings
}

fn finding<'a>(findings: &'a [serde_json::Value], id: &str, name: &str) -> &'a str {
    findings.iter().find(|f| f["id"] == id).and_then(|f| f["finding"].as_str()).unwrap_or_else(|| panic!("testssl {name}: no {id}"))
}

/// The suites testssl saw at one protocol (`tls1`, `tls1_1`, `tls1_2`, `tls1_3`), by the
/// OpenSSL name in its finding.
fn testssl_suites(findings: &[serde_json::Value], proto: &str) -> BTreeSet<String> {
    let prefix = format!("cipher-{proto}_x");
    findings
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
        .map(|f| f["finding"].as_str().unwrap().split_whitespace().nth(3).unwrap().to_string())
        .collect()
}

#[test]
fn testssl_sees_only_forward_secret_aead_suites_at_tls12_on_the_standard_endpoints() {
    let _turn = heavy();
    let dir = tempfile::tempdir().unwrap();
    // The demo's configuration twice, with a short command timeout: testssl's
    // client-initiated renegotiation check gets rustls's no_renegotiation warning and then
    // waits for the server to end the session (by default after 300 s).
    let served = |sub: &str, legacy_tls: Option<&str>| {
        let base = dir.path().join(sub);
        std::fs::create_dir(&base).unwrap();
        drop(demo(&base));
        let mut config = base.join("demo/mailgate.toml");
        let text = std::fs::read_to_string(&config).unwrap().replacen("\n[limits]\n", "\n[limits]\ncommand_timeout = 5\n", 1);
        assert!(text.contains("command_timeout = 5"), "the demo's configuration has a [limits] table");
        std::fs::write(&config, text).unwrap();
        if let Some(mode) = legacy_tls {
            for name in ["standard-starttls", "standard-implicit"] {
                config = with_endpoint_lines(&config, name, &format!("legacy_tls = \"{mode}\""));
            }
        }
        Mailgate::start(&["--config", config.to_str().unwrap(), "serve"], &base.join("serve-stderr.log"))
    };
    let explain = served("explain", None);
    let refuse = served("refuse", Some("refuse"));

    let runs = [("explain", &explain, "standard-implicit"), ("explain", &explain, "standard-starttls"), ("refuse", &refuse, "standard-implicit"), ("refuse", &refuse, "standard-starttls")];
    let scans: Vec<(String, &str, Vec<serde_json::Value>)> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(mode, server, endpoint)| {
                let (port, path) = (server.port(endpoint), dir.path());
                let name = format!("{endpoint}-{mode}");
                s.spawn(move || (name.clone(), *mode, testssl(path, port, is_starttls(endpoint), &name)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, mode, f) in &scans {
        // TLS 1.2 and 1.3: only ECDHE + AEAD, exactly the profile's suites.
        assert_eq!(testssl_suites(f, "tls1_2"), set(INTERMEDIATE_12), "testssl {name}: TLS 1.2 suites");
        assert_eq!(testssl_suites(f, "tls1_3"), set(TLS13), "testssl {name}: TLS 1.3 suites");
        for id in ["TLS1_2", "TLS1_3"] {
            assert!(finding(f, id, name).starts_with("offered"), "testssl {name}: {id}");
        }
        for id in ["heartbleed", "CCS", "ROBOT", "secure_renego", "secure_client_renego", "CRIME_TLS", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "LOGJAM", "LUCKY13", "RC4"] {
            let x = f.iter().find(|x| x["id"] == id).unwrap_or_else(|| panic!("testssl {name}: no {id}"));
            assert_eq!(x["severity"], "OK", "testssl {name}: {x}");
        }
        let vulnerable: Vec<String> = f
            .iter()
            .filter(|x| x["finding"].as_str().is_some_and(|t| t.contains("VULNERABLE")))
            .map(|x| format!("{}: {}", x["id"], x["finding"]))
            .collect();
        if *mode == "refuse" {
            // Nothing below TLS 1.2 at all, and no line says VULNERABLE.
            for id in ["TLS1", "TLS1_1", "SSLv3", "SSLv2"] {
                assert!(finding(f, id, name).starts_with("not offered"), "testssl {name}: {id}: {}", finding(f, id, name));
            }
            assert!(testssl_suites(f, "tls1").is_empty() && testssl_suites(f, "tls1_1").is_empty(), "testssl {name}");
            assert_eq!(finding(f, "cipherlist_AVERAGE", name), "not offered", "testssl {name}: obsolete CBC suites");
            assert!(vulnerable.is_empty(), "testssl {name}: {vulnerable:#?}");
        } else {
            // The TLS 1.0/1.1 handshake that carries the 421 (see the test above) is the only
            // one below 1.2; BEAST is flagged for its CBC suites at TLS 1.0, and nothing else.
            for proto in ["tls1", "tls1_1"] {
                assert_eq!(testssl_suites(f, proto), set(LEGACY_10), "testssl {name}: {proto} suites (the 421 handshake)");
            }
            assert!(vulnerable.iter().all(|v| v.starts_with("\"BEAST\"")), "testssl {name}: {vulnerable:#?}");
        }
    }
}

// ---- groups: the same on both stacks ---------------------------------------------------------

/// One s_client handshake offering only `group`: whether it completed.
fn with_group(port: u16, version: &str, suite: &str, group: &str) -> bool {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "openssl", "s_client", "-connect", &format!("127.0.0.1:{port}"), &format!("-{version}"), "-groups", group]);
    if version != "tls1_3" {
        cmd.args(["-cipher", &format!("{suite}:@SECLEVEL=0")]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().any(|l| l.contains("Cipher is ") && !l.contains("(NONE)"))
}

#[test]
fn both_stacks_offer_exactly_x25519_p256_and_p384() {
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    let (std, legacy) = (server.port("standard-implicit"), server.port("legacy-implicit"));
    // rustls at TLS 1.3 and 1.2; OpenSSL at TLS 1.2 (a CBC suite) and TLS 1.0.
    let paths = [(std, "tls1_3", ""), (std, "tls1_2", "ECDHE-RSA-AES128-GCM-SHA256"), (legacy, "tls1_2", "ECDHE-RSA-AES128-SHA"), (legacy, "tls1", "ECDHE-RSA-AES128-SHA")];
    for (port, version, suite) in paths {
        for (group, served) in [("X25519", true), ("P-256", true), ("P-384", true), ("P-521", false), ("X448", false)] {
            assert_eq!(with_group(port, version, suite, group), served, "port {port} {version} {suite} with only {group}");
        }
    }
}

/// The legacy endpoint seen by testssl.sh: exactly TLS 1.0 to 1.3 (no SSL), each with the
/// suites docs/legacy-tls.md documents, and no finding worse than the CBC ones it names
/// (BEAST, LUCKY13).
#[test]
fn testssl_sees_exactly_the_documented_protocols_and_suites_on_the_legacy_endpoint() {
    let _turn = heavy();
    let dir = tempfile::tempdir().unwrap();
    let server = demo(dir.path());
    let f = testssl(dir.path(), server.port("legacy-implicit"), false, "legacy-implicit");
    let name = "legacy-implicit";
    for id in ["SSLv2", "SSLv3"] {
        assert!(finding(&f, id, name).starts_with("not offered"), "testssl {name}: {id}: {}", finding(&f, id, name));
    }
    for id in ["TLS1", "TLS1_1", "TLS1_2", "TLS1_3"] {
        assert!(finding(&f, id, name).starts_with("offered"), "testssl {name}: {id}: {}", finding(&f, id, name));
    }
    for (proto, suites) in [("tls1", LEGACY_10), ("tls1_1", LEGACY_10), ("tls1_2", LEGACY_12), ("tls1_3", TLS13)] {
        assert_eq!(testssl_suites(&f, proto), set(suites), "testssl {name}: {proto} suites");
    }
    for id in ["heartbleed", "CCS", "ROBOT", "secure_renego", "secure_client_renego", "CRIME_TLS", "POODLE_SSL", "SWEET32", "FREAK", "LOGJAM", "RC4"] {
        let x = f.iter().find(|x| x["id"] == id).unwrap_or_else(|| panic!("testssl {name}: no {id}"));
        assert_eq!(x["severity"], "OK", "testssl {name}: {x}");
    }
    let vulnerable: Vec<String> = f
        .iter()
        .filter(|x| x["finding"].as_str().is_some_and(|t| t.contains("VULNERABLE")))
        .map(|x| format!("{}: {}", x["id"], x["finding"]))
        .collect();
    assert!(vulnerable.iter().all(|v| v.starts_with("\"BEAST\"") || v.starts_with("\"LUCKY13\"")), "testssl {name}: {vulnerable:#?}");
}
