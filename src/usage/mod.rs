//! TLS usage: one event per connection, recorded off the session's critical path, kept
//! raw for `usage.raw_retention_days` and as daily rollups for `usage.rollup_retention_days`,
//! and the reports built on them (`report`).
//!
//! Sessions hand their event to [`Recorder::record`], which never waits: the event goes
//! into a bounded channel, and when it is full the event is dropped and counted. A writer
//! task takes events in batches and stores each batch in one transaction (raw rows and the
//! rollup upserts together). The store is a trait ([`store::UsageStore`]) with a SQLite
//! implementation; PostgreSQL can follow behind the same trait.

pub mod report;
pub mod store;
pub mod synthetic;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How a connection ended, as far as TLS policy and reports care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// At least one message was accepted.
    Delivered,
    /// Answered `421` after the handshake: the version is not served on the endpoint.
    #[serde(rename = "explained_421")]
    Explained421,
    /// Answered `421 4.7.66` by a `reject_percent` draw.
    DeferredBySchedule,
    /// Refused with a protocol_version alert before the handshake.
    RefusedAtHandshake,
    /// Refused with a handshake_failure alert before the handshake: no suite the client
    /// offered is served on the endpoint (its offered suites are recorded).
    NoSharedCipher,
    NotOptedIn,
    OptInExpired,
    UserOutOfScope,
    NetworkOutOfScope,
    Vetoed,
    AuthFailed,
    /// Refused at AUTH by a ban (`[auth_limits]`, `mailgate ban`).
    Banned,
    /// Refused at connection by a limit (sessions per address or subnet, connections a minute).
    Throttled,
    /// Cut for talking before the 220 greeting (`[limits] pregreet`).
    Pregreet,
    /// Cut for sending message content below `[limits] min_data_rate`.
    TooSlow,
    /// Anything else: no message sent, handshake failed, no usable ClientHello.
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 16] = [
        Outcome::Delivered,
        Outcome::Explained421,
        Outcome::DeferredBySchedule,
        Outcome::RefusedAtHandshake,
        Outcome::NoSharedCipher,
        Outcome::NotOptedIn,
        Outcome::OptInExpired,
        Outcome::UserOutOfScope,
        Outcome::NetworkOutOfScope,
        Outcome::Vetoed,
        Outcome::AuthFailed,
        Outcome::Banned,
        Outcome::Throttled,
        Outcome::Pregreet,
        Outcome::TooSlow,
        Outcome::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Explained421 => "explained_421",
            Outcome::DeferredBySchedule => "deferred_by_schedule",
            Outcome::RefusedAtHandshake => "refused_at_handshake",
            Outcome::NoSharedCipher => "no_shared_cipher",
            Outcome::NotOptedIn => "not_opted_in",
            Outcome::OptInExpired => "opt_in_expired",
            Outcome::UserOutOfScope => "user_out_of_scope",
            Outcome::NetworkOutOfScope => "network_out_of_scope",
            Outcome::Vetoed => "vetoed",
            Outcome::AuthFailed => "auth_failed",
            Outcome::Banned => "banned",
            Outcome::Throttled => "throttled",
            Outcome::Pregreet => "pregreet",
            Outcome::TooSlow => "too_slow",
            Outcome::Other => "other",
        }
    }

    /// From the name used in storage, CSV and JSON.
    pub fn parse(s: &str) -> Option<Outcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome of an opt-in refusal at AUTH.
    pub fn from_refusal(r: &crate::policy::OptInRefusal) -> Outcome {
        use crate::policy::OptInRefusal as R;
        match r {
            R::Vetoed => Outcome::Vetoed,
            R::NotOptedIn => Outcome::NotOptedIn,
            R::Expired(_) => Outcome::OptInExpired,
            R::UserOutOfScope => Outcome::UserOutOfScope,
            R::NetworkOutOfScope => Outcome::NetworkOutOfScope,
        }
    }
}

