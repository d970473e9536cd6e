//! `mailgate-load`: an SMTP submission load generator for benchmarks.
//!
//! N concurrent clients; each session connects, reads the greeting (STARTTLS or implicit
//! TLS at a chosen version: TLS 1.0/1.1 through OpenSSL with `@SECLEVEL=0`, TLS 1.2/1.3
//! through rustls), then either stops after the handshake (`--handshake-only`) or does
//! EHLO, AUTH PLAIN, and K times MAIL/RCPT/DATA with a generated message of S bytes, then
//! QUIT. It reports sessions/s, messages/s, latency percentiles per phase and errors by
//! reply code, as a table and optionally as JSON. It runs for a duration or a count and
//! stops by itself; it only ever connects where it is told (use 127.0.0.1).

use base64::Engine;
use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(name = "mailgate-load", about = "SMTP submission load generator")]
struct Args {
    /// Server address (127.0.0.1:PORT).
    #[arg(long)]
    addr: SocketAddr,
    /// `starttls`, `implicit`, or `plain` (no TLS at all: with --handshake-only, the floor
    /// of a session without TLS: connect, greeting, QUIT).
    #[arg(long, default_value = "starttls", value_parser = ["starttls", "implicit", "plain"])]
    mode: String,
    /// TLS version: 1.0, 1.1, 1.2 or 1.3.
    #[arg(long, default_value = "1.3")]
    tls: String,
    /// Concurrent clients.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run (ignored when --sessions is given).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Total sessions to run instead of a duration.
    #[arg(long)]
    sessions: Option<u64>,
    /// Stop each session after the TLS handshake and greeting (measures handshakes).
    #[arg(long)]
    handshake_only: bool,
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Envelope sender (defaults to --user).
    #[arg(long)]
    from: Option<String>,
    #[arg(long, default_value = "")]
    to: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 10240)]
    size: usize,
    /// Messages per session.
    #[arg(long, default_value_t = 1)]
    messages: usize,
    /// With --handshake-only: hold each session this many seconds after EHLO under TLS
    /// (idle sessions, for memory measurements).
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Print the result as JSON too.
    #[arg(long)]
    json: bool,
    /// A label for the result.
    #[arg(long, default_value = "")]
    label: String,
}

/// Sessions held idle right now, and the most at once (--hold).
static HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PEAK_HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

enum Connector {
    Rustls(tokio_rustls::TlsConnector),
    OpenSsl(openssl::ssl::SslConnector),
}

fn connector(version: &str) -> anyhow::Result<Connector> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    let legacy = match version {
        "1.0" => Some(SslVersion::TLS1),
        "1.1" => Some(SslVersion::TLS1_1),
        "1.2" | "1.3" => None,
        v => anyhow::bail!("--tls {v}: expected 1.0, 1.1, 1.2 or 1.3"),
    };
    if let Some(v) = legacy {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(v))?;
        b.set_max_proto_version(Some(v))?;
        b.set_cipher_list("DEFAULT:@SECLEVEL=0")?;
        b.set_security_level(0);
        b.set_verify(SslVerifyMode::NONE);
        return Ok(Connector::OpenSsl(b.build()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if version == "1.2" { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    // Every session is a full handshake, as with the OpenSSL client (and most devices).
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Connector::Rustls(tokio_rustls::TlsConnector::from(Arc::new(cfg))))
}

impl Connector {
    async fn wrap(&self, tcp: TcpStream) -> anyhow::Result<Box<dyn Io>> {
        Ok(match self {
            Connector::Rustls(c) => Box::new(c.connect("localhost".try_into()?, tcp).await?),
            Connector::OpenSsl(c) => {
                let ssl = c.configure()?.verify_hostname(false).into_ssl("localhost")?;
                let mut s = tokio_openssl::SslStream::new(ssl, tcp)?;
                Pin::new(&mut s).connect().await?;
                Box::new(s)
            }
        })
    }
}

/// Reads one whole reply; returns its code.
async fn reply<S: AsyncRead + Unpin + ?Sized>(s: &mut S, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if line.len() < 4 || line[3] != b'-' {
                let code = std::str::from_utf8(&line[..3.min(line.len())])?.parse()?;
                return Ok(code);
            }
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).await?;
        if n == 0 {
            anyhow::bail!("connection closed");
        }
        buf.extend_from_slice(&b[..n]);
    }
}

async fn cmd<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(s: &mut S, buf: &mut Vec<u8>, line: &[u8], want: u16) -> Result<(), String> {
    s.write_all(line).await.map_err(|e| e.to_string())?;
    match reply(s, buf).await {
        Ok(c) if c == want => Ok(()),
        Ok(c) => Err(c.to_string()),
        Err(e) => Err(format!("io: {e}")),
    }
}

