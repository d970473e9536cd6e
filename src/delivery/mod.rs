//! Delivery targets: where a queued message goes once it leaves the spool.
//!
//! Every target follows the same steps behind [`Target`] and [`Transaction`]:
//! `begin -> rcpt* -> body -> commit | abort`. Nothing is delivered before `commit`
//! (Maildir renames `tmp/` into `new/`; LMTP and SMTP send the final `.`), so an `abort`
//! (or a dropped transaction) at any earlier point delivers nothing. Routing (which target
//! a recipient gets) is decided by the session and the queue, never here.

pub mod lmtp;
pub mod maildir;
pub mod oauth2;
pub mod smarthost;
pub mod tls_client;
pub mod wire;

use std::fmt;
use tokio::io::AsyncRead;

/// Whether a failure may go away by itself (retry later) or not (bounce now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    Temporary,
    Permanent,
}

/// Why a delivery step failed, in words an operator and a DSN can show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Failure {
    pub kind: FailureKind,
    /// The reply as the remote server gave it (`550 5.1.1 <a@b>: user unknown`), or our
    /// own sentence when there was no reply (`connection refused by 127.0.0.1:2525`).
    pub reason: String,
    /// The remote server, as `host` or `host:port`, when one was involved.
    pub remote: Option<String>,
    /// Whether `reason` is an SMTP/LMTP reply from `remote` (a DSN then cites it as
    /// `Diagnostic-Code: smtp; ...`).
    pub is_reply: bool,
}

impl Failure {
    pub fn temporary(reason: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Temporary, reason: reason.into(), remote: None, is_reply: false }
    }
    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Permanent, reason: reason.into(), remote: None, is_reply: false }
    }
    /// A failure carried by a server's reply: 5xx is permanent, anything else temporary.
    pub fn from_reply(reply: &wire::Reply, remote: &str) -> Failure {
        let kind = if reply.code >= 500 && reply.code < 600 { FailureKind::Permanent } else { FailureKind::Temporary };
        Failure { kind, reason: reply.one_line(), remote: Some(remote.to_string()), is_reply: true }
    }
    pub fn at(mut self, remote: impl Into<String>) -> Failure {
        self.remote = Some(remote.into());
        self
    }
    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.remote {
            Some(r) if self.is_reply => write!(f, "{r} said: {}", self.reason),
            // Our own sentences usually name the server already.
            Some(r) if !self.reason.contains(r.as_str()) => write!(f, "{}: {}", r, self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

/// The message being delivered, as the transaction needs it.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub queue_id: String,
    /// The envelope sender; empty for the null sender `<>` (DSNs).
    pub sender: String,
    /// Size of the content in octets (for SMTP `SIZE=`).
    pub size: u64,
}

/// The message content, from the first header byte to the end (CRLF line endings, not
/// dot-stuffed: each target does its own stuffing).
pub type Content<'a> = &'a mut (dyn AsyncRead + Unpin + Send);

/// A place messages can be delivered to.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// The destination's name for logs, `queue show` and concurrency limits
    /// (`maildir`, `lmtp:unix:/run/dovecot/lmtp`, `smarthost:o365`).
    fn destination(&self) -> String;

    /// Opens a transaction for one message (for SMTP/LMTP: connect, greet, TLS, AUTH, MAIL).
    /// A failure here applies to every recipient.
    async fn begin(&self, message: &MessageInfo) -> Result<Box<dyn Transaction>, Failure>;
}

/// One message on its way into one target.
#[async_trait::async_trait]
pub trait Transaction: Send {
    /// Adds a recipient; a failure refuses this recipient only.
    async fn rcpt(&mut self, address: &str) -> Result<(), Failure>;

    /// Sends or writes the content. Nothing is delivered yet. A failure applies to every
    /// accepted recipient (the transaction is then aborted by the caller).
    async fn body(&mut self, content: Content<'_>) -> Result<(), Failure>;

    /// As `body`, from the content of a file starting at `offset` (the spool file). A
    /// local target may read the file itself, on a blocking thread, instead of streaming.
    async fn body_from_file(&mut self, path: &std::path::Path, offset: u64) -> Result<(), Failure> {
        use tokio::io::AsyncSeekExt;
        let open = async {
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok::<_, std::io::Error>(tokio::io::BufReader::with_capacity(64 * 1024, file))
        };
        match open.await {
            Ok(mut reader) => self.body(&mut reader).await,
            Err(e) => Err(Failure::temporary(format!("cannot read the queued message: {e}"))),
        }
    }

    /// Completes the delivery: one result per recipient accepted by `rcpt`, in that order
    /// (LMTP answers per recipient; SMTP's single answer applies to all of them).
    async fn commit(self: Box<Self>) -> Vec<Result<(), Failure>>;

    /// Abandons the transaction: nothing is delivered.
    async fn abort(self: Box<Self>);
}
