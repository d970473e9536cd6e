//! Accepting connections and driving sessions over them.
//!
//! One accept loop per listen address. Each connection gets a concurrency permit (node-wide
//! and per client IP; over the limit it is told `421` and closed), TCP_NODELAY (replies go
//! out in one write, no delayed-ACK stalls), a total session deadline, and a task that
//! moves bytes between the socket and the sans-I/O [`Session`].
//!
//! TLS, at accept (implicit) or after STARTTLS's `220`: the ClientHello is read and parsed
//! first ([`crate::tls::hello`]); [`policy::before_handshake`] may refuse it with a
//! protocol_version alert; [`crate::tls::choose_stack`] hands it to rustls or OpenSSL; after
//! the handshake [`policy::after_handshake`] serves the session or answers `421 4.7.66`.
//! After a STARTTLS the plain session is dropped and a new one starts inside TLS (RFC 3207
//! §4.2). On shutdown, sessions waiting for a command get `421 4.3.2`; a message being
//! received is allowed to finish first.

use crate::config::{Endpoint, Pregreet, TlsMode};
use crate::policy::{self, HelloVerdict, SessionVerdict};
use crate::reply::Reply;
use crate::session::{ConnectionInfo, Flow, Session, SessionContext, SessionUsage};
use crate::usage::{Outcome, Recorder, UsageEvent};
use prometheus::IntCounter;
use crate::tls::hello::{read_client_hello, HelloError, HelloInfo, Prefixed};
use crate::tls::{legacy::openssl_facts, rustls_facts, Refusal, Route, Stack, TlsFacts, HANDSHAKE_FAILURE_ALERT, INAPPROPRIATE_FALLBACK_ALERT, PROTOCOL_VERSION_ALERT};
use rand::SeedableRng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
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

/// An endpoint ready to serve: its configuration and its TLS acceptors.
pub struct EndpointRuntime {
    pub config: Arc<Endpoint>,
    pub tls: crate::tls::EndpointTls,
}

impl EndpointRuntime {
    fn name(&self) -> &str {
        &self.config.name
    }
}

/// Counts of TLS attempts by what became of them: `mailgate_tls_attempts_total{result}`.
pub struct TlsCounters {
    family: prometheus::IntCounterVec,
    pub hello_timeout: IntCounter,
    pub hello_closed: IntCounter,
    pub hello_not_tls: IntCounter,
    pub hello_sslv2: IntCounter,
    pub hello_oversized: IntCounter,
    /// TLS records that did not hold a whole ClientHello (served by rustls if it can).
    pub hello_unparsed: IntCounter,
    pub refused_at_handshake: IntCounter,
    /// Hellos that offered no suite the endpoint serves (answered handshake_failure).
    pub refused_no_shared_suite: IntCounter,
    pub handshake_failed: IntCounter,
    pub explained_421: IntCounter,
    pub served_rustls: IntCounter,
    pub served_openssl: IntCounter,
}

impl Default for TlsCounters {
    fn default() -> Self {
        let family = crate::metrics::family("mailgate_tls_attempts_total", "TLS attempts by what became of them.", "result");
        let c = |name: &str| family.with_label_values(&[name]);
        TlsCounters {
            hello_timeout: c("hello_timeout"),
            hello_closed: c("hello_closed"),
            hello_not_tls: c("hello_not_tls"),
            hello_sslv2: c("hello_sslv2"),
            hello_oversized: c("hello_oversized"),
            hello_unparsed: c("hello_unparsed"),
            refused_at_handshake: c("refused_at_handshake"),
            refused_no_shared_suite: c("refused_no_shared_suite"),
            handshake_failed: c("handshake_failed"),
            explained_421: c("explained_421"),
            served_rustls: c("served_rustls"),
            served_openssl: c("served_openssl"),
            family,
        }
    }
}

impl TlsCounters {
    pub fn get(c: &IntCounter) -> u64 {
        c.get()
    }

    fn bump(c: &IntCounter) {
        c.inc();
    }

    /// The counters' family, for the metrics registry.
    pub fn family(&self) -> prometheus::IntCounterVec {
        self.family.clone()
    }

