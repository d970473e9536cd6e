//! The durable spool and the queue runner.
//!
//! A message is one file: a header line `MAILGATE-SPOOL 1`, the envelope as one JSON line,
//! then the message exactly as it will be delivered (our Received header first). It is
//! streamed into `spool/incoming/<ID>.msg` while the client sends it, then fsynced, renamed
//! into `spool/queue/` and the directory fsynced: only then does the client get `250`
//! (the durability rule). A file left in `incoming/` by a crash or a vanished client was
//! never acknowledged and is removed at start-up.
//!
//! What happens to each queued message afterwards is recorded in an append-only log beside
//! it, `queue/<ID>.log` ([`state`]); the queue manager ([`runner`]) delivers, retries and
//! bounces, and [`ops`] holds the operations `mailgate queue` offers. A message whose
//! recipients are all delivered at the first attempt is removed without ever getting a log.
//! Where a crash can cause a duplicate (at least once, never lost) is listed in
//! docs/operations.md.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub mod journal;
pub mod ops;
pub mod runner;
pub mod state;

pub use runner::QueueRunner;
use state::Record;

/// A request from the control socket: scan now, answer when the attempts it started end.
pub type ScanRequest = tokio::sync::oneshot::Sender<()>;

const MAGIC: &str = "MAILGATE-SPOOL 1";

/// How a recipient is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "route", rename_all = "lowercase")]
pub enum RecipientRoute {
    Local { tenant: String },
    Relay,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    #[serde(flatten)]
    pub route: RecipientRoute,
}

/// Everything the queue must know about a message besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub received_at: i64,
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub auth_user: String,
    pub tenant: String,
    pub client_ip: String,
    pub endpoint: String,
}

/// The spool directories and the queue-id generator.
pub struct Spool {
    incoming: PathBuf,
    queue: PathBuf,
    counter: AtomicU64,
    notify: mpsc::UnboundedSender<String>,
    /// The server's group commit; `None` for `mailgate queue`, which never queues mail.
    journal: Option<Arc<journal::Journal>>,
}

/// Removes a file when dropped unless disarmed: an unacknowledged message never survives.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Content buffered in memory (as much as a usual 64 KiB write buffer) before it is
/// written out on the blocking pool: a typical message (a scan, a report) is written,
/// fsynced, renamed and its directory fsynced in a single hand-off at commit.
const SPILL: usize = 64 * 1024;

/// The spool file of a message being received.
enum FileSlot {
    /// Not created yet: everything so far is in the buffer.
    NotYet,
    Open(std::fs::File),
    /// Lost to an earlier I/O error (or held by a blocking write that failed).
    Broken,
}

impl FileSlot {
    /// Takes the file out for a blocking call: the open one, or `None` to create it there.
    fn take(&mut self) -> io::Result<Option<std::fs::File>> {
        match std::mem::replace(self, FileSlot::Broken) {
            FileSlot::NotYet => Ok(None),
            FileSlot::Open(f) => Ok(Some(f)),
            FileSlot::Broken => Err(io::Error::other("spool file unusable after an earlier error")),
        }
    }
}

/// Opens the spool file if this is its first write and writes `buf` to it. `create_new`:
/// an id that exists already is an error, never an overwritten message. The flag says
/// whether this writer has a file on disk (to remove if the message does not complete).
fn write_spool_file(file: Option<std::fs::File>, path: &Path, buf: &[u8]) -> (bool, io::Result<std::fs::File>) {
    use std::io::Write;
    let mut file = match file {
        Some(f) => f,
        None => match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => f,
            Err(e) => return (false, Err(e)),
        },
    };
    (true, file.write_all(buf).map(|()| file))
}

/// A message being received; dropped or aborted, it leaves nothing behind.
pub struct SpoolWriter {
    id: String,
    file: FileSlot,
    /// Where the file is (or will be) in `incoming/`.
    path: PathBuf,
    buf: Vec<u8>,
    guard: RemoveOnDrop,
    queue_dir: PathBuf,
    notify: mpsc::UnboundedSender<String>,
    content_bytes: u64,
    journal: Option<Arc<journal::Journal>>,
}

