//! Queue operations, as functions the CLI calls now and the HTTP API will call later:
//! list, show, retry, hold, release, delete, bounce, and "scan now".
//!
//! They work on the spool files directly, so they work whether or not a server is running
//! on the same `data_dir`: each change is a record appended to the entry's log
//! (`state::Record`), which the runner reads at its next look; a running server is then
//! asked over the control socket (`<data_dir>/control.sock`) to look right away. `delete`
//! takes the entry's lock, so it never removes a message in the middle of a delivery.

use super::state::{Backoff, EntryState, RcptStatus, Record};
use super::{ScanRequest, Spool};
use crate::delivery::Failure;
use serde::Serialize;
use std::io;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// One recipient as `queue show` presents it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecipientView {
    pub address: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    pub attempts: u32,
    /// Unix seconds of the last attempt or event.
    pub last_attempt: Option<i64>,
    pub last_error: Option<Failure>,
    /// Where it was delivered (`maildir`, `smarthost:up`).
    pub delivered_to: Option<String>,
    /// For failed recipients: whether the DSN was queued.
    pub bounced: bool,
}

/// One queued message.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct EntryView {
    pub id: String,
    pub tenant: String,
    pub sender: String,
    pub auth_user: String,
    pub received_at: i64,
    pub size: u64,
    pub held: bool,
    /// Unix seconds when the next attempt is due (`None`: held or nothing pending).
    pub next_attempt: Option<i64>,
    pub recipients: Vec<RecipientView>,
}

/// Why an operation could not be done, in a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no queued message {0} (it may have been delivered already)")]
    NotFound(String),
    #[error("{0} is being delivered right now; try again in a moment")]
    Busy(String),
    #[error("{0:?} is not a queue id (16 letters and digits, as `mailgate queue list` shows)")]
    BadId(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn check_id(id: &str) -> Result<(), OpError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(OpError::BadId(id.to_string()));
    }
    Ok(())
}

fn not_found(id: &str) -> impl Fn(io::Error) -> OpError + '_ {
    move |e| if e.kind() == io::ErrorKind::NotFound { OpError::NotFound(id.to_string()) } else { OpError::Io(e) }
}

/// The view of one entry.
pub async fn show(spool: &Spool, backoff: Backoff, id: &str) -> Result<EntryView, OpError> {
    check_id(id)?;
    let (env, offset) = spool.read_envelope(id).await.map_err(not_found(id))?;
    let log = spool.read_log(id)?;
    let addresses: Vec<String> = env.recipients.iter().map(|r| r.address.clone()).collect();
    let state = EntryState::new(&addresses, &log);
    let size = std::fs::metadata(spool.msg_path(id)).map(|m| m.len().saturating_sub(offset)).unwrap_or(0);
    let recipients = state.rcpts.iter().map(|(a, s)| recipient_view(a, s)).collect();
    let next_attempt = state.next_attempt(&backoff).map(|t| t.max(env.received_at));
    Ok(EntryView {
        id: env.id,
        tenant: env.tenant,
        sender: env.sender,
        auth_user: env.auth_user,
        received_at: env.received_at,
        size,
        held: state.held,
        next_attempt,
        recipients,
    })
}

fn recipient_view(address: &str, s: &RcptStatus) -> RecipientView {
    let base = RecipientView {
        address: address.to_string(),
        status: "pending",
        attempts: 0,
        last_attempt: None,
        last_error: None,
        delivered_to: None,
        bounced: false,
    };
    match s {
        RcptStatus::Pending { attempts, last_attempt, last_failure } => {
            RecipientView { attempts: *attempts, last_attempt: *last_attempt, last_error: last_failure.clone(), ..base }
        }
        RcptStatus::Delivered { at, to } => {
            RecipientView { status: "delivered", last_attempt: Some(*at), delivered_to: Some(to.clone()), ..base }
        }
        RcptStatus::Failed { at, failure, bounced } => RecipientView {
            status: "failed",
            last_attempt: Some(*at),
            last_error: Some(failure.clone()),
            bounced: *bounced,
            ..base
        },
    }
}