    fn hello_error(&self, e: &HelloError) {
        Self::bump(match e {
            HelloError::Timeout => &self.hello_timeout,
            HelloError::Closed => &self.hello_closed,
            HelloError::NotTls => &self.hello_not_tls,
            HelloError::SslV2 => &self.hello_sslv2,
            HelloError::Oversized => &self.hello_oversized,
            HelloError::Unparsed => &self.hello_unparsed,
        });
    }
}

/// What all accept loops of a server share.
pub struct Shared {
    pub ctx: Arc<SessionContext>,
    pub sessions: Arc<Semaphore>,
    pub tls_counters: TlsCounters,
    /// Where each connection's usage event goes.
    pub recorder: Arc<Recorder>,
    /// Sessions per address and subnet, and connections per address this minute.
    occupancy: Mutex<Occupancy>,
    counter: AtomicU64,
    /// Unique to this run: with the node and the connection counter, the key of a session
    /// recorded before it ends (a restart must not reuse an earlier run's keys).
    run_id: String,
    /// The random source behind `reject_percent` (seeded by `tls.schedule_seed`).
    rng: Mutex<rand::rngs::StdRng>,
}

impl Shared {
    pub fn new(ctx: Arc<SessionContext>, recorder: Arc<Recorder>) -> Arc<Shared> {
        let max = ctx.config.limits.max_sessions;
        let rng = match ctx.config.schedule_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        Arc::new(Shared {
            ctx,
            sessions: Arc::new(Semaphore::new(max)),
            tls_counters: TlsCounters::default(),
            recorder,
            occupancy: Mutex::new(Occupancy::default()),
            counter: AtomicU64::new(0),
            run_id: format!("{:x}{:08x}", chrono::Utc::now().timestamp_micros(), rand::random::<u32>()),
            rng: Mutex::new(rng),
        })
    }

    /// The one place a connection's outcome is counted: the metrics, then the usage
    /// store (through the recorder), from the same event.
    fn session_ended(&self, event: UsageEvent) {
        self.ctx.metrics.session_ended(&event);
        self.recorder.record(event, (self.ctx.clock)().timestamp());
    }

    /// A session's outcome known before it ends (a refusal at AUTH, messages of a long
    /// session): stored now, replaced by the session's later events (same key), counted in
    /// the metrics once, at the end.
    fn session_progress(&self, event: UsageEvent) {
        self.recorder.record(event, (self.ctx.clock)().timestamp());
    }

    /// A place for a new connection from `ip`, or which limit refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Throttle> {
        let l = &self.ctx.config.limits;
        let ip = ip.to_canonical();
        let subnet = crate::guard::buckets(ip).1;
        let mut o = self.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        if l.max_connections_per_ip_per_minute > 0 && !o.count_connection(ip, Instant::now(), l.max_connections_per_ip_per_minute) {
            return Err(Throttle::Rate);
        }
        let permit = self.sessions.clone().try_acquire_owned().map_err(|_| Throttle::Concurrent)?;
        if o.per_ip.get(&ip).copied().unwrap_or(0) >= l.max_sessions_per_ip
            || o.per_subnet.get(&subnet).copied().unwrap_or(0) >= l.max_sessions_per_subnet
        {
            return Err(Throttle::Concurrent);
        }
        *o.per_ip.entry(ip).or_insert(0) += 1;
        *o.per_subnet.entry(subnet).or_insert(0) += 1;
        Ok(Admission { _permit: permit, shared: self.clone(), ip, subnet })
    }
}

/// Why a connection was refused before its session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Throttle {
    /// Over `max_sessions`, `max_sessions_per_ip` or `max_sessions_per_subnet`.
    Concurrent,
    /// Over `max_connections_per_ip_per_minute`.
    Rate,
}

/// The addresses' and subnets' sessions, and each address's connections this minute.
#[derive(Default)]
struct Occupancy {
    per_ip: HashMap<IpAddr, usize>,
    per_subnet: HashMap<ipnet::IpNet, usize>,
    /// When the address's current minute began, and its connections since.
    rate: HashMap<IpAddr, (Instant, u32)>,
}

impl Occupancy {
    /// Entries of `rate` kept before the stale ones are dropped (a flood of addresses).
    const MAX_RATE_ENTRIES: usize = 100_000;

