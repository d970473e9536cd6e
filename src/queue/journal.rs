//! The spool's journal: group commit of message data.
//!
//! Without it, every accepted message costs its own file fsync and a share of a directory
//! fsync before the `250`. With it, messages committed at about the same time share one:
//! a single writer thread takes every commit waiting for it (a batch), writes their
//! complete spool files into `incoming/`, appends the same bytes as records to the
//! current journal segment (`spool/journal/<SEQ>.jnl`) in one write, `fdatasync`s the
//! segment once, links the files into `queue/` and fsyncs `queue/` once. Only then does
//! each session learn that its message is durable (the durability rule: the message is on
//! disk, fsynced, and so is its directory entry). The files in `queue/` stay exactly what
//! they were without a journal, so the queue runner and `mailgate queue` never know.
//!
//! What the journal adds is a window in which a file in `queue/` may not be on disk in
//! full (its data was never fsynced), while its journal record is. The window closes at
//! the segment's *checkpoint*, about a second later: the segment is rotated, every file it
//! names that is still queued is fsynced, `queue/` is fsynced (so files removed meanwhile
//! stay removed), and the segment is deleted. After a crash, [`recover`] closes it
//! instead: a queued file that differs from its record is rewritten from the record; a
//! file that is absent was delivered and removed (links are durable before the `250`, so
//! an acknowledged message is never absent for any other reason). Most messages are
//! delivered and removed within milliseconds, before the kernel ever writes their spool
//! file out: the journal is then the only copy written to the disk.
//!
//! Record format, one after the other in a segment: a header line
//! `MGJ1 <ID> <LENGTH> <CRC-32C in hex>\n`, then LENGTH bytes: the spool file. A write
//! or sync that fails makes the writer start a new segment, and commit nothing until it
//! has one, so a torn or corrupt record can only be the last one of its segment (a crash
//! or an I/O error mid-write): reading stops there.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const HEADER: &str = "MGJ1";
/// A segment is checkpointed this long after it was started (or when it is this large).
const ROTATE_AFTER: Duration = Duration::from_secs(1);
const ROTATE_SIZE: u64 = 64 << 20;
/// At most this many commits share one fdatasync (bounds one batch's memory and latency).
const MAX_BATCH: usize = 256;
/// CRC-32C, sliced by 16 (about four times the byte-wise table's speed).
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// Where one message's files go.
struct Paths {
    incoming: PathBuf,
    queued: PathBuf,
}

enum Request {
    Commit { id: String, bytes: Vec<u8>, reply: tokio::sync::oneshot::Sender<io::Result<()>> },
    /// Rotate now and answer once every earlier segment is checkpointed (tests).
    Checkpoint(tokio::sync::oneshot::Sender<()>),
}

/// Counters (read by the tests).
#[derive(Default, Debug)]
pub struct Stats {
    /// fdatasyncs of a segment (one per batch).
    pub batches: AtomicU64,
    /// Messages committed through the journal.
    pub records: AtomicU64,
    /// Segments checkpointed and deleted.
    pub checkpoints: AtomicU64,
}

/// The handle sessions commit through; the writer thread ends when the last one is dropped.
pub struct Journal {
    tx: mpsc::Sender<Request>,
    stats: Arc<Stats>,
}

impl Journal {
    /// Starts the writer on a new segment in `dir` (after [`recover`] emptied it).
    pub fn start(dir: &Path, incoming: &Path, queue: &Path) -> io::Result<Journal> {
        Self::start_with(dir, incoming, queue, ROTATE_AFTER)
    }

    /// [`Journal::start`], checkpointing segments `rotate_after` after they start.
    fn start_with(dir: &Path, incoming: &Path, queue: &Path, rotate_after: Duration) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let seq = segments(dir)?.last().map_or(1, |(n, _)| n + 1);
        let stats = Arc::new(Stats::default());
        let (retire_tx, retire_rx) = mpsc::channel::<Retire>();
        let queue_dir = queue.to_owned();
        let retire_stats = stats.clone();
        std::thread::Builder::new()
            .name("spool-checkpoint".into())
            .spawn(move || retirer(retire_rx, &queue_dir, &retire_stats))?;
        let mut writer = Writer {
            dir: dir.to_owned(),
            incoming: incoming.to_owned(),
            queue: queue.to_owned(),
            segment: Segment::create(dir, seq)?,
            rotate_after,
            retire: retire_tx,
            stats: stats.clone(),
            buf: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("spool-journal".into()).spawn(move || writer.run(rx))?;
        Ok(Journal { tx, stats })
    }