/// One connection, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Unix seconds when the connection ended.
    pub time: i64,
    pub node: String,
    pub endpoint: String,
    pub client_ip: String,
    /// `TLSv1.0` .. `TLSv1.3`, `SSLv3`, from the ClientHello.
    pub offered_max: Option<String>,
    /// The negotiated version, once a handshake completed.
    pub version: Option<String>,
    /// The negotiated suite's IANA name (rustls spells TLS 1.3 ones `TLS13_...`).
    pub cipher: Option<String>,
    /// The suites the ClientHello offered (see [`offered_ciphers`]).
    #[serde(default)]
    pub offered_ciphers: Option<String>,
    pub sni: Option<String>,
    pub fingerprint: Option<String>,
    pub ehlo: Option<String>,
    /// The authenticated user, or the login that failed or was refused.
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub outcome: Outcome,
    pub messages: u32,
    pub bytes: u64,
    /// Set on the events of a session recorded before it ended: a later event with the
    /// same key replaces the earlier one (the session counts once).
    #[serde(default)]
    pub session: Option<String>,
}

impl UsageEvent {
    /// An event for a connection from `client_ip` on `endpoint`; fields are filled in as
    /// the connection goes.
    pub fn new(node: &str, endpoint: &str, client_ip: std::net::IpAddr) -> Self {
        UsageEvent {
            time: 0,
            node: node.to_string(),
            endpoint: endpoint.to_string(),
            client_ip: client_ip.to_canonical().to_string(),
            offered_max: None,
            version: None,
            cipher: None,
            offered_ciphers: None,
            sni: None,
            fingerprint: None,
            ehlo: None,
            user: None,
            tenant: None,
            outcome: Outcome::Other,
            messages: 0,
            bytes: 0,
            session: None,
        }
    }

    /// Records the hello's suites (`ids`) only where a report needs them: attempts that
    /// completed no handshake, legacy sessions, and sessions on a CBC or RSA-key-exchange
    /// suite (the what-if `--drop` asks whether they had an alternative). A modern
    /// session's list, a few hundred bytes, is neither formatted nor stored.
    pub fn keep_offered_ciphers(&mut self, ids: &[u16]) {
        let needed = match (&self.version, &self.cipher) {
            (Some(v), Some(c)) => is_legacy_name(v) || crate::tls::profile::is_cbc(c) || crate::tls::profile::is_static_rsa(c),
            _ => true,
        };
        self.offered_ciphers = (needed && !ids.is_empty()).then(|| offered_ciphers(ids));
    }

    /// The identity reports group by: the user, else `[client address]`.
    pub fn sender(&self) -> String {
        self.user.clone().unwrap_or_else(|| format!("[{}]", self.client_ip))
    }

}

/// A client-supplied string (EHLO name, SNI, login) as stored and shown in reports:
/// printable characters only (no terminal escapes), at most 255.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(255).collect()
}

/// The most suites of a ClientHello recorded (a browser offers about 17, OpenSSL's
/// `ALL` about 60; the rest is counted as `+N`).
const MAX_OFFERED: usize = 64;

/// A ClientHello's suites as recorded: IANA names in the client's order, `0x....` for
/// suites Mailgate does not serve, separated by spaces.
pub fn offered_ciphers(ids: &[u16]) -> String {
    let mut names: Vec<String> = ids.iter().take(MAX_OFFERED).map(|id| crate::tls::profile::wire_name(*id)).collect();
    if ids.len() > MAX_OFFERED {
        names.push(format!("+{}", ids.len() - MAX_OFFERED));
    }
    names.join(" ")
}

/// `TLSv1.0`, `TLSv1.1` and `SSLv3` are legacy.
pub fn is_legacy_name(v: &str) -> bool {
    matches!(v, "TLSv1.0" | "TLSv1.1" | "SSLv3")
}

/// Takes events from sessions without ever making them wait.
pub struct Recorder {
    tx: Option<mpsc::Sender<UsageEvent>>,
    /// `mailgate_usage_events_total{result}`: its `recorded` and `dropped` counters.
    family: prometheus::IntCounterVec,
    dropped: prometheus::IntCounter,
    recorded: prometheus::IntCounter,
}

impl Recorder {
    /// A recorder that keeps nothing (`usage.enabled = false`).
    pub fn disabled() -> Arc<Recorder> {
        Arc::new(Recorder::with_sender(None))
    }