    /// Counts a connection of `ip` in its current minute; false when over `limit`.
    fn count_connection(&mut self, ip: IpAddr, now: Instant, limit: u32) -> bool {
        if self.rate.len() >= Self::MAX_RATE_ENTRIES && !self.rate.contains_key(&ip) {
            self.rate.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let (start, n) = self.rate.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            (*start, *n) = (now, 0);
        }
        *n = n.saturating_add(1);
        *n <= limit
    }
}

/// Holds a session's place in the limits; released on drop.
struct Admission {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    ip: IpAddr,
    subnet: ipnet::IpNet,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut o = self.shared.occupancy.lock().unwrap_or_else(|p| p.into_inner());
        release(&mut o.per_ip, &self.ip);
        release(&mut o.per_subnet, &self.subnet);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
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
        let admission = match shared.admit(peer.ip()) {
            Ok(a) => a,
            Err(throttle) => {
                // Still one usage event per connection: a refused device is one to know about.
                let mut event = UsageEvent::new(shared.ctx.config.node_name(), &endpoint.config.name, peer.ip());
                event.outcome = Outcome::Throttled;
                tracing::info!(peer = %peer, endpoint = %endpoint.name(), limit = ?throttle, "connection refused by a limit");
                shared.session_ended(event);
                tokio::spawn(refuse_busy(stream, endpoint.config.tls_mode, throttle));
                continue;
            }
        };
        let id = shared.counter.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("session", id, peer = %peer, endpoint = %endpoint.name());
        let progress = Progress { key: format!("{}/{}/{id}", shared.ctx.config.node_name(), shared.run_id), ..Progress::default() };
        let conn = Connection { endpoint: endpoint.clone(), shared: shared.clone(), peer, shutdown: shutdown.clone(), offered: Vec::new(), progress };
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
async fn refuse_busy(mut stream: TcpStream, mode: TlsMode, throttle: Throttle) {
    if mode == TlsMode::Starttls {
        let mut out = Vec::new();
        match throttle {
            Throttle::Concurrent => Reply::too_many_sessions(),
            Throttle::Rate => Reply::too_many_connections(),
        }
        .write_to(&mut out);
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
    /// The suites the ClientHello offered (empty until one is read), for the usage event.
    offered: Vec<u16>,
    progress: Progress,
}

/// How long a session's new messages wait before they are recorded while it goes on: a
/// short session (the usual device: one message, QUIT) is recorded once, at its end.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);

/// What of a session in progress has been recorded (see `Shared::session_progress`).
#[derive(Default)]
struct Progress {
    /// The session's key in the usage store.
    key: String,
    /// The connection's event as the TLS handshake left it (none before: nothing to record).
    base: Option<UsageEvent>,
    /// The outcome and message count last recorded.
    sent: Option<(Outcome, u32)>,
    /// Since when new messages wait to be recorded.
    pending_since: Option<Instant>,
}

impl Connection {
    fn info(&self) -> ConnectionInfo {
        ConnectionInfo { endpoint: self.endpoint.config.clone(), peer: self.peer }
    }

    fn limits(&self) -> &crate::config::Limits {
        &self.shared.ctx.config.limits
    }

    fn greet_wait(&self) -> Duration {
        Duration::from_secs(self.limits().greet_wait)
    }

    /// Serves the connection, then records its usage event (whatever way it ended).
    async fn run(mut self, stream: TcpStream) {
        let config = &self.shared.ctx.config;
        let mut event = UsageEvent::new(config.node_name(), &self.endpoint.config.name, self.peer.ip());
        self.serve(stream, &mut event).await;
        event.keep_offered_ciphers(&self.offered);
        if self.progress.sent.is_some() {
            event.session = Some(self.progress.key.clone());
        }
        self.shared.session_ended(event);
    }

    /// After each command: a refusal is recorded at once; new messages after
    /// [`PROGRESS_DELAY`] (`due`: the delay has passed).
    fn note_progress(&mut self, session: &Session, due: bool) {
        let Some(base) = &self.progress.base else { return };
        let mut e = base.clone();
        merge_session(&mut e, session.usage());
        let state = (e.outcome, e.messages);
        if self.progress.sent == Some(state) {
            self.progress.pending_since = None;
            return;
        }
        let refused = !matches!(e.outcome, Outcome::Delivered | Outcome::Other);
        if !(refused || (e.messages > 0 && due)) {
            if e.messages > 0 && self.progress.pending_since.is_none() {
                self.progress.pending_since = Some(Instant::now());
            }
            return;
        }
        e.keep_offered_ciphers(&self.offered);
        e.session = Some(self.progress.key.clone());
        self.shared.session_progress(e);
        self.progress.sent = Some(state);
        self.progress.pending_since = None;
    }

    async fn serve(&mut self, stream: TcpStream, event: &mut UsageEvent) {
        let deadline = Instant::now() + Duration::from_secs(self.limits().session_timeout);
        tracing::debug!("connected");
        let mut plain = match self.endpoint.config.tls_mode {
            TlsMode::Implicit => stream,
            TlsMode::Starttls => {
                let mut session = Session::new(self.shared.ctx.clone(), self.info(), None);
                let end = self.drive(stream, &mut session, true, deadline).await;
                merge_session(event, session.usage());
                match end {
                    DriveEnd::StartTls(s) => s,
                    DriveEnd::Closed => return,
                }
            }
        };
        let hello_timeout = Duration::from_secs(self.limits().tls_hello_timeout);
        let (prefix, hello) = read_client_hello(&mut plain, hello_timeout).await;
        let hello = match hello {
            Ok(h) => Some(h),
            Err(e) => {
                self.shared.tls_counters.hello_error(&e);
                if e != HelloError::Unparsed {
                    tracing::info!(reason = %e, bytes = prefix.len(), "TLS attempt without a usable ClientHello; closed");
                    // Close our side first: the client sees an orderly end, not a reset.
                    let _ = tokio::time::timeout(Duration::from_secs(5), plain.shutdown()).await;
                    return;
                }
                tracing::info!(reason = %e, "ClientHello not parseable from one record; trying rustls");
                None
            }
        };
        if let Some(h) = &hello {
            event.offered_max = Some(h.offered_max.name().to_string());
            self.offered = h.ciphers.clone();
            event.sni = h.sni.as_deref().map(crate::usage::printable);
            event.fingerprint = Some(h.fingerprint.clone());
        }
        let today = (self.shared.ctx.clock)().date_naive();
        let offered = hello.as_ref().map(|h| h.offered_max);
        if policy::before_handshake(&self.endpoint.config, offered, today) == HelloVerdict::Refuse {
            TlsCounters::bump(&self.shared.tls_counters.refused_at_handshake);
            event.outcome = Outcome::RefusedAtHandshake;
            tracing::info!(
                offered_max = offered.map(|v| v.name()), fingerprint = hello.as_ref().map(|h| h.fingerprint.as_str()),
                sni = hello.as_ref().and_then(|h| h.sni.as_deref()), "legacy TLS refused at handshake"
            );
            send_alert(&mut plain, &PROTOCOL_VERSION_ALERT).await;
            return;
        }
        let route = match hello.as_ref().map_or(Ok(Route::Rustls), |h| self.endpoint.tls.route(h)) {
            Ok(route) => route,
            Err(refusal) => return self.refuse_hello(refusal, hello.as_ref(), &mut plain, event).await,
        };
        let io = Prefixed::new(prefix, plain);
        let handshake = Duration::from_secs(self.limits().tls_handshake_timeout);
        let tls = &self.endpoint.tls;
        let started = Instant::now();
        match route {
            Route::Rustls => {
                let r = tokio::time::timeout(handshake, tls.rustls.accept(io)).await;
                let Some(stream) = self.handshake_result(r.map(|x| x.map_err(|e| e.to_string()))) else { return };
                self.shared.ctx.metrics.handshake("rustls", started.elapsed());
                let facts = rustls_facts(stream.get_ref().1, hello.as_ref());
                self.serve_tls(stream, facts, Stack::Rustls, false, deadline, event).await;
            }
            Route::OpenSsl | Route::Explain => {
                let explain_only = route == Route::Explain;
                let acceptor = match (&tls.explain, explain_only) {
                    (Some(explain), true) => explain.clone(),
                    _ => tls.openssl.clone(),
                };
                let r = tokio::time::timeout(handshake, openssl_accept(&acceptor, io)).await;
                let Some(stream) = self.handshake_result(r) else { return };
                self.shared.ctx.metrics.handshake("openssl", started.elapsed());
                let facts = openssl_facts(stream.ssl(), hello.as_ref());
                self.serve_tls(stream, facts, Stack::OpenSsl, explain_only, deadline, event).await;
            }
        }
    }

    /// A hello refused before any handshake: counted, recorded, logged with what it
    /// offered, answered with the fatal alert that says why.
    async fn refuse_hello(&self, refusal: Refusal, hello: Option<&HelloInfo>, plain: &mut TcpStream, event: &mut UsageEvent) {
        let counters = &self.shared.tls_counters;
        let (counter, outcome, alert, why) = match refusal {
            Refusal::NoSharedSuite => (
                &counters.refused_no_shared_suite,
                Outcome::NoSharedCipher,
                HANDSHAKE_FAILURE_ALERT,
                "TLS refused: no cipher suite the client offers is served here",
            ),
            Refusal::InappropriateFallback => (
                &counters.refused_at_handshake,
                Outcome::RefusedAtHandshake,
                INAPPROPRIATE_FALLBACK_ALERT,
                "TLS refused: a fallback hello (TLS_FALLBACK_SCSV) below the endpoint's highest version",
            ),
        };
        TlsCounters::bump(counter);
        event.outcome = outcome;
        tracing::info!(
            offered_max = hello.map(|h| h.offered_max.name()),
            offered_ciphers = hello.map(|h| crate::usage::offered_ciphers(&h.ciphers)),
            fingerprint = hello.map(|h| h.fingerprint.as_str()),
            "{why}"
        );
        send_alert(plain, &alert).await;
    }

    fn handshake_result<T>(&self, r: Result<Result<T, String>, tokio::time::error::Elapsed>) -> Option<T> {
        match r {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                TlsCounters::bump(&self.shared.tls_counters.handshake_failed);
                tracing::info!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                TlsCounters::bump(&self.shared.tls_counters.handshake_failed);
                tracing::info!("TLS handshake timed out");
                None
            }
        }
    }

    /// After the handshake: explain and close, or run the session inside TLS. A session
    /// made by the explain-only acceptor is always answered `421` and closed.
    async fn serve_tls<S: SessionIo>(
        &mut self,
        mut tls: S,
        facts: TlsFacts,
        stack: Stack,
        explain_only: bool,
        deadline: Instant,
        event: &mut UsageEvent,
    ) {
        event.version = Some(facts.version.name().to_string());
        event.cipher = Some(facts.cipher.clone());
        event.sni = facts.sni.as_deref().map(crate::usage::printable).or(event.sni.take());
        tracing::info!(
            stack = ?stack, tls_version = %facts.version, cipher = %facts.cipher, sni = facts.sni.as_deref(),
            offered_max = facts.offered_max.map(|v| v.name()), fingerprint = facts.fingerprint.as_deref(), "TLS established"
        );
        let today = (self.shared.ctx.clock)().date_naive();
        // The shared random source is locked only if a reject_percent step draws.
        let mut rng = LockedRng(&self.shared.rng);
        let mut verdict = policy::after_handshake(&self.endpoint.config, &self.shared.ctx.endpoints, facts.version, today, &mut rng);
        if explain_only && verdict == SessionVerdict::Serve {
            // Not reachable by construction (that acceptor stops at TLS 1.1, which such an
            // endpoint does not list); if it were, no mail passes on its suites.
            verdict = SessionVerdict::Explain(Reply::legacy_tls_not_supported(None));
        }
        let verdict_kind = match &verdict {
            SessionVerdict::Defer(_) => VerdictKind::Defer,
            _ => VerdictKind::Other,
        };
        match verdict {
            SessionVerdict::Serve => {}
            SessionVerdict::Explain(reply) | SessionVerdict::Defer(reply) => {
                event.outcome = if matches!(verdict_kind, VerdictKind::Defer) { Outcome::DeferredBySchedule } else { Outcome::Explained421 };
                TlsCounters::bump(&self.shared.tls_counters.explained_421);
                tracing::info!(tls_version = %facts.version, reply = %reply.to_text().trim_end(), "TLS session answered 421");
                close_with(tls, reply).await;
                return;
            }
        }
        TlsCounters::bump(match stack {
            Stack::Rustls => &self.shared.tls_counters.served_rustls,
            Stack::OpenSsl => &self.shared.tls_counters.served_openssl,
        });
        let implicit = self.endpoint.config.tls_mode == TlsMode::Implicit;
        self.progress.base = Some(event.clone());
        let mut session = Session::new(self.shared.ctx.clone(), self.info(), Some(facts));
        // RFC 3207 §4.2: no new greeting after STARTTLS; implicit TLS greets inside TLS.
        if implicit {
            let _ = self.drive(&mut tls, &mut session, true, deadline).await;
        } else {
            let _ = self.drive(&mut tls, &mut session, false, deadline).await;
        }
        merge_session(event, session.usage());
        tracing::debug!(messages = session.messages(), "session ended");
    }

    /// Moves bytes between `stream` and `session` until the session closes or asks for TLS.
    async fn drive<S: SessionIo>(
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
            if self.limits().pregreet == Pregreet::Refuse && talked_first(&mut stream, &mut input, self.greet_wait()).await {
                tracing::info!(bytes = input.len(), "client sent data before the greeting; refused");
                session.cut(Outcome::Pregreet);
                return close_with(stream, Reply::pregreet()).await;
            }
            session.greeting().write_to(&mut out);
            if write_out(&mut stream, &mut out).await.is_err() {
                return DriveEnd::Closed;
            }
        }
        // One timer for the session's deadline, not one per read.
        let session_deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(session_deadline);
        let mut content = ContentPace::default();
        loop {
            let in_message = session.in_message();
            if input.capacity() - input.len() < READ_CHUNK {
                input.reserve(READ_CHUNK);
            }
            let progress_due = self.progress.pending_since.map(|t| t + PROGRESS_DELAY);
            let pace_due = content.deadline(in_message, self.limits());
            let read = tokio::select! {
                r = tokio::time::timeout(session.read_timeout(), stream.read_buf(&mut input)) => r,
                _ = tokio::time::sleep_until(pace_due.unwrap_or_else(Instant::now)), if pace_due.is_some() => {
                    let rate = self.limits().min_data_rate;
                    tracing::info!(bytes = content.bytes, rate, "message content below the minimum rate; closed, nothing queued");
                    session.cut(Outcome::TooSlow);
                    return close_with(stream, Reply::data_too_slow(&host, rate)).await;
                }
                _ = tokio::time::sleep_until(progress_due.unwrap_or_else(Instant::now)), if progress_due.is_some() => {
                    self.note_progress(session, true);
                    continue;
                }
                _ = shutdown_requested(&mut self.shutdown), if !in_message => {
                    session.abort();
                    return close_with(stream, Reply::shutting_down(&host)).await;
                }
                _ = &mut session_deadline => {
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
            if in_message {
                content.bytes += n as u64;
            }
            tracing::trace!(bytes = n, "read");
            let flow = session.ingest(&mut input, &mut out).await;
            self.note_progress(session, false);
            if let Flow::Close = flow {
                if finish(&mut stream, &mut out).await.is_err() {
                    session.abort();
                }
                return DriveEnd::Closed;
            }
            if write_out(&mut stream, &mut out).await.is_err() {
                session.abort();
                return DriveEnd::Closed;
            }
            if input.is_empty() && input.capacity() > 4 * READ_CHUNK {
                input = Vec::new();
            }
            if let Flow::StartTls = flow {
                return DriveEnd::StartTls(stream);
            }
        }
    }
}

/// RFC 5321 §3.1: the client waits for the 220 greeting. Watches for input for `wait`
/// (zero: takes only what has already arrived, without waiting); true when the client
/// talked first. What it read stays in `input`.
async fn talked_first<S: AsyncRead + Unpin>(stream: &mut S, input: &mut Vec<u8>, wait: Duration) -> bool {
    let read = if wait.is_zero() {
        tokio::select! {
            biased;
            r = stream.read_buf(input) => Some(r),
            _ = std::future::ready(()) => None,
        }
    } else {
        tokio::time::timeout(wait, stream.read_buf(input)).await.ok()
    };
    matches!(read, Some(Ok(n)) if n > 0)
}

/// The pace of the message content being received: like Postfix's `smtpd_min_data_rate`,
/// content may take `data_timeout` plus one second per `min_data_rate` octets received,
/// so a client trickling a byte just inside each read timeout is still cut.
#[derive(Default)]
struct ContentPace {
    started: Option<Instant>,
    bytes: u64,
}

impl ContentPace {
    /// When the content now being received is overdue; `None` outside content or with no
    /// minimum rate. Starts counting at the first read of a message (or BDAT chunk).
    fn deadline(&mut self, in_message: bool, limits: &crate::config::Limits) -> Option<Instant> {
        if !in_message || limits.min_data_rate == 0 {
            *self = ContentPace::default();
            return None;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let allowed = Duration::from_secs(limits.data_timeout) + Duration::from_secs_f64(self.bytes as f64 / limits.min_data_rate as f64);
        Some(started + allowed)
    }
}

/// Resolves once shutdown has been asked for (at once if it already was).
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The server's random source, locked per draw.
struct LockedRng<'a>(&'a Mutex<rand::rngs::StdRng>);

impl rand::RngCore for LockedRng<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).try_fill_bytes(dest)
    }
}