    /// Makes a complete spool file durable and queued as `queue/<id>.msg`, sharing the
    /// syncs with every commit waiting at the same time. Ok: the client may get `250`.
    pub async fn commit(&self, id: String, bytes: Vec<u8>) -> io::Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Request::Commit { id, bytes, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Rotates the segment and waits until every segment before it is checkpointed.
    pub async fn checkpoint(&self) -> io::Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Request::Checkpoint(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn gone() -> io::Error {
    io::Error::other("the spool journal's writer has stopped")
}

/// The segment being appended to.
struct Segment {
    path: PathBuf,
    file: std::fs::File,
    started: Instant,
    len: u64,
    /// The ids recorded in it, for its checkpoint.
    ids: Vec<String>,
    /// A write or sync failed: a torn record may end it, so nothing is appended again.
    broken: bool,
}

impl Segment {
    /// Creates segment `seq` and makes its name durable before any record relies on it.
    fn create(dir: &Path, seq: u64) -> io::Result<Segment> {
        let path = dir.join(format!("{seq:016X}.jnl"));
        let file = std::fs::OpenOptions::new().append(true).create_new(true).open(&path)?;
        crate::durable::sync_dir(dir)?;
        Ok(Segment { path, file, started: Instant::now(), len: 0, ids: Vec::new(), broken: false })
    }

    fn seq(&self) -> u64 {
        seq_of(&self.path).unwrap_or(0)
    }
}

/// A rotated segment on its way to the checkpoint thread.
enum Retire {
    Segment { path: PathBuf, ids: Vec<String> },
    /// Answered once every segment sent before it is done.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

struct Writer {
    dir: PathBuf,
    incoming: PathBuf,
    queue: PathBuf,
    segment: Segment,
    rotate_after: Duration,
    retire: mpsc::Sender<Retire>,
    stats: Arc<Stats>,
    buf: Vec<u8>,
}

struct Pending {
    id: String,
    bytes: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<io::Result<()>>,
    paths: Paths,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(self.rotate_after) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.rotate_if_due(true);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut barriers = Vec::new();
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Commit { id, bytes, reply } => {
                        let paths = Paths {
                            incoming: self.incoming.join(format!("{id}.msg")),
                            queued: self.queue.join(format!("{id}.msg")),
                        };
                        batch.push(Pending { id, bytes, reply, paths });
                    }
                    Request::Checkpoint(reply) => barriers.push(reply),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if barriers.is_empty() {
                self.rotate_if_due(false);
            } else {
                self.rotate();
                for b in barriers {
                    let _ = self.retire.send(Retire::Barrier(b));
                }
            }
        }
        // Every handle is gone (shutdown): checkpoint what is left, so the next start
        // has nothing to recover.
        let ids = std::mem::take(&mut self.segment.ids);
        let _ = self.retire.send(Retire::Segment { path: self.segment.path.clone(), ids });
    }

    /// One group commit: files, one record write + fdatasync, links, one directory fsync.
    fn commit_batch(&mut self, batch: Vec<Pending>) {
        // 1. Each complete file in incoming/ (no fsync: the journal is the durable copy).
        let mut ok = Vec::with_capacity(batch.len());
        for p in batch {
            match super::write_spool_file(None, &p.paths.incoming, &p.bytes) {
                (_, Ok(_)) => ok.push(p),
                (created, Err(e)) => {
                    if created {
                        let _ = std::fs::remove_file(&p.paths.incoming);
                    }
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        if ok.is_empty() {
            return;
        }
        // 2. The records, in one write, and one fdatasync.
        if let Err(e) = self.append(&ok) {
            tracing::error!(error = %e, segment = %self.segment.path.display(), "cannot write the spool journal; starting a new segment");
            self.rotate();
            for p in ok {
                let _ = std::fs::remove_file(&p.paths.incoming);
                let _ = p.reply.send(Err(shared(&e)));
            }
            return;
        }
        // 3. Link into the queue: an id that exists already is an error, never an overwrite.
        let mut linked = Vec::with_capacity(ok.len());
        for p in ok {
            match super::link_into_queue(&p.paths.incoming, &p.paths.queued) {
                Ok(()) => linked.push(p),
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        // 4. The links durable, then every session told at once.
        match crate::durable::sync_dir(&self.queue) {
            Ok(()) => {
                self.stats.records.fetch_add(linked.len() as u64, Ordering::Relaxed);
                for p in linked {
                    self.segment.ids.push(p.id);
                    let _ = p.reply.send(Ok(()));
                }
            }
            Err(e) => {
                // The clients get 451 and send again: these copies must not be delivered.
                for p in linked {
                    let _ = std::fs::remove_file(&p.paths.queued);
                    let _ = p.reply.send(Err(shared(&e)));
                }
            }
        }
    }

    fn append(&mut self, batch: &[Pending]) -> io::Result<()> {
        if self.segment.broken {
            // The last failure's rotation failed too: try again, and never write after a
            // possibly torn record (recovery stops reading there).
            self.rotate();
            if self.segment.broken {
                return Err(io::Error::other("the spool journal cannot start a new segment after a write error"));
            }
        }
        self.buf.clear();
        for p in batch {
            encode_into(&mut self.buf, &p.id, &p.bytes);
        }
        if let Err(e) = self.segment.file.write_all(&self.buf).and_then(|()| self.segment.file.sync_data()) {
            self.segment.broken = true;
            return Err(e);
        }
        self.segment.len += self.buf.len() as u64;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new(); // a batch of large messages does not pin its memory
        }
        Ok(())
    }

    fn rotate_if_due(&mut self, idle: bool) {
        let s = &self.segment;
        let due = s.len >= ROTATE_SIZE || (!s.ids.is_empty() && (idle || s.started.elapsed() >= self.rotate_after));
        if due {
            self.rotate();
        }
    }

    /// Starts a new segment and hands the old one to the checkpoint thread. If the new
    /// one cannot be created, the old one stays in use (and is retried at the next batch).
    fn rotate(&mut self) {
        let next = match Segment::create(&self.dir, self.segment.seq() + 1) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot start a new spool journal segment");
                return;
            }
        };
        let old = std::mem::replace(&mut self.segment, next);
        let _ = self.retire.send(Retire::Segment { path: old.path, ids: old.ids });
    }
}

/// Appends one record (header line, then the spool file) to `buf`.
pub(crate) fn encode_into(buf: &mut Vec<u8>, id: &str, bytes: &[u8]) {
    buf.extend_from_slice(format!("{HEADER} {id} {} {:08x}\n", bytes.len(), CRC.checksum(bytes)).as_bytes());
    buf.extend_from_slice(bytes);
}

/// The same failure for each commit of a batch (io::Error is not Clone).
fn shared(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// The checkpoint thread: retires rotated segments in order.
fn retirer(rx: mpsc::Receiver<Retire>, queue: &Path, stats: &Stats) {
    for job in rx {
        match job {
            Retire::Segment { path, ids } => match checkpoint(&path, &ids, queue) {
                Ok(()) => {
                    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                // The segment stays: the next start's recovery covers its messages.
                Err(e) => tracing::error!(error = %e, segment = %path.display(), "cannot checkpoint a spool journal segment; it is kept for recovery at the next start"),
            },
            Retire::Barrier(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// Makes every still-queued message of a segment durable in its own file, and the removal
/// of the others durable, then deletes the segment.
fn checkpoint(segment: &Path, ids: &[String], queue: &Path) -> io::Result<()> {
    for id in ids {
        match std::fs::File::open(queue.join(format!("{id}.msg"))) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    crate::durable::sync_dir(queue)?;
    std::fs::remove_file(segment)?;
    crate::durable::sync_dir(segment.parent().unwrap_or(Path::new(".")))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(seq) = seq_of(&path) {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?.strip_suffix(".jnl")?;
    u64::from_str_radix(name, 16).ok()
}

/// What [`recover`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Complete records read.
    pub records: usize,
    /// Queued files rewritten from their record (absent from the disk or different).
    pub repaired: usize,
    /// Segments that ended in a torn or corrupt record (a crash mid-write).
    pub torn: usize,
}

/// Parses a segment's records: `(id, bytes)` in order, and whether it ended torn.
pub fn parse(data: &[u8]) -> (Vec<(String, &[u8])>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((id, bytes, after)) => {
                out.push((id, bytes));
                rest = after;
            }
            None => return (out, true),
        }
    }
    (out, false)
}

fn parse_one(data: &[u8]) -> Option<(String, &[u8], &[u8])> {
    let nl = memchr::memchr(b'\n', &data[..data.len().min(128)])?;
    let header = std::str::from_utf8(&data[..nl]).ok()?;
    let mut f = header.split(' ');
    let (magic, id, len, crc) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if magic != HEADER || f.next().is_some() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let len: usize = len.parse().ok()?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    let body = data.get(nl + 1..)?;
    let bytes = body.get(..len)?;
    (CRC.checksum(bytes) == crc).then(|| (id.to_string(), bytes, &body[len..]))
}

/// Closes the window of every segment left by an earlier run (a crash, or a checkpoint
/// that failed): each queued file named by a record is made equal to its record and
/// durable; absent files stay absent (removed after delivery). Then the segments are
/// deleted. Runs at start-up, before anything else touches the spool.
pub fn recover(dir: &Path, incoming: &Path, queue: &Path) -> io::Result<Recovery> {
    let mut report = Recovery::default();
    if !dir.is_dir() {
        return Ok(report);
    }
    let list = segments(dir)?;
    // Oldest first, one segment in memory at a time (an id is never reused; were it, the
    // newer record would win).
    for (_, path) in &list {
        let data = std::fs::read(path)?;
        let (records, torn) = parse(&data);
        if torn {
            report.torn += 1;
            tracing::warn!(segment = %path.display(), "spool journal segment ends in a torn record (a crash while writing it); that message was never acknowledged");
        }
        report.records += records.len();
        for (id, bytes) in records {
            if repair(&id, bytes, incoming, queue)? {
                report.repaired += 1;
            }
        }
    }
    crate::durable::sync_dir(queue)?;
    for (_, path) in &list {
        std::fs::remove_file(path)?;
    }
    crate::durable::sync_dir(dir)?;
    report.segments = list.len();
    Ok(report)
}

/// Makes `queue/<id>.msg`, if it exists, equal to `bytes` and durable. True if rewritten.
fn repair(id: &str, bytes: &[u8], incoming: &Path, queue: &Path) -> io::Result<bool> {
    let queued = queue.join(format!("{id}.msg"));
    match std::fs::read(&queued) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(current) if current == bytes => {
            std::fs::File::open(&queued)?.sync_all()?;
            return Ok(false);
        }
        Ok(_) => {}
    }
    tracing::warn!(queue_id = id, "queued message was not complete on disk after a crash; rewritten from the spool journal");
    let tmp = incoming.join(format!("{id}.repair"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &queued)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs {
        _t: tempfile::TempDir,
        journal: PathBuf,
        incoming: PathBuf,
        queue: PathBuf,
    }

    fn dirs() -> Dirs {
        let t = tempfile::tempdir().unwrap();
        let (journal, incoming, queue) = (t.path().join("journal"), t.path().join("incoming"), t.path().join("queue"));
        for d in [&journal, &incoming, &queue] {
            std::fs::create_dir_all(d).unwrap();
        }
        Dirs { _t: t, journal, incoming, queue }
    }

    fn record(id: &str, bytes: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        encode_into(&mut r, id, bytes);
        r
    }

    #[test]
    fn records_parse_back_and_a_torn_tail_is_dropped() {
        let mut seg = record("A1", b"first\r\n");
        seg.extend(record("B2", b""));
        let (recs, torn) = parse(&seg);
        assert!(!torn);
        assert_eq!(recs, vec![("A1".to_string(), &b"first\r\n"[..]), ("B2".to_string(), &b""[..])]);
        let whole = seg.len();
        seg.extend(record("C3", b"third message"));
        for cut in whole + 1..seg.len() {
            let (recs, torn) = parse(&seg[..cut]);
            assert!(torn, "cut at {cut}");
            assert_eq!(recs.len(), 2, "cut at {cut}");
        }
        // A flipped bit in the content fails its checksum.
        let last = seg.len() - 1;
        seg[last] ^= 1;
        assert_eq!(parse(&seg).0.len(), 2);
    }

    #[tokio::test]
    async fn concurrent_commits_share_syncs_and_land_in_the_queue() {
        let d = dirs();
        let j = Arc::new(Journal::start(&d.journal, &d.incoming, &d.queue).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move { j.commit(format!("M{i:03}"), format!("message {i}").into_bytes()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..64 {
            assert_eq!(std::fs::read(d.queue.join(format!("M{i:03}.msg"))).unwrap(), format!("message {i}").into_bytes());
        }
        assert_eq!(std::fs::read_dir(&d.incoming).unwrap().count(), 0);
        let s = j.stats();
        assert_eq!(s.records.load(Ordering::Relaxed), 64);
        assert!(s.batches.load(Ordering::Relaxed) < 64, "64 concurrent commits took {:?} fdatasyncs", s.batches);
    }

    #[tokio::test]
    async fn a_duplicate_id_fails_alone_and_the_existing_file_is_kept() {
        let d = dirs();
        std::fs::write(d.queue.join("DUP.msg"), b"theirs").unwrap();
        let j = Journal::start(&d.journal, &d.incoming, &d.queue).unwrap();
        assert!(j.commit("DUP".into(), b"mine".to_vec()).await.is_err());
        j.commit("NEW".into(), b"fine".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(d.queue.join("DUP.msg")).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(&d.incoming).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_checkpoint_deletes_the_segment_and_keeps_removed_files_removed() {
        let d = dirs();
        let j = Journal::start(&d.journal, &d.incoming, &d.queue).unwrap();
        j.commit("KEEP".into(), b"kept".to_vec()).await.unwrap();
        j.commit("GONE".into(), b"delivered".to_vec()).await.unwrap();
        std::fs::remove_file(d.queue.join("GONE.msg")).unwrap();
        j.checkpoint().await.unwrap();
        assert_eq!(j.stats().checkpoints.load(Ordering::Relaxed), 1);
        let left: Vec<_> = segments(&d.journal).unwrap();
        assert_eq!(left.len(), 1, "only the new, empty segment: {left:?}");
        assert_eq!(std::fs::metadata(&left[0].1).unwrap().len(), 0);
        assert!(!d.queue.join("GONE.msg").exists());
        assert_eq!(std::fs::read(d.queue.join("KEEP.msg")).unwrap(), b"kept");
    }

    /// A segment whose write fails (here: a full disk) is never written again: the batch
    /// fails and leaves no file behind, and the next commit goes to a new segment.
    #[tokio::test]
    async fn a_failed_write_fails_its_batch_and_the_writer_moves_to_a_new_segment() {
        let d = dirs();
        let first = d.journal.join("0000000000000001.jnl");
        std::fs::write(&first, b"").unwrap();
        let full = std::fs::OpenOptions::new().append(true).open("/dev/full").unwrap();
        let segment = Segment { path: first.clone(), file: full, started: Instant::now(), len: 0, ids: Vec::new(), broken: false };
        let (retire, retire_rx) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let (queue, retire_stats) = (d.queue.clone(), stats.clone());
        std::thread::spawn(move || retirer(retire_rx, &queue, &retire_stats));
        let mut writer = Writer {
            dir: d.journal.clone(),
            incoming: d.incoming.clone(),
            queue: d.queue.clone(),
            segment,
            rotate_after: Duration::from_secs(3600),
            retire,
            stats: stats.clone(),
            buf: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || writer.run(rx));
        let j = Journal { tx, stats };
        // The next segment's name is taken: the writer cannot move on at first.
        let second_path = d.journal.join("0000000000000002.jnl");
        std::fs::create_dir(&second_path).unwrap();
        let e = j.commit("FULL".into(), b"lost to ENOSPC".to_vec()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert!(!d.queue.join("FULL.msg").exists());
        assert_eq!(std::fs::read_dir(&d.incoming).unwrap().count(), 0);
        // Still on the broken segment: refused without writing after its torn record.
        let e = j.commit("WAIT".into(), b"refused".to_vec()).await.unwrap_err();
        assert!(e.to_string().contains("cannot start a new segment"), "{e}");
        assert!(!d.queue.join("WAIT.msg").exists());
        std::fs::remove_dir(&second_path).unwrap();
        j.commit("NEXT".into(), b"fine".to_vec()).await.unwrap();
        let second = std::fs::read(d.journal.join("0000000000000002.jnl")).unwrap();
        let (records, torn) = parse(&second);
        assert_eq!((records.len(), torn), (1, false));
        assert_eq!(std::fs::read(d.queue.join("NEXT.msg")).unwrap(), b"fine");
    }

    /// A power loss after the `250` and before the checkpoint can leave a queued file
    /// whose data never reached the disk (empty, or cut short): recovery rewrites it from
    /// the journal. A file removed after delivery is not brought back, and a torn last
    /// record (never acknowledged) is ignored.
    #[test]
    fn recovery_rewrites_incomplete_files_and_leaves_removed_ones_removed() {
        let d = dirs();
        let mut seg = record("EMPTY", b"MAILGATE-SPOOL 1\nwhole message one\r\n");
        seg.extend(record("SHORT", b"MAILGATE-SPOOL 1\nwhole message two\r\n"));
        seg.extend(record("FINE", b"three"));
        seg.extend(record("REMOVED", b"delivered and removed"));
        seg.extend(&record("TORN", b"never acknowledged")[..20]);
        std::fs::write(d.journal.join("0000000000000007.jnl"), &seg).unwrap();
        std::fs::write(d.queue.join("EMPTY.msg"), b"").unwrap();
        std::fs::write(d.queue.join("SHORT.msg"), b"MAILGATE-SPOOL 1\nwhole").unwrap();
        std::fs::write(d.queue.join("FINE.msg"), b"three").unwrap();
        let r = recover(&d.journal, &d.incoming, &d.queue).unwrap();
        assert_eq!(r, Recovery { segments: 1, records: 4, repaired: 2, torn: 1 });
        assert_eq!(std::fs::read(d.queue.join("EMPTY.msg")).unwrap(), b"MAILGATE-SPOOL 1\nwhole message one\r\n");
        assert_eq!(std::fs::read(d.queue.join("SHORT.msg")).unwrap(), b"MAILGATE-SPOOL 1\nwhole message two\r\n");
        assert!(!d.queue.join("REMOVED.msg").exists());
        assert!(!d.queue.join("TORN.msg").exists());
        assert!(segments(&d.journal).unwrap().is_empty());
    }

    /// The writer's own records, taken as a crash would leave them (before the
    /// checkpoint), bring back queued files whose data never reached the disk.
    #[tokio::test]
    async fn what_the_writer_wrote_is_what_recovery_restores() {
        let d = dirs();
        let j = Journal::start_with(&d.journal, &d.incoming, &d.queue, Duration::from_secs(3600)).unwrap();
        let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("MAILGATE-SPOOL 1
{{}}
message {i}
").repeat(i + 1).into_bytes()).collect();
        for (i, b) in bodies.iter().enumerate() {
            j.commit(format!("R{i}"), b.clone()).await.unwrap();
        }
        // The crash image: the journal and the queue as they are now; the data of R0..R2
        // lost (empty files, as after a power loss before writeback), R4 delivered and gone.
        let crash = dirs();
        for (_, seg) in segments(&d.journal).unwrap() {
            std::fs::copy(&seg, crash.journal.join(seg.file_name().unwrap())).unwrap();
        }
        for i in 0..4 {
            let content = if i < 3 { Vec::new() } else { bodies[i].clone() };
            std::fs::write(crash.queue.join(format!("R{i}.msg")), content).unwrap();
        }
        let r = recover(&crash.journal, &crash.incoming, &crash.queue).unwrap();
        assert_eq!((r.records, r.repaired, r.torn), (5, 3, 0));
        for i in 0..4 {
            assert_eq!(std::fs::read(crash.queue.join(format!("R{i}.msg"))).unwrap(), bodies[i]);
        }
        assert!(!crash.queue.join("R4.msg").exists());
        // The next writer numbers on from an empty directory.
        let again = Journal::start(&crash.journal, &crash.incoming, &crash.queue).unwrap();
        again.commit("NEXT".into(), b"x".to_vec()).await.unwrap();
    }
}
