//! Assembling and running a server from a configuration: the directory, the spool, the
//! TLS acceptors, the listeners and the queue runner; running it until SIGTERM or Ctrl-C
//! (for `serve` and `demo`); and shutting it all down in order.

use crate::config::Config;
use crate::directory::Directory;
use crate::listener::{accept_loop, EndpointRuntime, Shared};
use crate::queue::QueueRunner;
use crate::queue::Spool;
use crate::usage::store::{Retention, SqliteUsageStore};
use crate::usage::Recorder;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started server.
pub struct RunningServer {
    /// Every bound address, with its endpoint name (port 0 resolved).
    pub listeners: Vec<(String, SocketAddr)>,
    pub config: Arc<Config>,
    pub directory: Directory,
    pub spool: Arc<Spool>,
    shared: Arc<Shared>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: watch::Sender<bool>,
    stop_runner: watch::Sender<bool>,
    stop_usage: watch::Sender<bool>,
    usage_writer: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    runner: JoinHandle<()>,
}

/// Opens everything and starts listening. Errors say which piece failed and why.
pub async fn start(config: Arc<Config>) -> anyhow::Result<RunningServer> {
    start_with_clock(config, crate::clock::system_clock()).await
}

/// As [`start`], with the clock that schedules and opt-in end dates follow.
pub async fn start_with_clock(config: Arc<Config>, clock: crate::clock::Clock) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    // Before anything is touched: opening the spool discards unacknowledged messages,
    // which would be another running server's messages in flight.
    crate::queue::ops::refuse_if_running(&config.control_socket()).await?;
    let directory = Directory::open(&config.directory_path())
        .await
        .with_context(|| format!("cannot open the directory {}", config.directory_path().display()))?
        .with_lookup_cache(std::time::Duration::from_secs(config.directory.cache_ttl))
        .with_clock(clock.clone());
    let (spool, new_messages) =
        Spool::open(&config.spool_dir()).with_context(|| format!("cannot open the spool {}", config.spool_dir().display()))?;
    // Bind first: replies name the ports really bound (port 0 resolved).
    let mut endpoints = config.endpoints.clone();
    let mut sockets = Vec::new();
    for (i, ep) in endpoints.iter_mut().enumerate() {
        for addr in ep.listen.iter_mut() {
            let listener = tokio::net::TcpListener::bind(*addr)
                .await
                .with_context(|| format!("endpoint {}: cannot listen on {addr}", ep.name))?;
            *addr = listener.local_addr()?;
            sockets.push((i, listener));
        }
    }
    let endpoints = Arc::new(endpoints);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let ctx = Arc::new(crate::session::SessionContext {
        config: config.clone(),
        endpoints: endpoints.clone(),
        directory: directory.clone(),
        spool: spool.clone(),
        clock,
        guard: Arc::new(crate::guard::Guard::new(config.auth_limits.clone(), &metrics)),
        metrics: metrics.clone(),
    });
    let (stop_usage, stop_usage_rx) = watch::channel(false);
    let (recorder, usage_writer) = start_usage(&config, stop_usage_rx, ctx.clock.clone()).await?;
    let ctx_clock = ctx.clock.clone();
    let shared = Shared::new(ctx, recorder);
    let (shutdown, shutdown_rx) = watch::channel(false);

    let (keys, cert_kinds) = crate::tls::load_keys(&config.certificates).context("TLS certificates")?;
    let runtimes = endpoints
        .iter()
        .map(|ep| {
            let tls = crate::tls::EndpointTls::new(&config.certificates, &keys, cert_kinds, &ep.tls_versions, &ep.tls)
                .with_context(|| format!("endpoint {}: TLS configuration", ep.name))?;
            Ok(Arc::new(EndpointRuntime { config: Arc::new(ep.clone()), tls }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bound = sockets.into_iter().map(|(i, l)| (runtimes[i].clone(), l));
    let mut listeners = Vec::new();
    let mut tasks = Vec::new();
    for (runtime, listener) in bound {
        let addr = listener.local_addr()?;
        let ep = &runtime.config;
        tracing::info!(endpoint = %ep.name, %addr, mode = ?ep.tls_mode, versions = ?ep.tls_versions, legacy_tls = ?ep.legacy_tls, "listening");
        listeners.push((ep.name.clone(), addr));
        tasks.push(tokio::spawn(accept_loop(listener, runtime, shared.clone(), shutdown_rx.clone())));
    }
    // The runner stops after the sessions, so that it delivers what they still accept.
    let (stop_runner, stop_runner_rx) = watch::channel(false);
    let (scan_tx, scan_rx) = tokio::sync::mpsc::channel(16);
    let runner = start_runner(&config, &spool, &directory, &ctx_clock, new_messages, (scan_tx.clone(), scan_rx), stop_runner_rx, metrics.clone()).await?;
    metrics.register(shared.tls_counters.family());
    metrics.register(shared.recorder.family());
    if let Some(admin) = &config.admin {
        let ops = crate::ops::Ops::new(config.clone(), directory.clone(), Some(spool.clone()), crate::ops::Notifier::InProcess(scan_tx), ctx_clock.clone());
        let (addr, task) = start_admin(admin, &keys, ops, metrics.clone(), shutdown_rx.clone()).await?;
        listeners.push(("admin".to_string(), addr));
        tasks.push(task);
    }
    Ok(RunningServer { listeners, config, directory, spool, shared, metrics, shutdown, stop_runner, stop_usage, usage_writer, tasks, runner })
}

/// Binds the admin listener and serves the API on it.
async fn start_admin(
    admin: &crate::config::AdminConfig,
    keys: &[Arc<rustls::sign::CertifiedKey>],
    ops: crate::ops::Ops,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(admin.listen).await.with_context(|| format!("admin: cannot listen on {}", admin.listen))?;
    let addr = listener.local_addr()?;
    let tls = if admin.tls {
        // Mozilla's intermediate profile, TLS 1.2 and 1.3, as on a standard endpoint.
        use crate::tls::{profile::{Profile, TlsPolicy}, TlsVersion};
        let policy = TlsPolicy::new(&[TlsVersion::Tls12, TlsVersion::Tls13], Some(Profile::Intermediate), None, None)
            .map_err(|e| anyhow::anyhow!("admin TLS: {}: {}", e.key, e.problem))?;
        let ids: Vec<u16> = policy.tls13.iter().chain(&policy.tls12).filter(|s| s.rustls_implements()).map(|s| s.id).collect();
        let cfg = crate::tls::rustls_config(keys, &ids).context("admin TLS configuration")?;
        Some(tokio_rustls::TlsAcceptor::from(cfg))
    } else {
        None
    };
    let state = Arc::new(crate::api::ApiState { ops, metrics, metrics_public: admin.metrics_public, openapi: crate::api::openapi_document() });
    tracing::info!(%addr, tls = admin.tls, "admin API listening");
    Ok((addr, crate::api::spawn(listener, state, admin, tls, shutdown)))
}

/// Starts the queue runner and its control socket.
async fn start_runner(
    config: &Arc<Config>,
    spool: &Arc<Spool>,
    directory: &Directory,
    clock: &crate::clock::Clock,
    new_messages: tokio::sync::mpsc::UnboundedReceiver<String>,
    (scan_tx, scan_rx): (tokio::sync::mpsc::Sender<crate::queue::ScanRequest>, tokio::sync::mpsc::Receiver<crate::queue::ScanRequest>),
    stop: watch::Receiver<bool>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<JoinHandle<()>> {
    let control = crate::queue::ops::serve_control(&config.control_socket(), scan_tx, directory.clone(), stop.clone())
        .await
        .with_context(|| format!("control socket {}", config.control_socket().display()))?;
    let runner = QueueRunner::new(spool.clone(), config.clone(), directory.clone(), clock.clone(), metrics);
    Ok(tokio::spawn(async move {
        runner.run(new_messages, scan_rx, stop).await;
        let _ = control.await;
    }))
}

/// Opens the usage store and starts its writer, unless `usage.enabled = false`.
async fn start_usage(
    config: &Config,
    stop: watch::Receiver<bool>,
    clock: crate::clock::Clock,
) -> anyhow::Result<(Arc<Recorder>, Option<JoinHandle<()>>)> {
    if !config.usage.enabled {
        return Ok((Recorder::disabled(), None));
    }
    let store = SqliteUsageStore::open(&config.usage_path())
        .await
        .with_context(|| format!("cannot open the usage store {}", config.usage_path().display()))?;
    let (recorder, rx) = Recorder::new(config.usage.buffer);
    let retention = Retention { raw_days: config.usage.raw_retention_days, rollup_days: config.usage.rollup_retention_days };
    let writer = tokio::spawn(crate::usage::run_writer(Arc::new(store), rx, stop, retention, clock));
    Ok((recorder, Some(writer)))
}

impl RunningServer {
    /// The usage recorder (events queued and dropped).
    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Counts of TLS attempts by outcome.
    pub fn tls_counters(&self) -> &crate::listener::TlsCounters {
        &self.shared.tls_counters
    }

    /// The first address of the named endpoint.
    pub fn addr(&self, endpoint: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == endpoint).map(|(_, a)| *a)
    }

    /// Graceful shutdown: stop accepting, let sessions finish or tell them 421, let the
    /// queue runner finish the delivery in flight. Takes at most `queue.shutdown_grace`
    /// in all; what is still queued then is delivered at the next start.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.config.queue.shutdown_grace);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let max = self.config.limits.max_sessions as u32;
        match tokio::time::timeout_at(deadline, self.shared.sessions.acquire_many(max)).await {
            Ok(_) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!("sessions still open after the grace period; closing them"),
        }
        let _ = self.stop_runner.send(true);
        if tokio::time::timeout_at(deadline, self.runner).await.is_err() {
            tracing::warn!("queue runner did not stop within the grace period");
        }
        // Sessions have ended: store the last usage events.
        let _ = self.stop_usage.send(true);
        if let Some(w) = self.usage_writer {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }
}

/// Sets up logging to stderr with the configured filter (`RUST_LOG` wins).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Starts a server, prints its listeners, and runs it until SIGTERM or Ctrl-C.
pub async fn run_until_signal(
    config: Arc<Config>,
    on_ready: impl FnOnce(&RunningServer),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server = start(config).await?;
    for (name, addr) in &server.listeners {
        println!("listening {name} {addr}");
    }
    on_ready(&server);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => tracing::warn!("SIGHUP: live reload is not available yet; restart to apply configuration changes (directory changes apply at once)"),
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