enum VerdictKind {
    Defer,
    Other,
}

/// Copies what a session learnt into the connection's usage event.
fn merge_session(event: &mut UsageEvent, usage: &SessionUsage) {
    if usage.ehlo.is_some() {
        event.ehlo = usage.ehlo.clone();
    }
    if usage.user.is_some() {
        event.user = usage.user.clone();
        event.tenant = usage.tenant.clone();
    }
    event.messages += usage.messages;
    event.bytes += usage.bytes;
    event.outcome = if event.messages > 0 { Outcome::Delivered } else { usage.outcome() };
}

/// Refuses a hello before any handshake: a fatal alert, then our side closed (the client
/// sees an orderly end, not a reset).
async fn send_alert(plain: &mut TcpStream, alert: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        plain.write_all(alert).await?;
        plain.shutdown().await
    })
    .await;
}

/// The OpenSSL handshake over the replayed stream.
async fn openssl_accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &openssl::ssl::SslAcceptor,
    io: S,
) -> Result<tokio_openssl::SslStream<S>, String> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, io).map_err(|e| e.to_string())?;
    Pin::new(&mut stream).accept().await.map_err(|e| e.to_string())?;
    Ok(stream)
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

async fn close_with<S: SessionIo>(mut stream: S, reply: Reply) -> DriveEnd<S> {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = finish(&mut stream, &mut out).await;
    DriveEnd::Closed
}

