//! The queue manager: decides when each queued message is attempted, hands its
//! recipients to their delivery targets, records what happened (`state`), retries with
//! backoff, warns and bounces (DSN) and removes finished entries.
//!
//! One task per message at a time (the entry's lock makes that hold across processes),
//! at most `delivery.concurrency` tasks delivering at once and at most
//! `delivery.destination_concurrency` to one destination. Times come from the injected
//! clock, so tests can move through a retry schedule; a real-time tick
//! (`queue.retry_interval`) and the control socket decide when the clock is looked at.

use super::state::{expired, group_by, Backoff, EntryState, RcptStatus, Record};
use super::{Envelope, Recipient, RecipientRoute, ScanRequest, Spool};
use crate::config::{Config, LocalDelivery};
use crate::delivery::lmtp::Lmtp;
use crate::delivery::maildir::Maildir;
use crate::delivery::smarthost::SmarthostTarget;
use crate::delivery::{Failure, MessageInfo, Target};
use crate::directory::Directory;
use crate::dsn::{self, DsnInput, DsnKind, DsnRecipient};
use crate::clock::Clock;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;


/// The delivery targets, built once (a smart host keeps its OAuth2 token between messages).
struct Targets {
    maildir: Arc<Maildir>,
    lmtp: Mutex<HashMap<String, Arc<Lmtp>>>,
    smarthosts: HashMap<String, Arc<SmarthostTarget>>,
}

/// Delivers queued messages.
pub struct QueueRunner {
    spool: Arc<Spool>,
    config: Arc<Config>,
    directory: Directory,
    clock: Clock,
    targets: Targets,
    /// Where delivery attempts are counted.
    metrics: Arc<crate::metrics::Metrics>,
    backoff: Backoff,
    global: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    inflight: Mutex<HashSet<String>>,
    /// Entries whose delivery results could not be recorded: not attempted again until a
    /// restart, so that a log that cannot be written never causes endless redelivery.
    stuck: Mutex<HashSet<String>>,
    /// Entry tasks at once (each holds its entry's lock and files; beyond, ids wait in
    /// [`EntryTasks`]' queue, a few bytes each, so a backlog of 100,000 costs no memory).
    max_entries: usize,
    /// Set at shutdown: no transaction commits any more.
    stopping: AtomicBool,
    finished: Notify,
    dsn_counter: AtomicU64,
}