#[derive(Default)]
struct Stats {
    sessions: u64,
    messages: u64,
    connect_tls: Vec<Duration>,
    auth: Vec<Duration>,
    data: Vec<Duration>,
    session: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.sessions += o.sessions;
        self.messages += o.messages;
        self.connect_tls.extend(o.connect_tls);
        self.auth.extend(o.auth);
        self.data.extend(o.data);
        self.session.extend(o.session);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

fn message(size: usize, n: u64) -> Vec<u8> {
    let mut m = format!("From: load@test\r\nTo: load@test\r\nSubject: load {n}\r\nMessage-ID: <load-{n}@mailgate-load>\r\n\r\n").into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz\r\n";
    while m.len() + line.len() < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// Handshakes in flight at once: a connect storm of thousands of SYNs overflows the
/// server's listen backlog and measures SYN retransmits, not the server.
static CONNECTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

async fn session(a: &Args, conn: &Connector, stats: &mut Stats, n: u64) -> Result<(), String> {
    let connecting = CONNECTING.acquire().await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut tcp = TcpStream::connect(a.addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let mut s: Box<dyn Io> = if a.mode == "plain" {
        reply(&mut tcp, &mut buf).await.map_err(|e| format!("io: {e}"))?;
        Box::new(tcp)
    } else if a.mode == "implicit" {
        let mut s = conn.wrap(tcp).await.map_err(|e| format!("tls: {e}"))?;
        match reply(&mut s, &mut buf).await {
            Ok(220) => s,
            Ok(c) => return Err(c.to_string()),
            Err(e) => return Err(format!("io: {e}")),
        }
    } else {
        reply(&mut tcp, &mut buf).await.map_err(|e| format!("io: {e}"))?;
        cmd(&mut tcp, &mut buf, b"EHLO load.test\r\n", 250).await?;
        cmd(&mut tcp, &mut buf, b"STARTTLS\r\n", 220).await?;
        let mut s = conn.wrap(tcp).await.map_err(|e| format!("tls: {e}"))?;
        buf.clear();
        cmd(&mut s, &mut buf, b"EHLO load.test\r\n", 250).await?;
        s
    };
    stats.connect_tls.push(start.elapsed());
    drop(connecting);
    if a.handshake_only {
        if a.hold > 0 {
            if a.mode != "starttls" {
                cmd(&mut s, &mut buf, b"EHLO load.test\r\n", 250).await?;
            }
            let now = HELD.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            PEAK_HELD.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(a.hold)).await;
            HELD.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        let _ = s.write_all(b"QUIT\r\n").await;
        return Ok(());
    }
    if a.mode != "starttls" {
        cmd(&mut s, &mut buf, b"EHLO load.test\r\n", 250).await?;
    }
    let t = Instant::now();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", a.user, a.password));
    cmd(&mut s, &mut buf, format!("AUTH PLAIN {token}\r\n").as_bytes(), 235).await?;
    stats.auth.push(t.elapsed());
    let from = a.from.clone().unwrap_or_else(|| a.user.clone());
    for k in 0..a.messages {
        let t = Instant::now();
        let env = format!("MAIL FROM:<{from}>\r\nRCPT TO:<{}>\r\nDATA\r\n", a.to);
        s.write_all(env.as_bytes()).await.map_err(|e| e.to_string())?;
        for want in [250, 250, 354] {
            match reply(&mut s, &mut buf).await {
                Ok(c) if c == want => {}
                Ok(c) => return Err(c.to_string()),
                Err(e) => return Err(format!("io: {e}")),
            }
        }
        let msg = message(a.size, n * 1000 + k as u64);
        cmd(&mut s, &mut buf, &msg, 250).await?;
        stats.data.push(t.elapsed());
        stats.messages += 1;
    }
    let _ = cmd(&mut s, &mut buf, b"QUIT\r\n", 221).await;
    Ok(())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Arc::new(Args::parse());
    let conn = Arc::new(connector(&a.tls)?);
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (a, conn, counter) = (a.clone(), conn.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            loop {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match a.sessions {
                    Some(max) if n >= max => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(60 + a.hold), session(&a, &conn, &mut stats, n)).await {
                    Ok(Ok(())) => {
                        stats.sessions += 1;
                        stats.session.push(t.elapsed());
                    }
                    Ok(Err(e)) => *stats.errors.entry(e).or_default() += 1,
                    Err(_) => *stats.errors.entry("timeout".into()).or_default() += 1,
                }
            }
            stats
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        all.merge(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    let mut phases = Vec::new();
    for (name, v) in [
        ("connect+tls", &mut all.connect_tls),
        ("auth", &mut all.auth),
        ("data", &mut all.data),
        ("session", &mut all.session),
    ] {
        if !v.is_empty() {
            phases.push((name, pct(v, 0.5), pct(v, 0.9), pct(v, 0.99)));
        }
    }
    let label = if a.label.is_empty() { format!("{} TLS {}", a.mode, a.tls) } else { a.label.clone() };
    let cpu = own_cpu_seconds();
    println!("{label}: {} sessions, {} messages in {secs:.1} s, concurrency {}", all.sessions, all.messages, a.concurrency);
    println!("  load generator CPU {cpu:.2} s (it shares the machine with the server); its TLS 1.0/1.1 client: {}", openssl::version::version());
    println!("  sessions/s {:.1}   messages/s {:.1}", all.sessions as f64 / secs, all.messages as f64 / secs);
    println!("  {:<12} {:>9} {:>9} {:>9}", "phase (ms)", "p50", "p90", "p99");
    for (name, p50, p90, p99) in &phases {
        println!("  {name:<12} {p50:>9.2} {p90:>9.2} {p99:>9.2}");
    }
    for (e, n) in &all.errors {
        println!("  error {e}: {n}");
    }
    let peak_held = PEAK_HELD.load(std::sync::atomic::Ordering::SeqCst);
    if a.hold > 0 {
        println!("  sessions held idle at once: {peak_held}");
    }
    if a.json {
        let json = serde_json::json!({
            "label": label, "seconds": secs, "concurrency": a.concurrency,
            "sessions": all.sessions, "messages": all.messages,
            "sessions_per_sec": all.sessions as f64 / secs, "messages_per_sec": all.messages as f64 / secs,
            "phases_ms": phases.iter().map(|(n, a, b, c)| serde_json::json!({"phase": n, "p50": a, "p90": b, "p99": c})).collect::<Vec<_>>(),
            "errors": all.errors,
            "peak_held": peak_held,
            "client_cpu_s": cpu,
            "client_openssl": openssl::version::version(),
        });
        println!("{json}");
    }
    Ok(())
}

/// This process's CPU time so far (user + system), in seconds: what the load itself cost
/// on cores it shares with the server.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