/// Writes the session's last reply and ends the stream (TLS close_notify, then TCP FIN).
/// Under rustls the reply and close_notify leave in one write instead of two.
/// The error is the reply's write's; the shutdown's is not reported.
async fn finish<S: SessionIo>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    let taken = stream.queue_last(out);
    out.drain(..taken);
    let written = write_out(stream, out).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    written
}

/// A stream a session runs over: plain TCP, rustls or OpenSSL.
pub(crate) trait SessionIo: AsyncRead + AsyncWrite + Unpin {
    /// Takes as much of the session's last reply as the TLS layer can hold, with
    /// close_notify after it when it took all, without writing to the socket: the
    /// `shutdown` that follows sends both at once. Returns the bytes taken (0: none).
    fn queue_last(&mut self, _last: &[u8]) -> usize {
        0
    }
}

impl SessionIo for TcpStream {}

impl<S: AsyncRead + AsyncWrite + Unpin> SessionIo for tokio_openssl::SslStream<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin> SessionIo for tokio_rustls::server::TlsStream<S> {
    fn queue_last(&mut self, last: &[u8]) -> usize {
        use std::io::Write;
        let conn = self.get_mut().1;
        // rustls takes plaintext up to its buffer limit and encrypts it at once; a second
        // close_notify from tokio-rustls's shutdown is a no-op in rustls.
        let taken = conn.writer().write(last).unwrap_or(0);
        if taken == last.len() {
            conn.send_close_notify();
        }
        taken
    }
}

