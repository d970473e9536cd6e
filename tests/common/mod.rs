//! Test harness: a real server on 127.0.0.1 port 0 in a temporary directory (the two
//! standard endpoints, or endpoints the test gives; optionally on a clock the test moves),
//! and a raw SMTP client (plain, STARTTLS, implicit TLS, or over a TLS stream the test made
//! itself) for protocol-level tests.
#![allow(dead_code)]

pub mod token_endpoint;

use mailgate::config::Config;
use mailgate::server::RunningServer;
use mailgate::session::Clock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const USERS: [(&str, &str); 4] = [
    ("alice@contoso.test", "alice-password-1"),
    ("scanner@contoso.test", "scanner-password-1"),
    ("bob@fabrikam.test", "bob-password-1"),
    ("printer@fabrikam.test", "printer-password-1"),
];

/// The two endpoints of [`TestServer::start`]: STARTTLS and implicit TLS, TLS 1.2 and 1.3.
pub const STANDARD_ENDPOINTS: &str = r#"
[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
[[endpoint]]
name = "standard-implicit"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
"#;

pub fn all_users() -> Vec<&'static str> {
    USERS.iter().map(|(u, _)| *u).collect()
}

/// A clock that a test can move: `clock()` goes to the server, `set()` moves it.
#[derive(Clone)]
pub struct TestClock(Arc<std::sync::Mutex<chrono::DateTime<chrono::Utc>>>);

impl TestClock {
    /// Noon (UTC) on `day` ("2027-06-30").
    pub fn at(day: &str) -> TestClock {
        let c = TestClock(Arc::new(std::sync::Mutex::new(chrono::Utc::now())));
        c.set(day);
        c
    }

