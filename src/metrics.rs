//! Prometheus metrics of one server, in the text exposition format (`/metrics` on the
//! admin listener). Every name starts with `mailgate_`.
//!
//! Each figure is counted at the one place that decides it, never twice: a connection's
//! outcome when its usage event is handed over ([`Metrics::session_ended`], the same event
//! the reports count), AUTH where every mechanism concludes, delivery attempts where the
//! runner records them, handshake times where a handshake completes. The TLS attempt
//! counters of the listener and the usage recorder's counters are the metrics' own
//! families. Queue sizes and opt-in end dates are read when scraped.

use crate::usage::UsageEvent;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The registry and the families counted outside the listener and recorder.
pub struct Metrics {
    registry: Registry,
    sessions: IntCounterVec,
    legacy_sessions: IntCounterVec,
    auth: IntCounterVec,
    messages: IntCounterVec,
    message_bytes: IntCounterVec,
    deliveries: IntCounterVec,
    handshake: HistogramVec,
    queue: IntGaugeVec,
    opt_in_until: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

/// A counter family with one label, created by its owner (listener, recorder) and
/// registered here.
pub fn family(name: &str, help: &str, label: &str) -> IntCounterVec {
    counter(name, help, &[label])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            sessions: counter(
                "mailgate_sessions_total",
                "Connections by endpoint, negotiated TLS version (none: no handshake) and outcome.",
                &["endpoint", "version", "outcome"],
            ),
            legacy_sessions: counter(
                "mailgate_legacy_tls_sessions_total",
                "Connections that negotiated or offered at most TLS 1.1, by endpoint, tenant (empty before AUTH) and outcome.",
                &["endpoint", "tenant", "outcome"],
            ),
            auth: counter("mailgate_auth_total", "AUTH attempts by result.", &["result"]),
            messages: counter("mailgate_messages_accepted_total", "Messages accepted (250 after DATA/BDAT) by endpoint.", &["endpoint"]),
            message_bytes: counter("mailgate_message_bytes_total", "Octets of accepted messages by endpoint.", &["endpoint"]),
            deliveries: counter(
                "mailgate_delivery_attempts_total",
                "Delivery attempts per recipient by target (maildir, lmtp:..., smarthost:NAME) and result.",
                &["target", "result"],
            ),
            handshake: HistogramVec::new(
                HistogramOpts::new("mailgate_tls_handshake_duration_seconds", "Completed TLS handshakes by stack.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["stack"],
            )
            .expect("valid metric definition"),
            queue: gauge("mailgate_queue_messages", "Queued messages by state (deferred, held, finishing).", &["state"]),
            opt_in_until: gauge(
                "mailgate_tenant_legacy_opt_in_until_timestamp_seconds",
                "End of each opted-in tenant's legacy TLS opt-in (the end of its last day, UTC), for alerts.",
                &["tenant"],
            ),
        };
        for c in [&m.sessions, &m.legacy_sessions, &m.auth, &m.messages, &m.message_bytes, &m.deliveries] {
            m.register(c.clone());
        }
        m.register(m.handshake.clone());
        m.register(m.queue.clone());
        m.register(m.opt_in_until.clone());
        m
    }

    /// Adds a family owned elsewhere (the listener's TLS attempts, the recorder's events).
    pub fn register<C: prometheus::core::Collector + 'static>(&self, c: C) {
        if let Err(e) = self.registry.register(Box::new(c)) {
            tracing::error!(error = %e, "metric family not registered");
        }
    }

    /// A connection ended; `event` is its usage event.
    pub fn session_ended(&self, e: &UsageEvent) {
        let version = e.version.as_deref().unwrap_or("none");
        let outcome = e.outcome.as_str();
        self.sessions.with_label_values(&[&e.endpoint, version, outcome]).inc();
        let legacy = match (&e.version, &e.offered_max) {
            (Some(v), _) => crate::usage::is_legacy_name(v),
            (None, Some(o)) => crate::usage::is_legacy_name(o),
            _ => false,
        };
        if legacy {
            self.legacy_sessions.with_label_values(&[&e.endpoint, e.tenant.as_deref().unwrap_or(""), outcome]).inc();
        }
        if e.messages > 0 {
            self.messages.with_label_values(&[&e.endpoint]).inc_by(e.messages as u64);
            self.message_bytes.with_label_values(&[&e.endpoint]).inc_by(e.bytes);
        }
    }

    /// An AUTH concluded: `success`, `bad_credentials`, `account_disabled`,
    /// `smtp_auth_disabled`, `legacy_refused` or `temporary_error`.
    pub fn auth(&self, result: &str) {
        self.auth.with_label_values(&[result]).inc();
    }

    /// One recipient's delivery attempt: `delivered`, `deferred` or `failed`.
    pub fn delivery(&self, target: &str, result: &str) {
        self.deliveries.with_label_values(&[target, result]).inc();
    }

    /// A completed handshake on `stack` (`rustls` or `openssl`).
    pub fn handshake(&self, stack: &str, took: std::time::Duration) {
        self.handshake.with_label_values(&[stack]).observe(took.as_secs_f64());
    }

    /// The queue's size by state, read at scrape time.
    pub fn set_queue(&self, counts: &[(&str, i64)]) {
        for (state, n) in counts {
            self.queue.with_label_values(&[state]).set(*n);
        }
    }

    /// The opted-in tenants' end dates, read at scrape time.
    pub fn set_opt_in_until(&self, tenants: &[(String, chrono::NaiveDate)]) {
        self.opt_in_until.reset();
        for (t, d) in tenants {
            let end = d.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc().timestamp()).unwrap_or(0);
            self.opt_in_until.with_label_values(&[t]).set(end);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_session_is_counted_once_in_both_families() {
        let m = Metrics::new();
        let mut e = UsageEvent::new("n", "standard-starttls", "127.0.0.1".parse().unwrap());
        e.version = Some("TLSv1.0".into());
        e.outcome = crate::usage::Outcome::Explained421;
        m.session_ended(&e);
        let text = m.render();
        assert!(text.contains(r#"mailgate_sessions_total{endpoint="standard-starttls",outcome="explained_421",version="TLSv1.0"} 1"#), "{text}");
        assert!(text.contains(r#"mailgate_legacy_tls_sessions_total{endpoint="standard-starttls",outcome="explained_421",tenant=""} 1"#), "{text}");
    }
}