/// Every queued message, oldest first, optionally of one tenant only.
pub async fn list(spool: &Spool, backoff: Backoff, tenant: Option<&str>) -> Result<Vec<EntryView>, OpError> {
    let mut out = Vec::new();
    for id in spool.queued_ids()? {
        match show(spool, backoff, &id).await {
            Ok(v) if tenant.is_none_or(|t| v.tenant == t) => out.push(v),
            Ok(_) | Err(OpError::NotFound(_)) => {}
            Err(OpError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(queue_id = %id, error = %e, "unreadable queue entry skipped");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn append(spool: &Spool, id: &str, record: Record) -> Result<(), OpError> {
    check_id(id)?;
    spool.append(id, &[record]).map_err(not_found(id))
}

/// Attempt every pending recipient now, whatever the backoff (and release nothing held).
/// `now` (Unix seconds, from the caller's clock) stamps the record, as for every
/// operation below.
pub fn retry(spool: &Spool, id: &str, now: i64) -> Result<(), OpError> {
    append(spool, id, Record::Retry { at: now })
}

/// Retry every queued message; returns how many.
pub fn retry_all(spool: &Spool, now: i64) -> Result<usize, OpError> {
    let mut n = 0;
    for id in spool.queued_ids()? {
        match retry(spool, &id, now) {
            Ok(()) => n += 1,
            Err(OpError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// No attempts until released (a delivery already running finishes).
pub fn hold(spool: &Spool, id: &str, now: i64) -> Result<(), OpError> {
    append(spool, id, Record::Hold { at: now })
}

/// Resume attempts on a held message.
pub fn release(spool: &Spool, id: &str, now: i64) -> Result<(), OpError> {
    append(spool, id, Record::Release { at: now })
}

/// Give up on every pending recipient: the runner fails them and sends the sender a DSN.
pub fn bounce(spool: &Spool, id: &str, now: i64) -> Result<(), OpError> {
    append(spool, id, Record::Bounce { at: now })
}

/// Remove a message without delivering it or telling the sender. Waits up to `wait` for a
/// delivery in progress to end.
pub async fn delete(spool: &Spool, id: &str, wait: Duration) -> Result<(), OpError> {
    check_id(id)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match spool.try_lock(id).map_err(not_found(id))? {
            Some(_lock) => {
                spool.remove(id)?;
                return Ok(());
            }
            None if tokio::time::Instant::now() >= deadline => return Err(OpError::Busy(id.to_string())),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Asks a running server to look at the queue now and waits (up to `wait`) until the
/// attempts it started have ended. `Ok(false)`: no server is running on this data_dir.
pub async fn request_scan(socket: &Path, wait: Duration) -> io::Result<bool> {
    control_command(socket, "scan", wait, "the server did not finish the scan in time").await
}

/// Tells a running server that the directory changed (the CLI, after a write), so that
/// its lookup cache is cleared before this returns. `Ok(false)`: no server is running.
pub async fn notify_directory_changed(socket: &Path) -> io::Result<bool> {
    control_command(socket, "directory-changed", Duration::from_secs(10), "the server did not answer").await
}

/// Sends one command over the control socket and waits for its `ok`.
async fn control_command(socket: &Path, command: &str, wait: Duration, too_late: &str) -> io::Result<bool> {
    let mut stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(false),
        Err(e) => return Err(e),
    };
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    match tokio::time::timeout(wait, reader.read_line(&mut line)).await {
        Ok(Ok(_)) if line.trim() == "ok" => Ok(true),
        Ok(Ok(_)) => Err(io::Error::other(format!("unexpected answer from the server: {:?}", line.trim()))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, too_late.to_string())),
    }
}

/// Fails when a server already answers on this control socket (same data_dir).
pub async fn refuse_if_running(socket: &Path) -> io::Result<()> {
    if tokio::net::UnixStream::connect(socket).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another mailgate is running on this data_dir (its control socket {} answers)", socket.display()),
        ));
    }
    Ok(())
}

/// Serves the control socket, one command per connection: `scan`, answered `ok` when
/// the attempts it started have ended; `directory-changed`, answered `ok` once the
/// directory's lookup cache is cleared. Refuses to start when another server answers.
pub async fn serve_control(
    socket: &Path,
    runner: tokio::sync::mpsc::Sender<ScanRequest>,
    directory: crate::directory::Directory,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    refuse_if_running(socket).await?;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    let path = socket.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(control_session(stream, runner.clone(), directory.clone()));
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }))
}

async fn control_session(
    stream: tokio::net::UnixStream,
    runner: tokio::sync::mpsc::Sender<ScanRequest>,
    directory: crate::directory::Directory,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read).take_line_limit();
    if tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await.is_err() {
        return;
    }
    let answer = match line.trim() {
        "scan" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if runner.send(tx).await.is_ok() && rx.await.is_ok() {
                "ok\n"
            } else {
                "error queue runner stopped\n"
            }
        }
        "directory-changed" => {
            directory.lookups_changed();
            "ok\n"
        }
        _ => "error unknown command\n",
    };
    let _ = write.write_all(answer.as_bytes()).await;
}

/// A line reader that reads at most 1 KiB (control commands are short).
trait TakeLineLimit: Sized {
    fn take_line_limit(self) -> tokio::io::Take<Self>;
}

impl<R: tokio::io::AsyncRead> TakeLineLimit for R {
    fn take_line_limit(self) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, 1024)
    }
}