    pub fn set(&self, day: &str) {
        let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a date like 2027-06-30");
        *self.0.lock().unwrap() = d.and_hms_opt(12, 0, 0).unwrap().and_utc();
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        *self.0.lock().unwrap() += chrono::Duration::seconds(secs);
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }

    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

pub fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).map(|(_, p)| *p).expect("known test user")
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub cert_path: PathBuf,
    pub cert_pem: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts a server with the two standard endpoints; `extra` is TOML appended to the
    /// config (e.g. a `[limits]` table).
    pub async fn start_with(extra: &str) -> TestServer {
        Self::start_config(&format!("{STANDARD_ENDPOINTS}\n{extra}")).await
    }

    /// Starts a server whose endpoints (and any other tables) the caller gives as TOML;
    /// what precedes it is `hostname`, `data_dir` and the certificate. All test users.
    pub async fn start_config(endpoints_and_extra: &str) -> TestServer {
        Self::start_custom(endpoints_and_extra, &all_users(), None).await
    }

    /// As [`start_config`], adding only `users` (each costs an argon2 hash in a debug
    /// build) and, if given, running the server on `clock`. The tenants contoso and
    /// fabrikam and their domains always exist.
    pub async fn start_custom(endpoints_and_extra: &str, users: &[&str], clock: Option<Clock>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = mailgate::tls::self_signed_rsa(&["localhost", "127.0.0.1"], 30).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        let toml = format!(
            r#"
hostname = "mx.test"
data_dir = "data"
[[tls.certificate]]
cert = "cert.pem"
key = "key.pem"
{endpoints_and_extra}
"#
        );
        let path = dir.path().join("mailgate.toml");
        std::fs::write(&path, toml).unwrap();
        let config = Arc::new(Config::load(&path).unwrap());
        let server = match clock {
            Some(clock) => mailgate::server::start_with_clock(config, clock).await.unwrap(),
            None => mailgate::server::start(config).await.unwrap(),
        };
        let d = &server.directory;
        for (tenant, domain) in [("contoso", "contoso.test"), ("fabrikam", "fabrikam.test")] {
            d.add_tenant(tenant).await.unwrap();
            d.add_domain(domain, tenant).await.unwrap();
        }
        // Users are added side by side: the argon2 hashes run on the blocking pool.
        let mut adding = tokio::task::JoinSet::new();
        for user in users {
            let (d, user, pw) = (d.clone(), user.to_string(), password(user));
            adding.spawn(async move { d.add_user(&user, pw, true).await.unwrap() });
        }
        while let Some(r) = adding.join_next().await {
            r.unwrap();
        }
        TestServer { cert_path: dir.path().join("cert.pem"), cert_pem: cert, dir, server: Some(server) }
    }

    /// Starts another server on the configuration file and data (directory, spool, usage
    /// store) of a server that was shut down (`server` is `None`), optionally on `clock`.
    /// Tenants, users and opt-ins are as the previous server left them; the endpoints bind
    /// new ports (port 0 again).
    pub async fn restart(self, clock: Option<Clock>) -> TestServer {
        assert!(self.server.is_none(), "restart: shut the running server down first");
        let config = Arc::new(Config::load(&self.config_path()).unwrap());
        let server = match clock {
            Some(clock) => mailgate::server::start_with_clock(config, clock).await.unwrap(),
            None => mailgate::server::start(config).await.unwrap(),
        };
        TestServer { server: Some(server), ..self }
    }

    /// Graceful shutdown of the running server; returns once it has stopped (usage events
    /// stored, queue runner stopped). The data stays for reports or a restart.
    pub async fn stop(&mut self) {
        self.server.take().expect("a running server").shutdown().await;
    }

    /// The configuration file the server was started from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mailgate.toml")
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// The first address of the named endpoint.
    pub fn addr(&self, endpoint: &str) -> SocketAddr {
        self.server().addr(endpoint).unwrap_or_else(|| panic!("no endpoint {endpoint}"))
    }

    pub fn starttls_addr(&self) -> SocketAddr {
        self.server().addr("standard-starttls").unwrap()
    }

    pub fn implicit_addr(&self) -> SocketAddr {
        self.server().addr("standard-implicit").unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Files in the `new/` folder of a mailbox, sorted by name.
    pub fn mailbox(&self, address: &str) -> Vec<PathBuf> {
        let (local, domain) = address.split_once('@').unwrap();
        let new = self.data_dir().join("maildir").join(domain).join(local).join("new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(new) {
            Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Waits (deadline 20 s) until a mailbox holds `n` messages; returns their contents.
    pub async fn wait_for_mail(&self, address: &str, n: usize) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let files = self.mailbox(address);
            if files.len() >= n {
                return files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            }
            assert!(tokio::time::Instant::now() < deadline, "{address}: {} of {n} messages arrived", files.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every file anywhere under the Maildir root (tmp/ included).
    pub fn all_mail_files(&self) -> Vec<PathBuf> {
        walk(&self.data_dir().join("maildir"))
    }

    /// Queue entries and files still being received.
    /// The spool's files, without the journal's segments: a record there is a queue
    /// entry only while its file is in `queue/` (see src/queue/journal.rs).
    pub fn spool_files(&self) -> Vec<PathBuf> {
        let journal = self.data_dir().join("spool/journal");
        walk(&self.data_dir().join("spool")).into_iter().filter(|f| !f.starts_with(&journal)).collect()
    }

    /// Waits until the queue runner has handled everything it can (no `.msg` left whose
    /// recipients are all local), then returns what is left in the spool.
    pub async fn settled_spool(&self) -> Vec<PathBuf> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let files = self.spool_files();
            let pending_local = files.iter().any(|f| {
                f.extension().is_some_and(|e| e == "msg")
                    // A file removed between the listing and this read: look again.
                    && std::fs::read_to_string(f).map(|s| s.contains("\"route\":\"local\"")).unwrap_or(true)
            });
            if !pending_local || tokio::time::Instant::now() > deadline {
                return files;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Splits a delivered file into our Received header and the rest.
pub fn split_received(file: &[u8]) -> (String, Vec<u8>) {
    assert!(file.starts_with(b"Received: "), "delivered file must start with our Received header");
    // The header ends at the first CRLF not followed by folding white space.
    let mut i = 0;
    loop {
        let nl = file[i..].windows(2).position(|w| w == b"\r\n").expect("header end") + i;
        if !matches!(file.get(nl + 2), Some(b' ') | Some(b'\t')) {
            let header = String::from_utf8(file[..nl + 2].to_vec()).unwrap();
            return (header, file[nl + 2..].to_vec());
        }
        i = nl + 2;
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw SMTP client over which tests send exact bytes.
pub struct Raw {
    stream: Option<Box<dyn Io>>,
    plain: Option<TcpStream>,
    buf: Vec<u8>,
    cert_pem: String,
}

pub fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(rustls_client_config(cert_pem))
}

/// A rustls client (TLS 1.2/1.3) trusting only `cert_pem`.
pub fn rustls_client_config(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

impl Raw {
    /// A plain-text connection (greeting read).
    pub async fn plain(addr: SocketAddr, cert_pem: &str) -> Raw {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut r = Raw { stream: None, plain: Some(tcp), buf: Vec::new(), cert_pem: cert_pem.into() };
        let (code, _) = r.reply().await;
        assert_eq!(code, 220);
        r
    }

    /// STARTTLS done, EHLO sent again, ready for AUTH.
    pub async fn starttls(addr: SocketAddr, cert_pem: &str) -> Raw {
        let mut r = Raw::plain(addr, cert_pem).await;
        r.expect("EHLO client.test", 250).await;
        r.expect("STARTTLS", 220).await;
        r.upgrade().await;
        r.expect("EHLO client.test", 250).await;
        r
    }

    /// Implicit TLS, greeting read.
    pub async fn implicit(addr: SocketAddr, cert_pem: &str) -> Raw {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_connector(cert_pem).connect("localhost".try_into().unwrap(), tcp).await.unwrap();
        let mut r = Raw { stream: Some(Box::new(tls)), plain: None, buf: Vec::new(), cert_pem: cert_pem.into() };
        let (code, _) = r.reply().await;
        assert_eq!(code, 220);
        r
    }

    /// A client over a stream the test set up itself (e.g. an OpenSSL legacy TLS
    /// client); nothing is read yet.
    pub fn from_stream(stream: Box<dyn Io>, cert_pem: &str) -> Raw {
        Raw { stream: Some(stream), plain: None, buf: Vec::new(), cert_pem: cert_pem.into() }
    }

    /// The plain TCP connection, for a test that starts TLS with its own client (after
    /// `STARTTLS` got its 220). Bytes buffered in clear are dropped.
    pub fn into_plain(mut self) -> TcpStream {
        self.plain.take().expect("plain connection")
    }

    /// Starts TLS on the plain connection. Bytes already buffered are dropped, as a client
    /// must (they were sent in clear).
    pub async fn upgrade(&mut self) {
        let tcp = self.plain.take().expect("plain connection");
        let tls = tls_connector(&self.cert_pem).connect("localhost".try_into().unwrap(), tcp).await.unwrap();
        self.buf.clear();
        self.stream = Some(Box::new(tls));
    }

    /// Logged in as `user`.
    pub async fn logged_in(addr: SocketAddr, cert_pem: &str, user: &str) -> Raw {
        let mut r = Raw::starttls(addr, cert_pem).await;
        r.auth_plain(user, password(user)).await;
        r
    }

    pub async fn auth_plain(&mut self, user: &str, pw: &str) -> (u16, String) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"));
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        if let Some(s) = self.stream.as_mut() {
            s.write_all(bytes).await.unwrap();
            s.flush().await.unwrap();
        } else {
            self.plain.as_mut().unwrap().write_all(bytes).await.unwrap();
        }
    }

    async fn read_more(&mut self) -> usize {
        let mut b = [0u8; 4096];
        let fut = async {
            match (self.stream.as_mut(), self.plain.as_mut()) {
                (Some(s), _) => s.read(&mut b).await,
                (None, Some(p)) => p.read(&mut b).await,
                _ => Ok(0),
            }
        };
        let n = tokio::time::timeout(Duration::from_secs(20), fut).await.expect("reply within 20 s").unwrap_or(0);
        self.buf.extend_from_slice(&b[..n]);
        n
    }

    /// Reads one complete reply (all lines); returns the code and the whole text.
    pub async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            while let Some(nl) = self.buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                text.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] != b'-' {
                    let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return (code, text);
                }
            }
            if self.read_more().await == 0 {
                return (0, text);
            }
        }
    }

    /// A reply if one arrives within `wait`; `None` when the server stays silent that long.
    pub async fn reply_within(&mut self, wait: Duration) -> Option<(u16, String)> {
        tokio::time::timeout(wait, self.reply()).await.ok()
    }

    /// True when the server has closed the connection (after any buffered replies).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.read_more().await == 0
    }

    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends bytes; a write error (the server already closed) is ignored, as a client that
    /// goes on to read the server's last reply would.
    pub async fn send_lenient(&mut self, bytes: &[u8]) {
        let r = match (self.stream.as_mut(), self.plain.as_mut()) {
            (Some(s), _) => match s.write_all(bytes).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            (None, Some(p)) => p.write_all(bytes).await,
            _ => Ok(()),
        };
        let _ = r;
    }

    /// As [`cmd`], but a closed connection is not a panic: the reply is whatever the server
    /// sent before closing (code 0 if nothing).
    pub async fn cmd_lenient(&mut self, line: &str) -> (u16, String) {
        self.send_lenient(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply code; returns the text.
    pub async fn expect(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line).await;
        assert_eq!(c, code, "{line:?} got {text:?}");
        text
    }
}

/// Runs a client program with a deadline; it is killed if the test gives up on it.
pub async fn run(mut cmd: tokio::process::Command, what: &str) -> std::process::Output {
    cmd.kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{what}: cannot run: {e}"),
        Err(_) => panic!("{what}: no result within 60 s"),
    }
}

/// A program's status and output, for assertion messages.
pub fn show(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last line of a program's output, parsed as JSON.
pub fn last_json_line(out: &std::process::Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("{what}: no output\n{}", show(out)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e})\n{}", show(out)))
}

/// Standard endpoints (TLS 1.2/1.3, `legacy_tls` left at its default, "explain") and
/// legacy endpoints (TLS 1.0 to 1.3, default "allow"), STARTTLS and implicit TLS each.
pub const FOUR_ENDPOINTS: &str = r#"
[[endpoint]]
name = "standard-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
tls_versions = ["1.2", "1.3"]
[[endpoint]]
name = "standard-implicit"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
tls_versions = ["1.2", "1.3"]
[[endpoint]]
name = "legacy-starttls"
listen = ["127.0.0.1:0"]
tls_mode = "starttls"
tls_versions = ["1.0", "1.1", "1.2", "1.3"]
[[endpoint]]
name = "legacy-implicit"
listen = ["127.0.0.1:0"]
tls_mode = "implicit"
tls_versions = ["1.0", "1.1", "1.2", "1.3"]
"#;

/// A ClientHello record: record version, hello version, cipher suites, raw extensions
/// (none when empty).
pub fn client_hello(record_version: u16, version: u16, ciphers: &[u16], extensions: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        body.extend_from_slice(&c.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16];
    rec.extend_from_slice(&record_version.to_be_bytes());
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}
