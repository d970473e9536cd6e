//! Accepting connections and driving sessions over them.
//!
//! One accept loop per listen address. Each connection gets a concurrency permit (node-wide
//! and per client IP; over the limit it is told `421` and closed), TCP_NODELAY (replies go
//! out in one write, no delayed-ACK stalls), a total session deadline, and a task that
//! moves bytes between the socket and the sans-I/O [`Session`]. STARTTLS and implicit TLS
//! are both handled here: after a STARTTLS the plain session is dropped and a new one
//! starts inside TLS (RFC 3207 §4.2). On shutdown, sessions waiting for a command get
//! `421 4.3.2`; a message being received is allowed to finish first.

use crate::config::TlsMode;
use crate::reply::Reply;
use crate::session::{ConnectionInfo, Flow, Session, SessionContext};
use crate::tls::{rustls_facts, TlsFacts};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// An endpoint ready to serve: its name, TLS mode and acceptor.
pub struct EndpointRuntime {
    pub name: String,
    pub tls_mode: TlsMode,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// What all accept loops of a server share.
pub struct Shared {
    pub ctx: Arc<SessionContext>,
    pub sessions: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    counter: AtomicU64,
}

impl Shared {
    pub fn new(ctx: Arc<SessionContext>) -> Arc<Shared> {
        let max = ctx.config.limits.max_sessions;
        Arc::new(Shared {
            ctx,
            sessions: Arc::new(Semaphore::new(max)),
            per_ip: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let permit = self.sessions.clone().try_acquire_owned().ok()?;
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.ctx.config.limits.max_sessions_per_ip {
            return None;
        }
        *n += 1;
        Some(Admission { _permit: permit, shared: self.clone(), ip })
    }
}

/// Holds a session's place in the limits; released on drop.
struct Admission {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<EndpointRuntime>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown_requested(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(admission) = shared.admit(peer.ip()) else {
            tokio::spawn(refuse_busy(stream, endpoint.tls_mode));
            continue;
        };
        let id = shared.counter.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("session", id, peer = %peer, endpoint = %endpoint.name);
        let conn = Connection { endpoint: endpoint.clone(), shared: shared.clone(), peer, shutdown: shutdown.clone() };
        tokio::spawn(
            async move {
                conn.run(stream).await;
                drop(admission);
            }
            .instrument(span),
        );
    }
}

/// Over the limits: a plain-text 421 where the client speaks plain text first.
async fn refuse_busy(mut stream: TcpStream, mode: TlsMode) {
    if mode == TlsMode::Starttls {
        let mut out = Vec::new();
        Reply::too_many_sessions().write_to(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
    }
}

/// How a drive over one stream ended.
enum DriveEnd<S> {
    StartTls(S),
    Closed,
}

struct Connection {
    endpoint: Arc<EndpointRuntime>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    fn info(&self) -> ConnectionInfo {
        ConnectionInfo { endpoint: self.endpoint.name.clone(), tls_mode: self.endpoint.tls_mode, peer: self.peer }
    }

    fn limit(&self, secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    async fn run(mut self, stream: TcpStream) {
        let limits = self.shared.ctx.config.limits.clone();
        let deadline = Instant::now() + self.limit(limits.session_timeout);
        tracing::debug!("connected");
        let plain = match self.endpoint.tls_mode {
            TlsMode::Implicit => stream,
            TlsMode::Starttls => {
                let mut session = Session::new(self.shared.ctx.clone(), self.info(), None);
                match self.drive(stream, &mut session, true, deadline).await {
                    DriveEnd::StartTls(s) => s,
                    DriveEnd::Closed => return,
                }
            }
        };
        let Some((tls, facts)) = self.handshake(plain, limits.tls_handshake_timeout).await else { return };
        tracing::info!(tls_version = %facts.version, cipher = %facts.cipher, sni = ?facts.sni, "TLS established");
        let implicit = self.endpoint.tls_mode == TlsMode::Implicit;
        let mut session = Session::new(self.shared.ctx.clone(), self.info(), Some(facts));
        // RFC 3207 §4.2: no new greeting after STARTTLS; implicit TLS greets inside TLS.
        let _ = self.drive(tls, &mut session, implicit, deadline).await;
        tracing::debug!(messages = session.messages(), "session ended");
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        timeout_secs: u64,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, TlsFacts)> {
        match tokio::time::timeout(self.limit(timeout_secs), self.endpoint.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let facts = rustls_facts(tls.get_ref().1, None);
                Some((tls, facts))
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                None
            }
        }
    }

    /// Moves bytes between `stream` and `session` until the session closes or asks for TLS.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        session: &mut Session,
        greet: bool,
        deadline: Instant,
    ) -> DriveEnd<S> {
        let host = self.shared.ctx.config.hostname.clone();
        // Small buffers: an idle session must stay cheap (thousands of devices stay
        // connected); `input` grows only while a message streams in.
        let mut input: Vec<u8> = Vec::new();
        let mut out: Vec<u8> = Vec::new();
        if greet {
            session.greeting().write_to(&mut out);
            if write_out(&mut stream, &mut out).await.is_err() {
                return DriveEnd::Closed;
            }
        }
        loop {
            let in_message = session.in_message();
            if input.capacity() - input.len() < READ_CHUNK {
                input.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                r = tokio::time::timeout(session.read_timeout(), stream.read_buf(&mut input)) => r,
                _ = shutdown_requested(&mut self.shutdown), if !in_message => {
                    session.abort();
                    return close_with(stream, Reply::shutting_down(&host)).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    session.abort();
                    return close_with(stream, Reply::session_too_long()).await;
                }
            };
            let n = match read {
                Err(_) => {
                    tracing::info!("client timed out");
                    session.abort();
                    return close_with(stream, Reply::timeout(&host)).await;
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if session.in_message() {
                        tracing::info!("client vanished during message content; nothing queued");
                    }
                    session.abort();
                    return DriveEnd::Closed;
                }
                Ok(Ok(n)) => n,
            };
            tracing::trace!(bytes = n, "read");
            let flow = session.ingest(&mut input, &mut out).await;
            if write_out(&mut stream, &mut out).await.is_err() {
                session.abort();
                return DriveEnd::Closed;
            }
            if input.is_empty() && input.capacity() > 4 * READ_CHUNK {
                input = Vec::new();
            }
            match flow {
                Flow::Continue => {}
                Flow::StartTls => return DriveEnd::StartTls(stream),
                Flow::Close => {
                    let _ = stream.shutdown().await;
                    return DriveEnd::Closed;
                }
            }
        }
    }
}

/// Resolves once shutdown has been asked for (at once if it already was).
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = async {
        stream.write_all(out).await?;
        stream.flush().await
    };
    let r = tokio::time::timeout(Duration::from_secs(60), r)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")));
    out.clear();
    r
}

async fn close_with<S: AsyncWrite + Unpin>(mut stream: S, reply: Reply) -> DriveEnd<S> {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = write_out(&mut stream, &mut out).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    DriveEnd::Closed
}