impl Spool {
    /// Opens the spool under `dir`, creating it, and discards unacknowledged files.
    /// Returns the receiver on which the runner learns of new messages.
    pub fn open(dir: &Path) -> io::Result<(Arc<Spool>, mpsc::UnboundedReceiver<String>)> {
        let incoming = dir.join("incoming");
        let queue = dir.join("queue");
        std::fs::create_dir_all(&incoming)?;
        std::fs::create_dir_all(&queue)?;
        // Make the directories themselves durable before anything is acknowledged in them.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            std::fs::File::open(d)?.sync_all()?;
        }
        // First close the window the journal left open, if the last run ended abruptly.
        let journal_dir = dir.join("journal");
        let r = journal::recover(&journal_dir, &incoming, &queue)?;
        if r.segments > 0 {
            tracing::info!(segments = r.segments, records = r.records, repaired = r.repaired, torn = r.torn, "spool journal recovered");
        }
        for entry in std::fs::read_dir(&incoming)? {
            let path = entry?.path();
            tracing::info!(file = %path.display(), "removing unacknowledged message left by an interrupted session");
            std::fs::remove_file(&path)?;
        }
        // A crash between removing `<ID>.msg` and `<ID>.log` leaves an orphan log.
        for entry in std::fs::read_dir(&queue)? {
            let path = entry?.path();
            let is_log = path.extension().is_some_and(|e| e == "log" || e == "done");
            if is_log && !path.with_extension("msg").exists() {
                std::fs::remove_file(&path)?;
            }
        }
        let journal = Some(Arc::new(journal::Journal::start(&journal_dir, &incoming, &queue)?));
        let (tx, rx) = mpsc::unbounded_channel();
        let spool = Spool { incoming, queue, counter: AtomicU64::new(0), notify: tx, journal };
        Ok((Arc::new(spool), rx))
    }

    /// Opens an existing spool without touching it (for `mailgate queue`, which may run
    /// beside a server): nothing is cleaned up, and new messages are not announced.
    pub fn attach(dir: &Path) -> io::Result<Arc<Spool>> {
        let queue = dir.join("queue");
        if !queue.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no spool at {} (has the server run yet?)", dir.display())));
        }
        let (tx, _) = mpsc::unbounded_channel();
        Ok(Arc::new(Spool { incoming: dir.join("incoming"), queue, counter: AtomicU64::new(0), notify: tx, journal: None }))
    }

    /// A new queue id: microseconds since the epoch and a counter, 16 upper-case hex digits.
    pub fn new_id(&self) -> String {
        let micros = chrono::Utc::now().timestamp_micros() as u64;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFF;
        format!("{:013X}{:03X}", micros & 0x1F_FFFF_FFFF_FFFF, n)
    }

    /// Starts a message: writes the envelope, then `prefix` (the Received header).
    pub async fn create(&self, envelope: &Envelope, prefix: &[u8]) -> io::Result<SpoolWriter> {
        // The file is created when the buffer first spills, or at commit: a message that
        // fits in the buffer costs one hand-off to the blocking pool in all.
        let path = self.incoming.join(format!("{}.msg", envelope.id));
        // Armed once this writer has created the file: never remove another's.
        let guard = RemoveOnDrop(None);
        let json = serde_json::to_string(envelope).map_err(io::Error::other)?;
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(format!("{MAGIC}\n{json}\n").as_bytes());
        buf.extend_from_slice(prefix);
        Ok(SpoolWriter {
            id: envelope.id.clone(),
            file: FileSlot::NotYet,
            path,
            buf,
            guard,
            queue_dir: self.queue.clone(),
            notify: self.notify.clone(),
            content_bytes: 0,
            journal: self.journal.clone(),
        })
    }

    /// The ids of all queued messages, oldest first.
    pub fn queued_ids(&self) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.queue)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".msg")).map(String::from))
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The number of messages being received right now.
    pub fn incoming_count(&self) -> usize {
        std::fs::read_dir(&self.incoming).map(|d| d.count()).unwrap_or(0)
    }

    /// The message file of a queued entry.
    pub fn msg_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.log"))
    }

    /// Where unreadable entries are moved (`spool/corrupt/`).
    pub fn corrupt_dir(&self) -> PathBuf {
        self.queue.parent().map(|p| p.join("corrupt")).unwrap_or_default()
    }

    /// Reads a queued message's envelope and the offset where its content starts.
    pub async fn read_envelope(&self, id: &str) -> io::Result<(Envelope, u64)> {
        let path = self.msg_path(id);
        tokio::task::spawn_blocking(move || read_envelope_file(&path)).await.map_err(io::Error::other)?
    }

    /// The text of an entry's log (`<ID>.log`, and a `.done` file of the earlier format).
    pub fn read_log(&self, id: &str) -> io::Result<String> {
        let mut text = String::new();
        for path in [self.queue.join(format!("{id}.done")), self.log_path(id)] {
            // Bytes, not a string: a record torn inside a multi-byte character must not
            // make the whole entry unreadable.
            match std::fs::read(&path) {
                Ok(t) => text.push_str(&String::from_utf8_lossy(&t)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(text)
    }

    /// Appends records to an entry's log in one write, then fsyncs it: when this returns
    /// Ok, they survive a crash. Only for an entry that exists (never creates an orphan).
    pub fn append(&self, id: &str, records: &[Record]) -> io::Result<()> {
        use std::io::Write;
        if records.is_empty() {
            return Ok(());
        }
        if !self.msg_path(id).exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no queued message {id}")));
        }
        // Each append starts on a new line, so a record torn by a crash never swallows the
        // next one (the fold skips blank and unparsable lines).
        let text: String = std::iter::once("\n".to_string()).chain(records.iter().map(Record::line)).collect();
        let path = self.log_path(id);
        let created = !path.exists();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        if created {
            // `mailgate queue ...` run as root must not leave a log the server (running as
            // its own user) cannot append to: the log gets the message file's owner.
            use std::os::unix::fs::MetadataExt;
            let msg = std::fs::metadata(self.msg_path(id))?;
            let log = f.metadata()?;
            if (log.uid(), log.gid()) != (msg.uid(), msg.gid()) {
                std::os::unix::fs::fchown(&f, Some(msg.uid()), Some(msg.gid()))?;
            }
        }
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
            let _ = f.set_len(before); // no half record left behind (ENOSPC)
            return Err(e);
        }
        Ok(())
    }

    /// Takes the entry's lock (an exclusive `flock` on `<ID>.msg`) without waiting: the
    /// runner holds it while it works on the entry, `queue delete` while it removes it.
    /// `Ok(None)`: someone else holds it.
    pub fn try_lock(&self, id: &str) -> io::Result<Option<std::fs::File>> {
        let f = std::fs::File::open(self.msg_path(id))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Removes a finished entry. The directory is not fsynced: if a crash loses the unlink,
    /// the log still says every recipient is final, so nothing is delivered twice (for a
    /// message removed without records, see docs/operations.md).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        std::fs::remove_file(self.msg_path(id))?;
        for ext in ["log", "done"] {
            let _ = std::fs::remove_file(self.queue.join(format!("{id}.{ext}")));
        }
        Ok(())
    }

    /// The spool's queue directory.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }
}

