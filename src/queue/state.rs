//! What has happened to each queued message: an append-only log beside it
//! (`queue/<ID>.log`, one JSON record per line, fsynced after each append), folded into
//! an [`EntryState`], and the retry schedule computed from it.
//!
//! Append-only keeps every step crash-safe: a record is either whole and durable or (a
//! torn last line after a crash) ignored, and the fold is the single place that decides
//! what a history means. The queue runner and the `mailgate queue` operations both write
//! here; nothing else does.

use crate::delivery::{Failure, FailureKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One line of `<ID>.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// The recipient's copy was delivered.
    Delivered { rcpt: String, at: i64, to: String },
    /// A temporary failure: the recipient is retried after a backoff.
    Deferred { rcpt: String, at: i64, failure: Failure },
    /// A permanent failure (or expiry, or an operator's bounce): a DSN is owed.
    Failed { rcpt: String, at: i64, failure: Failure },
    /// The DSN for these recipients was queued (or none was owed: null sender).
    Bounced { rcpts: Vec<String>, at: i64, dsn: Option<String> },
    /// The delay warning was queued.
    Warned { at: i64, dsn: Option<String> },
    /// Operator: no attempts until released.
    Hold { at: i64 },
    /// Operator: attempts resume.
    Release { at: i64 },
    /// Operator: attempt every pending recipient now, whatever the backoff.
    Retry { at: i64 },
    /// Operator: give up on every pending recipient and tell the sender.
    Bounce { at: i64 },
}

impl Record {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("records serialize");
        s.push('\n');
        s
    }
}

/// Where one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RcptStatus {
    /// Not yet delivered: `attempts` so far, the last failure if any.
    Pending { attempts: u32, last_attempt: Option<i64>, last_failure: Option<Failure> },
    Delivered { at: i64, to: String },
    /// Failed for good; `bounced` once the DSN is queued.
    Failed { at: i64, failure: Failure, bounced: bool },
}

impl RcptStatus {
    fn pending() -> RcptStatus {
        RcptStatus::Pending { attempts: 0, last_attempt: None, last_failure: None }
    }
    pub fn is_pending(&self) -> bool {
        matches!(self, RcptStatus::Pending { .. })
    }
    /// Nothing more will happen to this recipient.
    pub fn is_final(&self) -> bool {
        matches!(self, RcptStatus::Delivered { .. } | RcptStatus::Failed { bounced: true, .. })
    }
}

/// The fold of a message's log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryState {
    /// Per recipient address, in the envelope's order (see [`EntryState::new`]).
    pub rcpts: Vec<(String, RcptStatus)>,
    pub held: bool,
    pub warned: bool,
    /// The operator asked for a retry after the last attempt.
    pub retry_requested: bool,
    /// The operator asked for a bounce not yet carried out.
    pub bounce_requested: bool,
}

impl EntryState {
    /// The state of a message with these recipients after the given log text. Lines that
    /// do not parse (a torn last line) are skipped; a bare address line is a delivery
    /// record of the earlier `.done` format.
    pub fn new(recipients: &[String], log: &str) -> EntryState {
        let mut st = EntryState { rcpts: recipients.iter().map(|r| (r.clone(), RcptStatus::pending())).collect(), ..Default::default() };
        for line in log.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !line.starts_with('{') {
                st.apply(&Record::Delivered { rcpt: line.to_string(), at: 0, to: "maildir".into() });
                continue;
            }
            if let Ok(rec) = serde_json::from_str::<Record>(line) {
                st.apply(&rec);
            }
        }
        st
    }

    fn rcpt_mut(&mut self, address: &str) -> Option<&mut RcptStatus> {
        self.rcpts.iter_mut().find(|(a, _)| a == address).map(|(_, s)| s)
    }

    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Delivered { rcpt, at, to } => {
                if let Some(s) = self.rcpt_mut(rcpt) {
                    *s = RcptStatus::Delivered { at: *at, to: to.clone() };
                }
            }
            Record::Deferred { rcpt, at, failure } => {
                if let Some(s @ RcptStatus::Pending { .. }) = self.rcpt_mut(rcpt) {
                    let attempts = match s {
                        RcptStatus::Pending { attempts, .. } => *attempts + 1,
                        _ => 1,
                    };
                    *s = RcptStatus::Pending { attempts, last_attempt: Some(*at), last_failure: Some(failure.clone()) };
                }
                self.retry_requested = false;
            }
            Record::Failed { rcpt, at, failure } => {
                if let Some(s) = self.rcpt_mut(rcpt) {
                    if s.is_pending() {
                        *s = RcptStatus::Failed { at: *at, failure: failure.clone(), bounced: false };
                    }
                }
            }
            Record::Bounced { rcpts, .. } => {
                for r in rcpts {
                    if let Some(RcptStatus::Failed { bounced, .. }) = self.rcpt_mut(r) {
                        *bounced = true;
                    }
                }
            }
            Record::Warned { .. } => self.warned = true,
            Record::Hold { .. } => self.held = true,
            Record::Release { .. } => self.held = false,
            Record::Retry { .. } => self.retry_requested = true,
            Record::Bounce { .. } => self.bounce_requested = true,
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = (&String, &RcptStatus)> {
        self.rcpts.iter().filter(|(_, s)| s.is_pending()).map(|(a, s)| (a, s))
    }

    /// Recipients that failed and still owe their sender a DSN.
    pub fn unbounced(&self) -> Vec<(String, i64, Failure)> {
        self.rcpts
            .iter()
            .filter_map(|(a, s)| match s {
                RcptStatus::Failed { at, failure, bounced: false } => Some((a.clone(), *at, failure.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every recipient is delivered or failed and bounced: the entry can go.
    pub fn is_complete(&self) -> bool {
        self.rcpts.iter().all(|(_, s)| s.is_final())
    }

    /// When the next attempt is due (unix seconds), or `None` when nothing is to be
    /// attempted (held, or nothing pending).
    pub fn next_attempt(&self, policy: &Backoff) -> Option<i64> {
        if self.held {
            return None;
        }
        let due = self
            .pending()
            .map(|(_, s)| match s {
                RcptStatus::Pending { attempts, last_attempt: Some(at), .. } if !self.retry_requested => {
                    at.saturating_add(policy.delay(*attempts) as i64)
                }
                _ => i64::MIN,
            })
            .min()?;
        Some(due)
    }

    /// Counts by status, for listings: (pending, delivered, failed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, s) in &self.rcpts {
            match s {
                RcptStatus::Pending { .. } => c.0 += 1,
                RcptStatus::Delivered { .. } => c.1 += 1,
                RcptStatus::Failed { .. } => c.2 += 1,
            }
        }
        c
    }

    /// The most recent failure of a pending recipient (what `queue list` shows).
    pub fn last_failure(&self) -> Option<&Failure> {
        self.pending()
            .filter_map(|(_, s)| match s {
                RcptStatus::Pending { last_failure: Some(f), last_attempt, .. } => Some((last_attempt, f)),
                _ => None,
            })
            .max_by_key(|(at, _)| **at)
            .map(|(_, f)| f)
    }
}

/// The retry schedule: `min` after the first failure, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: u64,
    pub max: u64,
}

impl Backoff {
    /// Seconds to wait after the `attempts`-th failed attempt (1 = the first).
    pub fn delay(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(32);
        self.min.saturating_mul(1u64 << doublings).min(self.max)
    }
}

/// Groups of recipients by a key (their destination), preserving first-seen order.
pub fn group_by<K: Eq + std::hash::Hash + Clone>(items: Vec<(K, String)>) -> Vec<(K, Vec<String>)> {
    let mut order: Vec<K> = Vec::new();
    let mut map: HashMap<K, Vec<String>> = HashMap::new();
    for (k, v) in items {
        if !map.contains_key(&k) {
            order.push(k.clone());
        }
        map.entry(k).or_default().push(v);
    }
    order.into_iter().map(|k| {
        let v = map.remove(&k).unwrap_or_default();
        (k, v)
    }).collect()
}

/// A temporary failure turned permanent by the queue lifetime.
pub fn expired(last: Option<&Failure>, lifetime_secs: u64) -> Failure {
    let days = lifetime_secs as f64 / 86_400.0;
    let reason = match last {
        Some(f) => format!("message expired after {days:.1} days in the queue; last error: {f}"),
        None => format!("message expired after {days:.1} days in the queue"),
    };
    Failure { kind: FailureKind::Permanent, reason, remote: last.and_then(|f| f.remote.clone()), is_reply: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpts() -> Vec<String> {
        vec!["a@x.test".into(), "b@y.test".into()]
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff { min: 300, max: 3600 };
        let delays: Vec<u64> = (1..=7).map(|n| b.delay(n)).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400, 3600, 3600, 3600]);
        assert_eq!(b.delay(u32::MAX), 3600);
    }

    #[test]
    fn fold_tracks_attempts_failures_and_operator_records() {
        let t = Failure::temporary("451 4.3.0 try later");
        let p = Failure::permanent("550 5.1.1 unknown");
        let log = [
            Record::Deferred { rcpt: "a@x.test".into(), at: 100, failure: t.clone() },
            Record::Deferred { rcpt: "b@y.test".into(), at: 100, failure: t.clone() },
            Record::Deferred { rcpt: "b@y.test".into(), at: 400, failure: t.clone() },
            Record::Failed { rcpt: "a@x.test".into(), at: 500, failure: p.clone() },
            Record::Hold { at: 600 },
        ]
        .iter()
        .map(Record::line)
        .collect::<String>()
            + "{\"t\":\"deliv"; // a torn last line is ignored
        let st = EntryState::new(&rcpts(), &log);
        let b = Backoff { min: 300, max: 3600 };
        assert_eq!(st.rcpts[1].1, RcptStatus::Pending { attempts: 2, last_attempt: Some(400), last_failure: Some(t.clone()) });
        assert_eq!(st.unbounced().len(), 1);
        assert!(st.held);
        assert_eq!(st.next_attempt(&b), None, "held: nothing is due");
        let mut st = st;
        st.apply(&Record::Release { at: 700 });
        assert_eq!(st.next_attempt(&b), Some(400 + 600));
        st.apply(&Record::Retry { at: 701 });
        assert_eq!(st.next_attempt(&b), Some(i64::MIN), "an operator retry is due at once");
        st.apply(&Record::Bounced { rcpts: vec!["a@x.test".into()], at: 800, dsn: Some("DSN1".into()) });
        st.apply(&Record::Delivered { rcpt: "b@y.test".into(), at: 900, to: "smarthost:up".into() });
        assert!(st.is_complete());
    }

    #[test]
    fn a_bounce_requested_during_an_attempt_survives_its_records() {
        let t = Failure::temporary("451 later");
        let p = Failure::permanent("550 no");
        // The runner read the log, then the operator asked for a bounce, then the runner
        // wrote the attempt's records.
        let log = [
            Record::Bounce { at: 10 },
            Record::Failed { rcpt: "a@x.test".into(), at: 11, failure: p },
            Record::Deferred { rcpt: "b@y.test".into(), at: 11, failure: t },
            Record::Bounced { rcpts: vec!["a@x.test".into()], at: 11, dsn: None },
        ]
        .iter()
        .map(Record::line)
        .collect::<String>();
        let st = EntryState::new(&rcpts(), &log);
        assert!(st.bounce_requested, "b@y.test is still to be bounced");
    }

    #[test]
    fn absurd_timestamps_do_not_overflow() {
        let log = Record::Deferred { rcpt: "a@x.test".into(), at: i64::MAX, failure: Failure::temporary("x") }.line();
        let st = EntryState::new(&rcpts()[..1], &log);
        assert_eq!(st.next_attempt(&Backoff { min: 300, max: 3600 }), Some(i64::MAX));
    }

    #[test]
    fn old_done_lines_count_as_delivered() {
        let st = EntryState::new(&rcpts(), "a@x.test\n");
        assert!(matches!(st.rcpts[0].1, RcptStatus::Delivered { .. }));
        assert_eq!(st.next_attempt(&Backoff { min: 1, max: 2 }), Some(i64::MIN), "a fresh recipient is due at once");
    }
}