    /// A recorder and the receiving end for [`run_writer`].
    pub fn new(capacity: usize) -> (Arc<Recorder>, mpsc::Receiver<UsageEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Arc::new(Recorder::with_sender(Some(tx))), rx)
    }

    fn with_sender(tx: Option<mpsc::Sender<UsageEvent>>) -> Recorder {
        let opts = prometheus::Opts::new("mailgate_usage_events_total", "Usage events queued for storage (recorded) or dropped because the buffer was full.");
        let family = prometheus::IntCounterVec::new(opts, &["result"]).expect("valid metric definition");
        let (recorded, dropped) = (family.with_label_values(&["recorded"]), family.with_label_values(&["dropped"]));
        Recorder { tx, family, dropped, recorded }
    }

    /// The counters' family, for the metrics registry (`crate::metrics`, which reads
    /// usage events: this module does not import it).
    pub fn family(&self) -> prometheus::IntCounterVec {
        self.family.clone()
    }

    /// Queues an event; when the buffer is full the event is dropped and counted.
    pub fn record(&self, mut event: UsageEvent, now: i64) {
        let Some(tx) = &self.tx else { return };
        event.time = now;
        match tx.try_send(event) {
            Ok(()) => {
                self.recorded.inc();
            }
            Err(_) => {
                self.dropped.inc();
                let n = self.dropped.get();
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "usage buffer full: events dropped (SMTP is not slowed)");
                }
            }
        }
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Events queued for storage.
    pub fn recorded(&self) -> u64 {
        self.recorded.get()
    }
}

/// The largest batch written in one transaction.
const BATCH: usize = 2048;
/// How long the writer waits to fill a batch.
const LINGER: Duration = Duration::from_secs(1);

/// Stores events in batches until `shutdown`, then stores what is left; runs the
/// retention job every hour.
pub async fn run_writer(
    store: Arc<dyn store::UsageStore>,
    mut rx: mpsc::Receiver<UsageEvent>,
    mut shutdown: watch::Receiver<bool>,
    retention: store::Retention,
    clock: crate::clock::Clock,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                // Linger for more: one transaction a second, not one per handful of events.
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH {
                    let room = BATCH - batch.len();
                    tokio::select! {
                        n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = shutdown.changed() => break,
                    }
                }
                write(&*store, &mut batch).await;
                if *shutdown.borrow() {
                    break;
                }
            }
            _ = hourly.tick() => {
                if let Err(e) = store.apply_retention(clock(), retention).await {
                    tracing::error!(error = %e, "usage retention job failed");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    rx.close();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        write(&*store, &mut batch).await;
    }
    tracing::debug!("usage writer stopped");
}

async fn write(store: &dyn store::UsageStore, batch: &mut Vec<UsageEvent>) {
    if let Err(e) = store.write_batch(batch).await {
        tracing::error!(error = %e, events = batch.len(), "cannot store usage events; they are lost");
    }
    batch.clear();
}

#[cfg(test)]
mod offered_tests {
    use super::*;

    #[test]
    fn offered_suites_are_kept_only_where_a_report_needs_them() {
        let cases = [
            (Some("TLSv1.3"), Some("TLS13_AES_128_GCM_SHA256"), false),
            (Some("TLSv1.2"), Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), false),
            (Some("TLSv1.2"), Some("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), true),
            (Some("TLSv1.2"), Some("TLS_RSA_WITH_AES_128_GCM_SHA256"), true),
            (Some("TLSv1.0"), Some("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), true),
            (None, None, true),
        ];
        for (version, cipher, kept) in cases {
            let mut e = UsageEvent::new("n", "e", "127.0.0.1".parse().unwrap());
            e.version = version.map(String::from);
            e.cipher = cipher.map(String::from);
            e.keep_offered_ciphers(&[0xC02F, 0x002F, 0x1234]);
            if kept {
                assert_eq!(e.offered_ciphers.as_deref(), Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 TLS_RSA_WITH_AES_128_CBC_SHA 0x1234"));
            }
            assert_eq!(e.offered_ciphers.is_some(), kept, "{version:?} {cipher:?}");
        }
        let many: Vec<u16> = (0..70).collect();
        assert!(offered_ciphers(&many).ends_with(" +6"));
    }
}