impl SpoolWriter {
    /// Content bytes written so far (the Received header excluded).
    pub fn content_bytes(&self) -> u64 {
        self.content_bytes
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.content_bytes += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= SPILL {
            self.spill().await?;
        }
        Ok(())
    }

    /// Writes the buffer out on the blocking pool.
    async fn spill(&mut self) -> io::Result<()> {
        let file = self.file.take()?;
        let path = self.path.clone();
        let buf = std::mem::take(&mut self.buf);
        let (exists, file, buf) = tokio::task::spawn_blocking(move || {
            let (exists, r) = write_spool_file(file, &path, &buf);
            (exists, r, buf)
        })
        .await
        .map_err(io::Error::other)?;
        if exists {
            self.guard.0 = Some(self.path.clone());
        }
        self.file = FileSlot::Open(file?);
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Makes the message durable and queues it. After this returns Ok the client may be
    /// told `250`. A message still in the buffer goes through the journal's group commit
    /// ([`journal`]); one that spilled to a file (larger than the buffer), or any message
    /// without a journal, in one hand-off to the blocking pool: write what is buffered,
    /// fsync the file, link it into the queue, fsync the queue directory.
    pub async fn commit(mut self) -> io::Result<String> {
        if let (FileSlot::NotYet, Some(journal)) = (&self.file, self.journal.take()) {
            journal.commit(self.id.clone(), std::mem::take(&mut self.buf)).await?;
            let _ = self.notify.send(self.id.clone());
            return Ok(self.id);
        }
        let file = self.file.take()?;
        let buf = std::mem::take(&mut self.buf);
        let from = self.path.clone();
        let to = self.queue_dir.join(format!("{}.msg", self.id));
        let dir = self.queue_dir.clone();
        let (exists, result) = tokio::task::spawn_blocking(move || {
            let (exists, file) = write_spool_file(file, &from, &buf);
            (exists, file.and_then(|file| make_durable_and_queue(&file, &from, &to, &dir)))
        })
        .await
        .map_err(io::Error::other)?;
        // Not committed: remove the file if this writer made one (the guard, when dropped).
        self.guard.0 = (exists && result.is_err()).then(|| self.path.clone());
        result?;
        let _ = self.notify.send(self.id.clone());
        Ok(self.id)
    }
}

/// fsync the complete spool file, link it into the queue and make that link durable.
fn make_durable_and_queue(file: &std::fs::File, from: &Path, to: &Path, dir: &Path) -> io::Result<()> {
    file.sync_all()?;
    link_into_queue(from, to)?;
    if let Err(e) = crate::durable::sync_dir(dir) {
        // The client will be told 451 and send again: this copy must not be delivered.
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    Ok(())
}

/// Moves a complete spool file from `incoming/` into `queue/` (the directory is not
/// fsynced here). Link + unlink, not rename: an id that somehow exists already in the
/// queue is an error (451, the client retries), never an overwritten message.
fn link_into_queue(from: &Path, to: &Path) -> io::Result<()> {
    let linked = std::fs::hard_link(from, to);
    let _ = std::fs::remove_file(from);
    linked
}

fn read_envelope_file(path: &Path) -> io::Result<(Envelope, u64)> {
    read_envelope_from(&std::fs::File::open(path)?)
}

/// Reads the envelope at the start of a spool file opened for reading (at offset 0),
/// and the offset where the content starts.
pub fn read_envelope_from(file: &std::fs::File) -> io::Result<(Envelope, u64)> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::io::Read::take(file, 1 << 24));
    let mut magic = String::new();
    reader.read_line(&mut magic)?;
    if magic.trim_end() != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a Mailgate spool file"));
    }
    let mut json = String::new();
    reader.read_line(&mut json)?;
    let env: Envelope = serde_json::from_str(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((env, (magic.len() + json.len()) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            received_at: 0,
            sender: "a@x.test".into(),
            recipients: vec![Recipient { address: "b@x.test".into(), route: RecipientRoute::Local { tenant: "t".into() } }],
            auth_user: "a@x.test".into(),
            tenant: "t".into(),
            client_ip: "127.0.0.1".into(),
            endpoint: "e".into(),
        }
    }

    /// More entries than the runner runs at once (4 x delivery.concurrency): the rest wait
    /// their turn as ids, and all are delivered; a scan waits for the waiting ones too.
    #[tokio::test]
    async fn a_backlog_larger_than_the_task_limit_is_delivered_whole() {
        let t = tempfile::tempdir().unwrap();
        let toml = format!(
            "hostname = \"h.test\"\ndata_dir = \"{}\"\n[[tls.certificate]]\ncert = \"c\"\nkey = \"k\"\n[[endpoint]]\nname = \"e\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n[delivery]\nconcurrency = 1\n",
            t.path().display()
        );
        let config = Arc::new(crate::config::Config::from_toml(&t.path().join("m.toml"), &toml).unwrap());
        let (spool, new) = Spool::open(&config.spool_dir()).unwrap();
        for _ in 0..40 {
            let id = spool.new_id();
            let env = Envelope { received_at: chrono::Utc::now().timestamp(), ..envelope(&id) };
            let mut w = spool.create(&env, b"").await.unwrap();
            w.write(b"Subject: backlog\r\n\r\nbody\r\n").await.unwrap();
            w.commit().await.unwrap();
        }
        let directory = crate::directory::Directory::open(&t.path().join("dir.sqlite")).await.unwrap();
        let runner = QueueRunner::new(spool.clone(), config.clone(), directory, crate::clock::system_clock(), Default::default());
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (scan_tx, scan) = mpsc::channel(1);
        let running = tokio::spawn(runner.run(new, scan, stop));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        scan_tx.send(done_tx).await.unwrap();
        done.await.unwrap();
        assert!(spool.queued_ids().unwrap().is_empty(), "every entry delivered and removed");
        let delivered = std::fs::read_dir(config.maildir_root().join("x.test/b/new")).unwrap().count();
        assert_eq!(delivered, 40);
        stop_tx.send(true).unwrap();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn small_messages_touch_the_disk_only_at_commit_large_ones_spill() {
        let t = tempfile::tempdir().unwrap();
        let (spool, _rx) = Spool::open(t.path()).unwrap();
        let id = spool.new_id();
        let mut w = spool.create(&envelope(&id), b"").await.unwrap();
        w.write(&[b'a'; 1000]).await.unwrap();
        assert_eq!(spool.incoming_count(), 0, "a small message stays in memory until commit");
        w.write(&vec![b'b'; SPILL]).await.unwrap();
        assert_eq!(spool.incoming_count(), 1, "beyond the buffer, it goes to incoming/");
        drop(w);
        assert_eq!(spool.incoming_count(), 0, "an abandoned message leaves nothing");

        // An id already in incoming/ (another writer's) is an error at commit, and that
        // other file is left alone.
        let id = spool.new_id();
        let theirs = t.path().join("incoming").join(format!("{id}.msg"));
        std::fs::write(&theirs, b"another writer").unwrap();
        let w = spool.create(&envelope(&id), b"").await.unwrap();
        assert!(w.commit().await.is_err());
        assert_eq!(std::fs::read(&theirs).unwrap(), b"another writer");
        assert!(spool.queued_ids().unwrap().is_empty());
    }

    #[tokio::test]
    async fn commit_is_atomic_and_abort_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let (spool, mut rx) = Spool::open(t.path()).unwrap();
        let id = spool.new_id();
        let mut w = spool.create(&envelope(&id), b"Received: x\r\n").await.unwrap();
        w.write(b"body\r\n").await.unwrap();
        assert!(spool.queued_ids().unwrap().is_empty(), "nothing queued before commit");
        assert_eq!(w.commit().await.unwrap(), id);
        assert_eq!(rx.recv().await.unwrap(), id);
        let (env, offset) = spool.read_envelope(&id).await.unwrap();
        assert_eq!(env, envelope(&id));
        let bytes = std::fs::read(t.path().join("queue").join(format!("{id}.msg"))).unwrap();
        assert_eq!(&bytes[offset as usize..], b"Received: x\r\nbody\r\n");
        let id2 = spool.new_id();
        assert_ne!(id, id2);
        let w = spool.create(&envelope(&id2), b"").await.unwrap();
        drop(w);
        assert_eq!(spool.incoming_count(), 0);
    }

    #[tokio::test]
    async fn a_torn_log_never_loses_the_next_record_nor_the_entry() {
        let t = tempfile::tempdir().unwrap();
        let (spool, _rx) = Spool::open(t.path()).unwrap();
        let id = spool.new_id();
        let w = spool.create(&envelope(&id), b"").await.unwrap();
        w.commit().await.unwrap();
        // A crash tore a record in the middle of a multi-byte character.
        let mut torn = br#"{"t":"deferred","rcpt":"b@x.test","at":1,"failure":{"kind":"temporary","reason":"451 caf"#.to_vec();
        torn.push(0xC3);
        std::fs::write(t.path().join(format!("queue/{id}.log")), &torn).unwrap();
        let done = state::Record::Delivered { rcpt: "b@x.test".into(), at: 2, to: "maildir".into() };
        spool.append(&id, &[done]).unwrap();
        let log = spool.read_log(&id).expect("a torn character does not make the log unreadable");
        let st = state::EntryState::new(&["b@x.test".to_string()], &log);
        assert!(st.is_complete(), "the record after the torn line counts: {log:?}");
    }

    /// A power loss left a queued file empty (its data never written) while its journal
    /// record survived: opening the spool rewrites it before anything reads the queue.
    #[tokio::test]
    async fn startup_restores_a_queued_file_from_the_journal() {
        let t = tempfile::tempdir().unwrap();
        for d in ["incoming", "queue", "journal"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let whole = format!("{MAGIC}\n{}\nSubject: kept\r\n\r\nbody\r\n", serde_json::to_string(&envelope("LOST")).unwrap());
        let mut seg = Vec::new();
        journal::encode_into(&mut seg, "LOST", whole.as_bytes());
        std::fs::write(t.path().join("journal/00000000000000A1.jnl"), &seg).unwrap();
        std::fs::write(t.path().join("queue/LOST.msg"), b"").unwrap();
        let (spool, _rx) = Spool::open(t.path()).unwrap();
        assert_eq!(spool.queued_ids().unwrap(), vec!["LOST".to_string()]);
        let (env, _) = spool.read_envelope("LOST").await.unwrap();
        assert_eq!(env, envelope("LOST"));
        assert_eq!(std::fs::read(spool.msg_path("LOST")).unwrap(), whole.as_bytes());
        assert!(!t.path().join("journal/00000000000000A1.jnl").exists(), "the recovered segment is gone");
    }

    #[tokio::test]
    async fn startup_discards_unacknowledged_and_runner_quarantines_garbage() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("incoming")).unwrap();
        std::fs::create_dir_all(t.path().join("queue")).unwrap();
        std::fs::write(t.path().join("incoming/HALF.msg"), b"partial").unwrap();
        std::fs::write(t.path().join("queue/GARBAGE.msg"), b"not a spool file").unwrap();
        std::fs::write(t.path().join("queue/ORPHAN.done"), b"b@x.test\n").unwrap();
        let (spool, _rx) = Spool::open(t.path()).unwrap();
        assert_eq!(spool.incoming_count(), 0);
        assert!(!t.path().join("queue/ORPHAN.done").exists(), "orphan .done records are removed");
                let toml = format!(
            "hostname = \"h.test\"\ndata_dir = \"{}\"\n[[tls.certificate]]\ncert = \"c\"\nkey = \"k\"\n[[endpoint]]\nname = \"e\"\nlisten = [\"127.0.0.1:0\"]\ntls_mode = \"starttls\"\n",
            t.path().display()
        );
        let config = Arc::new(crate::config::Config::from_toml(&t.path().join("m.toml"), &toml).unwrap());
        let directory = crate::directory::Directory::open(&t.path().join("dir.sqlite")).await.unwrap();
        let runner = QueueRunner::new(spool.clone(), config, directory, crate::clock::system_clock(), Default::default());
        runner.process("GARBAGE").await;
        assert!(spool.queued_ids().unwrap().is_empty());
        assert!(t.path().join("corrupt/GARBAGE.msg").exists());
    }
}