impl<T: SessionIo + ?Sized> SessionIo for &mut T {
    fn queue_last(&mut self, last: &[u8]) -> usize {
        (**self).queue_last(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};

    /// Counts the writes that reach the stream below TLS (each one a syscall on a socket).
    struct CountWrites<S> {
        inner: S,
        writes: Arc<AtomicUsize>,
    }
    impl<S: AsyncRead + Unpin> AsyncRead for CountWrites<S> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }
    impl<S: AsyncWrite + Unpin> AsyncWrite for CountWrites<S> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            // As writev: all buffers in one call (the duplex below takes one slice).
            self.writes.fetch_add(1, Ordering::SeqCst);
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            Pin::new(&mut self.inner).poll_write(cx, &joined)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn pregreet_is_what_arrived_before_the_greeting_or_within_the_wait() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut input = Vec::new();
        // Nothing sent: no wait answers at once, a wait runs out.
        assert!(!talked_first(&mut server, &mut input, Duration::ZERO).await);
        assert!(!talked_first(&mut server, &mut input, Duration::from_millis(50)).await);
        client.write_all(b"EHLO bot\r\n").await.unwrap();
        assert!(talked_first(&mut server, &mut input, Duration::ZERO).await);
        assert_eq!(input, b"EHLO bot\r\n", "what was read stays for the session");
        // Sent during the wait.
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut input = Vec::new();
        let late = tokio::spawn(async move {
            tokio::task::yield_now().await;
            client.write_all(b"EHLO").await.unwrap();
            client
        });
        assert!(talked_first(&mut server, &mut input, Duration::from_secs(30)).await);
        drop(late.await);
    }

    #[test]
    fn content_may_take_the_data_timeout_plus_a_second_per_min_rate_octets() {
        let limits = crate::config::Limits { data_timeout: 10, min_data_rate: 500, ..Default::default() };
        let mut pace = ContentPace::default();
        assert_eq!(pace.deadline(false, &limits), None);
        let first = pace.deadline(true, &limits).unwrap();
        pace.bytes = 5000;
        assert_eq!(pace.deadline(true, &limits).unwrap() - first, Duration::from_secs(10));
        // The message ended: the next one starts from nothing.
        assert_eq!(pace.deadline(false, &limits), None);
        assert_eq!(pace.bytes, 0);
        let none = crate::config::Limits { min_data_rate: 0, ..limits };
        assert_eq!(pace.deadline(true, &none), None);
    }

    #[tokio::test]
    async fn the_last_reply_and_close_notify_leave_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::self_signed_rsa(&["localhost"], 2).unwrap();
        let pair = crate::config::CertificatePair { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        std::fs::write(&pair.cert, &cert).unwrap();
        std::fs::write(&pair.key, &key).unwrap();
        // The client: the smart-host client's configuration, trusting only this certificate.
        let roots = crate::delivery::tls_client::load_ca_file(&pair.cert).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(crate::delivery::tls_client::client_config(roots).unwrap()));
        let (keys, _) = crate::tls::load_keys(std::slice::from_ref(&pair)).unwrap();
        let suites = crate::tls::profile::TlsPolicy::new(&[crate::tls::TlsVersion::Tls12, crate::tls::TlsVersion::Tls13], None, None, None).unwrap().ids();
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::rustls_config(&keys, &suites).unwrap());

        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = CountWrites { inner: server_io, writes: writes.clone() };
        let server = tokio::spawn(async move { acceptor.accept(counted).await.unwrap() });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = connector.connect(name, client_io).await.unwrap();
        let mut server = server.await.unwrap();

        let before = writes.load(Ordering::SeqCst);
        let mut out = b"221 2.0.0 Bye\r\n".to_vec();
        finish(&mut server, &mut out).await.unwrap();
        assert_eq!(writes.load(Ordering::SeqCst) - before, 1, "221 and close_notify in one write");
        // read_to_end succeeds only if the stream ended with close_notify, not a bare EOF.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("a clean TLS close");
        assert_eq!(got, b"221 2.0.0 Bye\r\n");
    }

    #[tokio::test]
    async fn a_plain_session_gets_its_last_reply_then_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let mut out = b"421 4.3.2 Service shutting down\r\n".to_vec();
        finish(&mut server, &mut out).await.unwrap();
        assert_eq!(client.await.unwrap(), b"421 4.3.2 Service shutting down\r\n");
    }
}
