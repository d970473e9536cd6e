//! Local delivery into Dovecot-compatible Maildirs at `<root>/<domain>/<localpart>/`.
//!
//! Following the Maildir specification (and Dovecot's reading of it): the message is
//! written under `tmp/` with a unique name, fsynced, renamed into `new/`, and `new/` is
//! fsynced; a reader never sees a partial file. A failed or interrupted delivery leaves at
//! most a file in `tmp/`, which is removed on abort.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use super::{Content, Failure, MessageInfo, Target, Transaction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Maildir target.
#[derive(Clone)]
pub struct Maildir {
    root: PathBuf,
    hostname: String,
    counter: Arc<AtomicU64>,
}

/// A delivery in progress: a file in `tmp/`.
pub struct MaildirDelivery {
    tmp_path: PathBuf,
    new_dir: PathBuf,
    name: String,
    file: tokio::fs::File,
    size: u64,
}

impl Maildir {
    pub fn new(root: PathBuf, hostname: &str) -> Self {
        // Maildir names must not contain '/' or ':' (the info separator).
        let hostname = hostname.replace(['/', ':'], "_");
        Maildir { root, hostname, counter: Arc::new(AtomicU64::new(0)) }
    }

    /// The mailbox directory of an address: `<root>/<domain>/<localpart>`.
    pub fn mailbox_dir(&self, address: &str) -> io::Result<PathBuf> {
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address without domain"))?;
        let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0']);
        if !safe(local) || !safe(domain) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "address unsafe as a path"));
        }
        Ok(self.root.join(domain.to_lowercase()).join(local.to_lowercase()))
    }

    /// Removes the `tmp/` files that an earlier Mailgate process on this host left when it
    /// was killed mid-delivery (their `P<pid>` names a process that no longer exists);
    /// other writers' files (Dovecot's) and live processes' are left alone. Returns how
    /// many were removed. Run at start-up, before any delivery.
    pub fn clean_stale_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        let suffix = format!(".{}", self.hostname);
        let Ok(domains) = std::fs::read_dir(&self.root) else { return Ok(0) };
        for domain in domains.flatten() {
            let Ok(boxes) = std::fs::read_dir(domain.path()) else { continue };
            for mbox in boxes.flatten() {
                let Ok(files) = std::fs::read_dir(mbox.path().join("tmp")) else { continue };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.ends_with(&suffix) && writer_is_gone(&name) {
                        std::fs::remove_file(f.path())?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Creates a new mailbox durably: the directories, then an fsync of each parent, so
    /// that a delivery recorded as done cannot lose its mailbox in a crash.
    async fn create_mailbox(&self, mbox: &Path) -> io::Result<()> {
        let (me, mbox) = (self.clone(), mbox.to_owned());
        tokio::task::spawn_blocking(move || me.create_mailbox_blocking(&mbox)).await.map_err(io::Error::other)?
    }

    fn create_mailbox_blocking(&self, mbox: &Path) -> io::Result<()> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(mbox.join(sub))?;
        }
        let mut dir = Some(mbox);
        while let Some(d) = dir {
            crate::durable::sync_dir(d)?;
            if d == self.root {
                break;
            }
            dir = d.parent();
        }
        if let Some(parent) = self.root.parent() {
            crate::durable::sync_dir(parent)?;
        }
        Ok(())
    }

    /// A unique Maildir file name: `<secs>.M<usecs>P<pid>Q<n>.<host>`.
    fn unique_name(&self) -> String {
        let now = chrono::Utc::now();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.M{}P{}Q{}.{}", now.timestamp(), now.timestamp_subsec_micros(), std::process::id(), n, self.hostname)
    }

    /// One whole delivery on the calling thread, which must be a blocking one: copy the
    /// content of `source` from `offset` into `tmp/`, fsync, rename into `new/`, fsync
    /// `new/`. One hand-off to the blocking pool per delivery instead of one per step.
    pub fn deliver_blocking(&self, address: &str, source: &Path, offset: u64) -> io::Result<PathBuf> {
        use std::io::Seek;
        let mbox = self.mailbox_dir(address)?;
        if !mbox.join("new").is_dir() {
            self.create_mailbox_blocking(&mbox)?;
        }
        let name = self.unique_name();
        let tmp = mbox.join("tmp").join(&name);
        let result = (|| {
            let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            let mut src = std::fs::File::open(source)?;
            src.seek(io::SeekFrom::Start(offset))?;
            let size = io::copy(&mut src, &mut out)?;
            out.sync_all()?;
            let dest = mbox.join("new").join(format!("{name},S={size}"));
            std::fs::rename(&tmp, &dest)?;
            crate::durable::sync_dir(&mbox.join("new"))?;
            Ok(dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Starts a delivery: creates the Maildir if needed and opens a file in `tmp/`.
    pub async fn begin(&self, address: &str) -> io::Result<MaildirDelivery> {
        let mbox = self.mailbox_dir(address)?;
        if !tokio::fs::try_exists(mbox.join("new")).await.unwrap_or(false) {
            self.create_mailbox(&mbox).await?;
        }
        let name = self.unique_name();
        let tmp_path = mbox.join("tmp").join(&name);
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp_path).await?;
        Ok(MaildirDelivery { tmp_path, new_dir: mbox.join("new"), name, file, size: 0 })
    }
}

/// A delivery dropped before `commit` (a cancelled task at shutdown) leaves no file in
/// `tmp/`; after a commit the name no longer exists there and this does nothing.
impl Drop for MaildirDelivery {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

impl MaildirDelivery {
    pub async fn body(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.size += bytes.len() as u64;
        self.file.write_all(bytes).await
    }

    /// fsync, rename into `new/` (with Dovecot's `,S=<size>` so it need not stat), fsync `new/`.
    pub async fn commit(self) -> io::Result<PathBuf> {
        let result = async {
            self.file.sync_all().await?;
            let dest = self.new_dir.join(format!("{},S={}", self.name, self.size));
            tokio::fs::rename(&self.tmp_path, &dest).await?;
            crate::durable::sync_dir_async(&self.new_dir).await?;
            Ok(dest)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp_path).await;
        }
        result
    }

    pub async fn abort(self) {
        drop(self); // Drop removes the file from tmp/
    }
}

/// Whether the process named in a Maildir file name `<secs>.M<usecs>P<pid>Q<n>.<host>` is
/// gone (and is not us).
fn writer_is_gone(name: &str) -> bool {
    let pid = name.split_once('P').and_then(|(_, rest)| rest.split_once('Q')).and_then(|(pid, _)| pid.parse::<u32>().ok());
    match pid {
        Some(pid) if pid != std::process::id() => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// Maildir behind the common [`Target`] interface: `rcpt` checks the address can be a
/// mailbox, `body` writes the content into `tmp/` of the first mailbox (and copies it into
/// the others), `commit` moves each copy into `new/`.
#[async_trait::async_trait]
impl Target for Maildir {
    fn destination(&self) -> String {
        "maildir".into()
    }

    async fn begin(&self, _message: &MessageInfo) -> Result<Box<dyn Transaction>, Failure> {
        Ok(Box::new(MaildirTransaction { maildir: self.clone(), rcpts: Vec::new(), open: Vec::new(), source: None }))
    }
}

struct MaildirTransaction {
    maildir: Maildir,
    rcpts: Vec<String>,
    open: Vec<MaildirDelivery>,
    /// Content to copy from a file at commit, on a blocking thread (`body_from_file`).
    source: Option<(PathBuf, u64)>,
}

fn local_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::InvalidInput => Failure::permanent(format!("mailbox name refused: {e}")),
        _ => Failure::temporary(format!("cannot write to the mailbox: {e}")),
    }
}

#[async_trait::async_trait]
impl Transaction for MaildirTransaction {
    async fn rcpt(&mut self, address: &str) -> Result<(), Failure> {
        self.maildir.mailbox_dir(address).map_err(local_failure)?;
        self.rcpts.push(address.to_string());
        Ok(())
    }

    async fn body(&mut self, content: Content<'_>) -> Result<(), Failure> {
        let Some(first) = self.rcpts.first() else { return Ok(()) };
        let mut d = self.maildir.begin(first).await.map_err(local_failure)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match content.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    d.abort().await;
                    return Err(Failure::temporary(format!("cannot read the queued message: {e}")));
                }
            };
            if let Err(e) = d.body(&buf[..n]).await {
                d.abort().await;
                return Err(local_failure(e));
            }
        }
        // A tokio file may still be finishing its last write: done before copies read it.
        if let Err(e) = d.file.flush().await {
            d.abort().await;
            return Err(local_failure(e));
        }
        let source = d.tmp_path.clone();
        self.open.push(d);
        for rcpt in &self.rcpts[1..] {
            let copy = async {
                let mut c = self.maildir.begin(rcpt).await?;
                // Copy through the open handle, so that commit's fsync covers the bytes.
                let mut src = tokio::fs::File::open(&source).await?;
                c.size = tokio::io::copy(&mut src, &mut c.file).await?;
                Ok::<_, io::Error>(c)
            };
            match copy.await {
                Ok(c) => self.open.push(c),
                Err(e) => return Err(local_failure(e)),
            }
        }
        Ok(())
    }

    async fn body_from_file(&mut self, path: &Path, offset: u64) -> Result<(), Failure> {
        self.source = Some((path.to_owned(), offset));
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Vec<Result<(), Failure>> {
        if let Some((source, offset)) = self.source {
            let (maildir, rcpts) = (self.maildir, self.rcpts);
            let n = rcpts.len();
            let copies = tokio::task::spawn_blocking(move || {
                rcpts.iter().map(|r| maildir.deliver_blocking(r, &source, offset).map(|_| ()).map_err(local_failure)).collect()
            });
            return copies.await.unwrap_or_else(|e| vec![Err(Failure::temporary(format!("delivery task failed: {e}"))); n]);
        }
        let mut results = Vec::new();
        for d in self.open {
            results.push(d.commit().await.map(|_| ()).map_err(local_failure));
        }
        results
    }

    async fn abort(self: Box<Self>) {
        for d in self.open {
            d.abort().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_into_new_with_size() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::write(&src, b"HEADERmessage body\r\n").unwrap();
        let m = Maildir::new(t.path().join("maildir"), "mx.test");
        let p = m.deliver_blocking("Alice@Contoso.test", &src, 6).unwrap();
        assert!(p.starts_with(t.path().join("maildir/contoso.test/alice/new")));
        assert!(p.to_str().unwrap().ends_with(",S=14"));
        assert_eq!(std::fs::read(&p).unwrap(), b"message body\r\n");
        assert_eq!(std::fs::read_dir(t.path().join("maildir/contoso.test/alice/tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn stale_tmp_files_of_dead_writers_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let m = Maildir::new(t.path().to_path_buf(), "mx.test");
        let tmp = t.path().join("x.test/a/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let dead = "1.M1P4294967295Q1.mx.test"; // no such pid
        let ours = format!("1.M1P{}Q1.mx.test", std::process::id());
        let other_host = "1.M1P4294967295Q1.other.host";
        for n in [dead, ours.as_str(), other_host] {
            std::fs::write(tmp.join(n), b"x").unwrap();
        }
        assert_eq!(m.clean_stale_tmp().unwrap(), 1);
        assert!(!tmp.join(dead).exists() && tmp.join(&ours).exists() && tmp.join(other_host).exists());
    }

    #[test]
    fn rejects_path_tricks() {
        let m = Maildir::new(PathBuf::from("/x"), "h");
        assert!(m.mailbox_dir("../etc@x.test").is_err());
        assert!(m.mailbox_dir("a@..").is_err());
        assert!(m.mailbox_dir("a/b@x.test").is_err());
    }
}