impl QueueRunner {
    pub fn new(spool: Arc<Spool>, config: Arc<Config>, directory: Directory, clock: Clock, metrics: Arc<crate::metrics::Metrics>) -> Arc<QueueRunner> {
        let smarthosts = config
            .smarthosts
            .iter()
            .map(|s| (s.name.clone(), Arc::new(SmarthostTarget::new(s, &config.hostname, clock.clone()))))
            .collect();
        let targets = Targets {
            maildir: Arc::new(Maildir::new(config.maildir_root(), &config.hostname)),
            lmtp: Mutex::new(HashMap::new()),
            smarthosts,
        };
        Arc::new(QueueRunner {
            backoff: Backoff { min: config.queue.backoff_min, max: config.queue.backoff_max },
            global: Arc::new(Semaphore::new(config.delivery.concurrency)),
            per_destination: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashSet::new()),
            stuck: Mutex::new(HashSet::new()),
            max_entries: 4 * config.delivery.concurrency,
            stopping: AtomicBool::new(false),
            finished: Notify::new(),
            dsn_counter: AtomicU64::new(0),
            spool,
            config,
            directory,
            clock,
            targets,
            metrics,
        })
    }

    /// Runs until `shutdown` turns true: everything due at start, each new message as it
    /// is committed, a scan every `retry_interval` and on each control request. At
    /// shutdown, deliveries in flight get `queue.shutdown_grace` to finish; the rest are
    /// cancelled before their commit (nothing half-delivered) and retried at the next start.
    pub async fn run(
        self: Arc<Self>,
        mut new: mpsc::UnboundedReceiver<String>,
        mut control: mpsc::Receiver<ScanRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let maildir = self.targets.maildir.clone();
        match tokio::task::spawn_blocking(move || maildir.clean_stale_tmp()).await.unwrap_or_else(|e| Err(io::Error::other(e))) {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed half-written Maildir files left by an interrupted earlier run"),
            Err(e) => tracing::warn!(error = %e, "cannot clean Maildir tmp/ folders"),
        }
        let mut tasks = EntryTasks::default();
        self.start_due(&mut tasks).await;
        // An interval, not a sleep restarted on every message: a steady flow of new mail
        // must not postpone retries.
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.queue.retry_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                // Before new messages: a finished task frees a place for a waiting entry
                // (a flood of new ids must not keep finished tasks unreaped).
                Some(_) = tasks.set.join_next(), if !tasks.set.is_empty() => self.start_waiting(&mut tasks),
                id = new.recv() => match id {
                    Some(id) => { self.start(&mut tasks, id); }
                    None => break,
                },
                Some(reply) = control.recv() => {
                    // Wait for what this scan starts and for what was already running.
                    let mut ids = self.start_due(&mut tasks).await;
                    ids.extend(self.inflight.lock().unwrap().iter().cloned());
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.wait_for(&ids).await;
                        let _ = reply.send(());
                    });
                }
                _ = tick.tick() => { self.start_due(&mut tasks).await; }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        // From now on no transaction commits: those before their commit abort (nothing
        // delivered, nothing recorded, retried at once at the next start); those already
        // committing get the grace period to finish and record it.
        self.stopping.store(true, Ordering::SeqCst);
        // Entries not started yet stay queued for the next start.
        for id in tasks.waiting.drain(..) {
            self.inflight.lock().unwrap().remove(&id);
        }
        self.finished.notify_waiters();
        let mut set = tasks.set;
        let grace = Duration::from_secs(self.config.queue.shutdown_grace);
        let drain = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(in_flight = set.len(), "deliveries still committing at the end of the shutdown grace; cancelled (one of them may be delivered again after the restart)");
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        tracing::info!("queue runner stopped");
    }

    /// Starts a task for every entry that has something due now; returns their ids.
    async fn start_due(self: &Arc<Self>, tasks: &mut EntryTasks) -> Vec<String> {
        let spool = self.spool.clone();
        let ids = match tokio::task::spawn_blocking(move || spool.queued_ids()).await.unwrap_or_else(|e| Err(io::Error::other(e))) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the queue");
                return Vec::new();
            }
        };
        ids.into_iter().filter(|id| self.start(tasks, id.clone())).collect()
    }

    /// Starts a task for one entry unless one is already running or waiting for it; past
    /// `max_entries` tasks, the id waits its turn.
    fn start(self: &Arc<Self>, tasks: &mut EntryTasks, id: String) -> bool {
        if self.stuck.lock().unwrap().contains(&id) || !self.inflight.lock().unwrap().insert(id.clone()) {
            return false;
        }
        if tasks.set.len() < self.max_entries {
            self.spawn_entry(tasks, id);
        } else {
            tasks.waiting.push_back(id);
        }
        true
    }

    /// After a task ended: the next waiting entries get their turn.
    fn start_waiting(self: &Arc<Self>, tasks: &mut EntryTasks) {
        while tasks.set.len() < self.max_entries {
            let Some(id) = tasks.waiting.pop_front() else { break };
            self.spawn_entry(tasks, id);
        }
    }

    fn spawn_entry(self: &Arc<Self>, tasks: &mut EntryTasks, id: String) {
        let me = self.clone();
        tasks.set.spawn(async move {
            // Leaves the in-flight set however the task ends (a panic included).
            let _done = InFlight { runner: me.clone(), id: id.clone() };
            me.process(&id).await;
        });
    }

    async fn wait_for(&self, ids: &[String]) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ids.iter().all(|id| !self.inflight.lock().unwrap().contains(id)) {
                return;
            }
            notified.await;
        }
    }

    /// Does whatever is due for one entry: bounce, expire, attempt, warn, remove.
    pub async fn process(&self, id: &str) {
        // On this thread, not the blocking pool: a lock, an open and the read of a page
        // just written take microseconds on the local spool, less than a hand-off between
        // threads costs (measured: BENCHMARKS.md). Only fsyncs go to the blocking pool.
        let p = match prepare(&self.spool, id) {
            Ok(Some(p)) => p,
            Ok(None) => return, // gone, or an operator command holds it: the next scan comes back
            Err(e) if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) => {
                return self.quarantine(id, &e).await;
            }
            // EMFILE, EIO...: the message was acknowledged; try again at the next scan.
            Err(e) => return tracing::warn!(queue_id = id, error = %e, "cannot read a queue entry now; will retry"),
        };
        let addresses: Vec<String> = p.env.recipients.iter().map(|r| r.address.clone()).collect();
        let mut state = EntryState::new(&addresses, &p.log);
        if let Err(e) = self.advance(id, &p, &mut state).await {
            // A failure to record has already parked the entry (see `record`); anything
            // else (a DSN that could not be queued, a removal) is tried again next scan.
            tracing::error!(queue_id = id, error = %e, "queue entry not finished; will retry at the next scan");
        }
        drop(p.lock);
    }

    async fn advance(&self, id: &str, p: &Prepared, state: &mut EntryState) -> io::Result<()> {
        let (env, offset, fresh) = (&p.env, p.offset, p.log.is_empty());
        let now = (self.clock)().timestamp();
        let mut records = Vec::new();
        if state.bounce_requested {
            let f = Failure::permanent("returned to the sender by the mail administrator (mailgate queue bounce)");
            records.extend(state.pending().map(|(a, _)| Record::Failed { rcpt: a.clone(), at: now, failure: f.clone() }));
        } else if !state.held {
            let due: Vec<&Recipient> = env.recipients.iter().filter(|r| self.is_due(state, &r.address, now)).collect();
            if !due.is_empty() {
                if now - env.received_at >= self.config.queue.max_lifetime as i64 {
                    let last = state.last_failure().cloned();
                    let f = expired(last.as_ref(), self.config.queue.max_lifetime);
                    records.extend(due.iter().map(|r| Record::Failed { rcpt: r.address.clone(), at: now, failure: f.clone() }));
                } else {
                    records.extend(self.attempt(id, env, offset, p.size, &due, now).await);
                }
            }
        }
        // The common case: every recipient delivered at the first attempt. The entry goes
        // without a log (one fsync less per message).
        let all_delivered_now = fresh
            && records.len() == env.recipients.len()
            && records.iter().all(|r| matches!(r, Record::Delivered { .. }));
        // If the removal fails, the deliveries are recorded below, or the next scan would
        // deliver again.
        if all_delivered_now && self.finish(id).is_ok() {
            return Ok(());
        }
        self.record(id, state, records).await?;
        let unbounced = state.unbounced();
        if !unbounced.is_empty() {
            let dsn = self.send_dsn(env, offset, DsnKind::Failed, &unbounced, now).await?;
            let rcpts = unbounced.into_iter().map(|(a, _, _)| a).collect();
            self.record(id, state, vec![Record::Bounced { rcpts, at: now, dsn }]).await?;
        }
        if self.warning_due(env, state, now) {
            let pending: Vec<(String, i64, Failure)> = state
                .pending()
                .map(|(a, s)| match s {
                    RcptStatus::Pending { last_attempt, last_failure, .. } => (
                        a.clone(),
                        last_attempt.unwrap_or(now),
                        last_failure.clone().unwrap_or_else(|| Failure::temporary("not yet attempted")),
                    ),
                    _ => unreachable!("pending() yields pending recipients"),
                })
                .collect();
            let dsn = self.send_dsn(env, offset, DsnKind::Delayed, &pending, now).await?;
            self.record(id, state, vec![Record::Warned { at: now, dsn }]).await?;
        }
        if state.is_complete() {
            self.finish(id)?;
        }
        Ok(())
    }

    /// Appends records (an fsync: on the blocking pool) and applies them to `state`.
    async fn record(&self, id: &str, state: &mut EntryState, records: Vec<Record>) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (spool, owned_id, recs) = (self.spool.clone(), id.to_string(), records.clone());
        let appended = tokio::task::spawn_blocking(move || spool.append(&owned_id, &recs)).await.map_err(io::Error::other);
        if let Err(e) = appended.and_then(|r| r) {
            // Results that cannot be recorded must not be acted on again and again: the
            // entry is left alone until a restart.
            self.stuck.lock().unwrap().insert(id.to_string());
            tracing::error!(
                queue_id = id,
                error = %e,
                "cannot record delivery results in the queue entry's log; the entry is left alone until mailgate restarts \
                 (fix the spool's ownership or disk, then restart) so that no recipient gets the message again and again"
            );
            return Err(e);
        }
        for r in &records {
            state.apply(r);
        }
        Ok(())
    }

    fn finish(&self, id: &str) -> io::Result<()> {
        // Unlinks, no fsync: on this thread (see `process`).
        self.spool.remove(id)?;
        tracing::info!(queue_id = id, "all recipients done; removed from the queue");
        Ok(())
    }

    fn is_due(&self, state: &EntryState, address: &str, now: i64) -> bool {
        match state.rcpts.iter().find(|(a, _)| a == address).map(|(_, s)| s) {
            Some(RcptStatus::Pending { attempts, last_attempt: Some(at), .. }) => {
                state.retry_requested || at.saturating_add(self.backoff.delay(*attempts) as i64) <= now
            }
            Some(RcptStatus::Pending { last_attempt: None, .. }) => true,
            _ => false,
        }
    }

    fn warning_due(&self, env: &Envelope, state: &EntryState, now: i64) -> bool {
        let after = self.config.queue.delay_warning as i64;
        after > 0 && !state.warned && !env.sender.is_empty() && state.pending().next().is_some() && now - env.received_at >= after
    }

    /// One attempt for the due recipients, grouped by destination; returns the records.
    async fn attempt(&self, id: &str, env: &Envelope, offset: u64, size: u64, due: &[&Recipient], now: i64) -> Vec<Record> {
        let mut records = Vec::new();
        let mut keyed = Vec::new();
        let mut targets: HashMap<String, Arc<dyn Target>> = HashMap::new();
        for r in due {
            let addr = r.address.clone();
            match self.target_for(env, r) {
                Ok(t) => {
                    let key = t.destination();
                    targets.entry(key.clone()).or_insert(t);
                    keyed.push((key, addr));
                }
                Err(f) => records.push(Record::Failed { rcpt: addr, at: now, failure: f }),
            }
        }
        let info = MessageInfo { queue_id: id.to_string(), sender: env.sender.clone(), size };
        for (key, rcpts) in group_by(keyed) {
            let target = targets[&key].clone();
            // The destination's slot first: a message waiting for a slow smart host must
            // not hold one of the global slots that local deliveries need.
            let _slot = self.destination_permit(&key).acquire_owned().await;
            let _permit = self.global.clone().acquire_owned().await;
            let results = self.transaction(target.as_ref(), &info, &rcpts, id, offset).await;
            for (rcpt, result) in rcpts.into_iter().zip(results) {
                if matches!(&result, Err(f) if f.reason == SHUTTING_DOWN) {
                    continue; // not an attempt: retried at once after the restart
                }
                records.push(self.outcome(id, &key, rcpt, result, now));
            }
        }
        records
    }

    fn outcome(&self, id: &str, destination: &str, rcpt: String, result: Result<(), Failure>, now: i64) -> Record {
        let counted = match &result {
            Ok(()) => "delivered",
            Err(f) if f.is_permanent() => "failed",
            Err(_) => "deferred",
        };
        self.metrics.delivery(destination, counted);
        match result {
            Ok(()) => {
                tracing::info!(queue_id = id, recipient = %rcpt, destination, "delivered");
                Record::Delivered { rcpt, at: now, to: destination.to_string() }
            }
            Err(f) if f.is_permanent() => {
                tracing::warn!(queue_id = id, recipient = %rcpt, destination, reason = %f, "delivery failed permanently; the sender will get a DSN");
                Record::Failed { rcpt, at: now, failure: f }
            }
            Err(f) => {
                tracing::warn!(queue_id = id, recipient = %rcpt, destination, reason = %f, "delivery deferred; will retry");
                Record::Deferred { rcpt, at: now, failure: f }
            }
        }
    }

    /// begin -> rcpt* -> body -> commit | abort; one result per recipient, in order.
    async fn transaction(&self, target: &dyn Target, info: &MessageInfo, rcpts: &[String], id: &str, offset: u64) -> Vec<Result<(), Failure>> {
        let mut tx = match target.begin(info).await {
            Ok(tx) => tx,
            Err(f) => return vec![Err(f); rcpts.len()],
        };
        let mut results: Vec<Option<Result<(), Failure>>> = vec![None; rcpts.len()];
        let mut accepted = Vec::new();
        for (i, r) in rcpts.iter().enumerate() {
            match tx.rcpt(r).await {
                Ok(()) => accepted.push(i),
                Err(f) => results[i] = Some(Err(f)),
            }
        }
        if accepted.is_empty() {
            tx.abort().await;
        } else {
            let sent = tx.body_from_file(&self.spool.msg_path(id), offset).await;
            let committed = match sent {
                Ok(()) if self.stopping.load(Ordering::SeqCst) => {
                    tx.abort().await;
                    vec![Err(Failure::temporary(SHUTTING_DOWN)); accepted.len()]
                }
                Ok(()) => tx.commit().await,
                Err(f) => {
                    tx.abort().await;
                    vec![Err(f); accepted.len()]
                }
            };
            for (i, r) in accepted.iter().zip(committed.into_iter().chain(std::iter::repeat(Err(Failure::temporary(
                "the delivery target gave no result for this recipient",
            ))))) {
                results[*i] = Some(r);
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(Failure::temporary("not attempted")))).collect()
    }

    fn destination_permit(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.per_destination.lock().unwrap();
        map.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.config.delivery.destination_concurrency))).clone()
    }

    /// The target of one recipient, from the configuration as it is now.
    fn target_for(&self, env: &Envelope, r: &Recipient) -> Result<Arc<dyn Target>, Failure> {
        match &r.route {
            RecipientRoute::Local { tenant } => Ok(match self.config.local_delivery(tenant) {
                LocalDelivery::Maildir => self.targets.maildir.clone(),
                LocalDelivery::Smarthost => return self.smarthost_target(tenant),
                LocalDelivery::Lmtp(address) => {
                    let mut map = self.targets.lmtp.lock().unwrap();
                    map.entry(address.to_string())
                        .or_insert_with(|| Arc::new(Lmtp::new(address.clone(), &self.config.hostname, self.config.delivery.lmtp_timeout)))
                        .clone()
                }
            }),
            RecipientRoute::Relay => self.smarthost_target(&env.tenant),
        }
    }

    /// The smart host that relays for `tenant`.
    fn smarthost_target(&self, tenant: &str) -> Result<Arc<dyn Target>, Failure> {
        let name = self.config.smarthost_for(tenant).map(|s| s.name.clone());
        match name.and_then(|n| self.targets.smarthosts.get(&n).cloned()) {
            Some(t) => Ok(t),
            None => Err(Failure::permanent(format!(
                "no smart host is configured for tenant {tenant:?}, so remote recipients cannot be delivered"
            ))),
        }
    }

    /// Queues a DSN to the envelope sender; `None` when none may be sent (null sender:
    /// never a bounce to `<>`, so never a bounce loop).
    async fn send_dsn(&self, env: &Envelope, offset: u64, kind: DsnKind, rcpts: &[(String, i64, Failure)], now: i64) -> io::Result<Option<String>> {
        if env.sender.is_empty() {
            tracing::warn!(queue_id = %env.id, recipients = rcpts.len(), "undeliverable message from the null sender; no DSN is sent");
            return Ok(None);
        }
        let headers = self.original_headers(&env.id, offset).await?;
        let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let recipients: Vec<DsnRecipient> = rcpts
            .iter()
            .map(|(address, when, f)| DsnRecipient {
                address: address.clone(),
                status: dsn::enhanced_status(&f.reason, matches!(kind, DsnKind::Failed)),
                remote_mta: f.remote.clone(),
                diagnostic: f.is_reply.then(|| f.reason.clone()),
                reason: f.to_string(),
                last_attempt: Some(at(*when)),
            })
            .collect();
        let delayed = matches!(kind, DsnKind::Delayed);
        let will_retry_until = delayed.then(|| at(env.received_at + self.config.queue.max_lifetime as i64));
        let message = dsn::build(&DsnInput {
            kind,
            reporting_mta: &self.config.hostname,
            queue_id: &env.id,
            original_sender: &env.sender,
            arrival: at(env.received_at),
            now: at(now),
            will_retry_until,
            recipients: &recipients,
            original_headers: &headers,
            message_id_seed: self.dsn_counter.fetch_add(1, Ordering::Relaxed) ^ now as u64,
        });
        let route = self.route_back(&env.sender).await;
        let dsn_env = Envelope {
            id: self.spool.new_id(),
            received_at: now,
            sender: String::new(),
            recipients: vec![Recipient { address: env.sender.clone(), route }],
            auth_user: String::new(),
            tenant: env.tenant.clone(),
            client_ip: String::new(),
            endpoint: "dsn".into(),
        };
        let mut w = self.spool.create(&dsn_env, b"").await?;
        w.write(&message).await?;
        let dsn_id = w.commit().await?;
        tracing::info!(queue_id = %env.id, dsn = %dsn_id, to = %env.sender, delayed, "DSN queued");
        Ok(Some(dsn_id))
    }

    /// A DSN goes back like any message to the sender: local if the sender's domain is
    /// ours, else through the tenant's smart host.
    async fn route_back(&self, sender: &str) -> RecipientRoute {
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        match self.directory.domain_tenant(domain).await {
            Ok(Some(tenant)) => RecipientRoute::Local { tenant },
            _ => RecipientRoute::Relay,
        }
    }

    async fn original_headers(&self, id: &str, offset: u64) -> io::Result<Vec<u8>> {
        let mut file = tokio::fs::File::open(self.spool.msg_path(id)).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut buf = Vec::new();
        file.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok(dsn::header_block(&buf, 64 * 1024).to_vec())
    }

    /// Moves an unreadable entry to `spool/corrupt/` so that it is kept for the operator
    /// but not retried forever.
    async fn quarantine(&self, id: &str, error: &io::Error) {
        let corrupt = self.spool.corrupt_dir();
        let moved = async {
            tokio::fs::create_dir_all(&corrupt).await?;
            tokio::fs::rename(self.spool.msg_path(id), corrupt.join(format!("{id}.msg"))).await
        }
        .await;
        match moved {
            Ok(()) => tracing::error!(queue_id = id, %error, dir = %corrupt.display(), "unreadable queue entry moved aside"),
            Err(e) => tracing::error!(queue_id = id, %error, move_error = %e, "unreadable queue entry left in place"),
        }
    }
}

/// What a task needs to work on one entry, read when it starts (see `process`).
struct Prepared {
    /// The entry's lock, held until the task ends.
    lock: std::fs::File,
    env: Envelope,
    /// Where the content starts in the spool file.
    offset: u64,
    log: String,
    /// The content's size in octets.
    size: u64,
}

/// Locks an entry and reads its envelope and log; `None` when it is gone or locked.
fn prepare(spool: &Spool, id: &str) -> io::Result<Option<Prepared>> {
    let lock = match spool.try_lock(id) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = lock.metadata()?.len();
    // Through the lock's own handle: one open per entry.
    let (env, offset) = crate::queue::read_envelope_from(&lock)?;
    let log = spool.read_log(id)?;
    Ok(Some(Prepared { lock, env, offset, log, size: size.saturating_sub(offset) }))
}

/// The reason given to transactions cancelled before their commit by a shutdown.
const SHUTTING_DOWN: &str = "mailgate is shutting down; delivery resumes after the restart";

/// The runner's entry tasks, and the ids (already in the in-flight set) waiting for one.
#[derive(Default)]
struct EntryTasks {
    set: JoinSet<()>,
    waiting: std::collections::VecDeque<String>,
}

/// Removes an entry from the in-flight set when its task ends, however it ends.
struct InFlight {
    runner: Arc<QueueRunner>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.runner.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        self.runner.finished.notify_waiters();
    }
}
