//! Delivery to an LMTP server (RFC 2033), such as Dovecot's `lmtp` service, over a UNIX
//! socket or TCP. This module owns the LMTP dialogue: which command is sent when, and how
//! each reply becomes a per-recipient result; the bytes on the wire (reply parsing,
//! dot-stuffing, timeouts) are [`super::wire`]'s.
//!
//! The dialogue is `220` greeting, `LHLO` (RFC 2033 §4.1: LMTP has no `HELO`/`EHLO`),
//! `MAIL FROM`, one `RCPT TO` per recipient, `DATA`, the content, `.`; then, unlike SMTP,
//! one reply per recipient accepted at `RCPT`, in the order they were given (RFC 2033
//! §4.2), so each recipient succeeds or fails on its own.
//!
//! Failures: a reply is reported as the server gave it (5xx permanent, 4xx temporary);
//! a refused greeting or `LHLO` is always temporary (our own local server being unwell
//! must not bounce mail); anything without a reply (no connection, a timeout, a closed
//! connection) is temporary and names the server. If the connection fails while the
//! per-recipient replies are being read, the recipients without a reply get a temporary
//! failure: they are retried, and may be delivered twice (RFC 2033 §4.2 accepts this
//! over losing mail).

use super::wire::{Conn, Reply, WireError};
use super::{Content, Failure, FailureKind, MessageInfo, Target, Transaction};
use crate::config::LmtpAddress;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Longest wait for the reply to `QUIT` (its answer changes nothing).
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// A UNIX or TCP stream.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Connection = Conn<Box<dyn Stream>>;

/// The LMTP target.
#[derive(Debug, Clone)]
pub struct Lmtp {
    address: LmtpAddress,
    lhlo_name: String,
    timeout: Duration,
}

impl Lmtp {
    /// `lhlo_name` is our host name, sent with `LHLO`; `timeout` bounds connecting and
    /// each step of the dialogue (`[delivery] lmtp_timeout`).
    pub fn new(address: LmtpAddress, lhlo_name: &str, timeout: Duration) -> Lmtp {
        Lmtp { address, lhlo_name: lhlo_name.to_string(), timeout }
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        let stream = tokio::time::timeout(self.timeout, open(&self.address)).await;
        match stream {
            Ok(Ok(s)) => Ok(Conn::new(s, self.timeout)),
            Ok(Err(e)) => Err(Failure::temporary(format!("cannot connect to LMTP server {}: {}", self.address, io_text(&e)))),
            Err(_) => Err(Failure::temporary(format!(
                "cannot connect to LMTP server {}: {}",
                self.address,
                WireError::Timeout(self.timeout.as_secs())
            ))),
        }
    }

    /// Greeting, `LHLO`, `MAIL FROM`: the steps whose failure applies to every recipient.
    async fn open_transaction(&self, conn: &mut Connection, message: &MessageInfo) -> Result<(), Failure> {
        let remote = self.address.to_string();
        let greeting = conn.read_reply().await.map_err(|e| wire_failure(&remote, "the greeting", e))?;
        if greeting.code != 220 {
            return Err(always_temporary(Failure::from_reply(&greeting, &remote)));
        }
        let lhlo = conn.command(&format!("LHLO {}", self.lhlo_name)).await.map_err(|e| wire_failure(&remote, "LHLO", e))?;
        if !lhlo.is_ok() {
            return Err(always_temporary(Failure::from_reply(&lhlo, &remote)));
        }
        let mail = mail_from(&message.sender, message.size, &lhlo)?;
        let reply = conn.command(&mail).await.map_err(|e| wire_failure(&remote, "MAIL FROM", e))?;
        if !reply.is_ok() {
            return Err(Failure::from_reply(&reply, &remote));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Target for Lmtp {
    fn destination(&self) -> String {
        format!("lmtp:{}", self.address)
    }

    async fn begin(&self, message: &MessageInfo) -> Result<Box<dyn Transaction>, Failure> {
        let mut conn = self.connect().await?;
        if let Err(f) = self.open_transaction(&mut conn, message).await {
            if f.is_reply {
                quit(conn).await; // else the connection is broken: just close it
            }
            return Err(f);
        }
        Ok(Box::new(LmtpTransaction { conn: Some(conn), remote: self.address.to_string(), accepted: 0, in_data: false, broken: None }))
    }
}

async fn open(address: &LmtpAddress) -> std::io::Result<Box<dyn Stream>> {
    Ok(match address {
        LmtpAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
        LmtpAddress::Tcp(addr) => {
            let s = TcpStream::connect(addr.as_str()).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    })
}

/// `MAIL FROM:<sender>` with the parameters the server announced in its `LHLO` reply.
fn mail_from(sender: &str, size: u64, lhlo: &Reply) -> Result<String, Failure> {
    if !fits_in_brackets(sender) {
        return Err(Failure::permanent(format!("the sender address {sender:?} cannot be sent over LMTP")));
    }
    let mut line = format!("MAIL FROM:<{sender}>");
    if lhlo.extension("8BITMIME").is_some() {
        line.push_str(" BODY=8BITMIME");
    }
    if lhlo.extension("SIZE").is_some() {
        line.push_str(&format!(" SIZE={size}"));
    }
    Ok(line)
}

/// An address that cannot break out of `<...>` on a command line.
fn fits_in_brackets(address: &str) -> bool {
    address.len() <= 512 && !address.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// A failure with no reply behind it: the connection broke or stopped answering.
fn wire_failure(remote: &str, step: &str, e: WireError) -> Failure {
    let text = match e {
        WireError::Io(e) => io_text(&e),
        other => other.to_string(),
    };
    Failure::temporary(format!("LMTP server {remote} failed at {step}: {text}"))
}

/// A reply failure that must not bounce mail (a refused greeting or `LHLO`).
fn always_temporary(mut f: Failure) -> Failure {
    f.kind = FailureKind::Temporary;
    f
}

/// `No such file or directory`, without Rust's ` (os error 2)`.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Sends `QUIT` and waits briefly for its reply; errors are of no interest.
async fn quit(mut conn: Connection) {
    let _ = tokio::time::timeout(QUIT_WAIT, conn.command("QUIT")).await;
}

/// One message on its way to the LMTP server, after `MAIL FROM` was accepted.
struct LmtpTransaction {
    /// `None` once the connection failed.
    conn: Option<Connection>,
    remote: String,
    /// Recipients accepted at `RCPT`: how many replies follow the final `.`.
    accepted: usize,
    /// `DATA` was accepted: the server now reads content until `.`.
    in_data: bool,
    /// Why the connection failed, repeated for every later step.
    broken: Option<Failure>,
}

impl LmtpTransaction {
    /// Takes the connection for one step (put back by the caller on success), or returns
    /// the failure that ended it.
    fn take_conn(&mut self) -> Result<Connection, Failure> {
        match (self.conn.take(), &self.broken) {
            (Some(c), _) => Ok(c),
            (None, Some(f)) => Err(f.clone()),
            (None, None) => Err(Failure::temporary(format!("the connection to LMTP server {} is closed", self.remote))),
        }
    }

    /// Records a failed connection (already dropped): every later step reports `f`.
    fn broken_by(&mut self, f: Failure) -> Failure {
        self.broken = Some(f.clone());
        f
    }

    /// Reads the replies to the final `.`: one per accepted recipient, in order (RFC 2033
    /// §4.2). If the connection fails, the recipients still without a reply fail temporarily.
    async fn read_replies(&mut self, conn: &mut Connection) -> Vec<Result<(), Failure>> {
        let mut results = Vec::with_capacity(self.accepted);
        while results.len() < self.accepted {
            match conn.read_reply().await {
                Ok(r) if r.is_ok() => results.push(Ok(())),
                Ok(r) => results.push(Err(Failure::from_reply(&r, &self.remote))),
                Err(e) => {
                    let step = format!("the reply for recipient {} of {} after the message", results.len() + 1, self.accepted);
                    let f = self.broken_by(wire_failure(&self.remote, &step, e));
                    results.resize(self.accepted, Err(f));
                }
            }
        }
        results
    }
}

#[async_trait::async_trait]
impl Transaction for LmtpTransaction {
    async fn rcpt(&mut self, address: &str) -> Result<(), Failure> {
        if !fits_in_brackets(address) {
            return Err(Failure::permanent(format!("the recipient address {address:?} cannot be sent over LMTP")));
        }
        let mut conn = self.take_conn()?;
        let reply = match conn.command(&format!("RCPT TO:<{address}>")).await {
            Ok(r) => r,
            Err(e) => return Err(self.broken_by(wire_failure(&self.remote, "RCPT TO", e))),
        };
        self.conn = Some(conn);
        if !reply.is_ok() {
            return Err(Failure::from_reply(&reply, &self.remote));
        }
        self.accepted += 1;
        Ok(())
    }

    async fn body(&mut self, content: Content<'_>) -> Result<(), Failure> {
        if self.accepted == 0 {
            // No recipient, no DATA (the server would answer 503, RFC 2033 §4.2).
            return Ok(());
        }
        let mut conn = self.take_conn()?;
        let reply = match conn.command("DATA").await {
            Ok(r) => r,
            Err(e) => return Err(self.broken_by(wire_failure(&self.remote, "DATA", e))),
        };
        if reply.code != 354 {
            self.conn = Some(conn);
            return Err(Failure::from_reply(&reply, &self.remote));
        }
        self.in_data = true;
        if let Err(e) = conn.send_stuffed(content).await {
            return Err(self.broken_by(wire_failure(&self.remote, "sending the message", e)));
        }
        self.conn = Some(conn);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Vec<Result<(), Failure>> {
        let accepted = self.accepted;
        let mut conn = match self.take_conn() {
            Ok(c) => c,
            Err(f) => return vec![Err(f); accepted],
        };
        if accepted == 0 {
            quit(conn).await;
            return Vec::new();
        }
        if !self.in_data {
            // `body` was not called: a `.` now would not end any content.
            quit(conn).await;
            let f = Failure::temporary(format!("no message was sent to LMTP server {} before the commit", self.remote));
            return vec![Err(f); accepted];
        }
        if let Err(e) = conn.send_end().await {
            return vec![Err(wire_failure(&self.remote, "the end of the message", e)); accepted];
        }
        let results = self.read_replies(&mut conn).await;
        if self.broken.is_none() {
            quit(conn).await;
        }
        results
    }

    async fn abort(mut self: Box<Self>) {
        // In DATA, the server reads everything as content until `.`: closing the connection
        // is the only way to make it discard the message. Otherwise, a polite QUIT.
        if let Some(conn) = self.conn.take() {
            if !self.in_data {
                quit(conn).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// The server side of one scripted LMTP session.
    struct Peer(BufReader<UnixStream>);

    impl Peer {
        async fn say(&mut self, text: &str) {
            self.0.get_mut().write_all(text.as_bytes()).await.unwrap();
        }
        /// Reads one command line, checks it, answers `reply`.
        async fn expect(&mut self, command: &str, reply: &str) {
            let mut line = String::new();
            self.0.read_line(&mut line).await.unwrap();
            assert_eq!(line, format!("{command}\r\n"));
            self.say(reply).await;
        }
        /// Reads the content up to and including the final `.` line.
        async fn data(&mut self) -> Vec<u8> {
            let mut data = Vec::new();
            while !data.ends_with(b"\r\n.\r\n") {
                let n = self.0.read_until(b'\n', &mut data).await.unwrap();
                assert!(n > 0, "connection closed in DATA: {:?}", String::from_utf8_lossy(&data));
            }
            data
        }
        /// Greeting, LHLO (announcing `extensions`), MAIL FROM.
        async fn open(&mut self, extensions: &str, mail: &str) {
            self.say("220 lmtp.test ready\r\n").await;
            self.expect("LHLO mx.test", &format!("250-lmtp.test\r\n{extensions}250 PIPELINING\r\n")).await;
            self.expect(mail, "250 2.1.0 OK\r\n").await;
        }
    }

    /// An LMTP target whose server runs `script` on the first connection.
    fn scripted<F, Fut>(script: F) -> (Lmtp, tempfile::TempDir, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            script(Peer(BufReader::new(stream))).await;
        });
        (Lmtp::new(LmtpAddress::Unix(path), "mx.test", Duration::from_secs(5)), dir, server)
    }

    fn message(sender: &str, size: u64) -> MessageInfo {
        MessageInfo { queue_id: "Q1".into(), sender: sender.into(), size }
    }

    #[tokio::test]
    async fn one_reply_per_accepted_recipient_in_order() {
        let content = b"Subject: hi\r\n\r\n.leading dot\r\n.\r\nend\r\n";
        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.open("250-8BITMIME\r\n250-SIZE 100000\r\n", "MAIL FROM:<s@x.test> BODY=8BITMIME SIZE=37").await;
            p.expect("RCPT TO:<a@x.test>", "250 2.1.5 OK\r\n").await;
            p.expect("RCPT TO:<refused@x.test>", "550 5.1.1 <refused@x.test> User doesn't exist\r\n").await;
            p.expect("RCPT TO:<b@x.test>", "250 2.1.5 OK\r\n").await;
            p.expect("RCPT TO:<c@x.test>", "250 2.1.5 OK\r\n").await;
            p.expect("DATA", "354 OK\r\n").await;
            assert_eq!(p.data().await, b"Subject: hi\r\n\r\n..leading dot\r\n..\r\nend\r\n.\r\n");
            p.say("250 2.0.0 <a@x.test> Saved\r\n452 4.2.2 <b@x.test> Mailbox full\r\n550 5.2.1 <c@x.test> Disabled\r\n").await;
            p.expect("QUIT", "221 2.0.0 Bye\r\n").await;
        });
        assert_eq!(lmtp.destination(), format!("lmtp:unix:{}", _dir.path().join("lmtp").display()));
        let mut t = lmtp.begin(&message("s@x.test", content.len() as u64)).await.unwrap();
        t.rcpt("a@x.test").await.unwrap();
        let refused = t.rcpt("refused@x.test").await.unwrap_err();
        assert!(refused.is_permanent() && refused.is_reply, "{refused:?}");
        assert!(refused.reason.starts_with("550 5.1.1"), "{refused:?}");
        t.rcpt("b@x.test").await.unwrap();
        t.rcpt("c@x.test").await.unwrap();
        t.body(&mut &content[..]).await.unwrap();
        let results = t.commit().await;
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok());
        let b = results[1].as_ref().unwrap_err();
        assert_eq!((b.kind, b.reason.as_str()), (FailureKind::Temporary, "452 4.2.2 <b@x.test> Mailbox full"));
        let c = results[2].as_ref().unwrap_err();
        assert_eq!((c.kind, c.reason.as_str()), (FailureKind::Permanent, "550 5.2.1 <c@x.test> Disabled"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connection_lost_after_the_dot_fails_the_rest_temporarily() {
        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.open("", "MAIL FROM:<>").await;
            p.expect("RCPT TO:<a@x.test>", "250 OK\r\n").await;
            p.expect("RCPT TO:<b@x.test>", "250 OK\r\n").await;
            p.expect("RCPT TO:<c@x.test>", "250 OK\r\n").await;
            p.expect("DATA", "354 OK\r\n").await;
            p.data().await;
            p.say("250 2.0.0 <a@x.test> Saved\r\n").await;
        });
        let mut t = lmtp.begin(&message("", 5)).await.unwrap();
        for r in ["a@x.test", "b@x.test", "c@x.test"] {
            t.rcpt(r).await.unwrap();
        }
        t.body(&mut &b"x\r\n"[..]).await.unwrap();
        let results = t.commit().await;
        assert!(results[0].is_ok());
        for r in &results[1..] {
            let f = r.as_ref().unwrap_err();
            assert_eq!(f.kind, FailureKind::Temporary);
            assert!(f.reason.contains("the connection was closed") && f.reason.contains("recipient 2 of 3"), "{f:?}");
        }
        assert_eq!(results.len(), 3);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn no_accepted_recipient_sends_no_data() {
        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.open("", "MAIL FROM:<s@x.test>").await;
            p.expect("RCPT TO:<a@x.test>", "451 4.3.0 Temporary failure\r\n").await;
            p.expect("QUIT", "221 Bye\r\n").await;
        });
        let mut t = lmtp.begin(&message("s@x.test", 5)).await.unwrap();
        let f = t.rcpt("a@x.test").await.unwrap_err();
        assert_eq!(f.kind, FailureKind::Temporary);
        t.body(&mut &b"x\r\n"[..]).await.unwrap();
        assert!(t.commit().await.is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn mail_from_refusal_applies_to_everyone() {
        for (code, kind) in [("550 5.7.1 Go away", FailureKind::Permanent), ("451 4.3.0 Later", FailureKind::Temporary)] {
            let (lmtp, _dir, server) = scripted(move |mut p| async move {
                p.say("220 ready\r\n").await;
                p.expect("LHLO mx.test", "250 lmtp.test\r\n").await;
                p.expect("MAIL FROM:<s@x.test>", &format!("{code}\r\n")).await;
                p.expect("QUIT", "221 Bye\r\n").await;
            });
            let f = lmtp.begin(&message("s@x.test", 5)).await.err().unwrap();
            assert_eq!((f.kind, f.reason.as_str(), f.is_reply), (kind, code, true));
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_refused_greeting_is_temporary() {
        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.say("554 5.3.2 not now\r\n").await;
            p.expect("QUIT", "221 Bye\r\n").await;
        });
        let f = lmtp.begin(&message("s@x.test", 5)).await.err().unwrap();
        assert_eq!((f.kind, f.reason.as_str()), (FailureKind::Temporary, "554 5.3.2 not now"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_and_wire_errors_name_the_server() {
        let missing = LmtpAddress::Unix("/nonexistent/mailgate-test/lmtp".into());
        let f = Lmtp::new(missing, "mx.test", Duration::from_secs(5)).begin(&message("", 1)).await.err().unwrap();
        assert_eq!(f.kind, FailureKind::Temporary);
        assert_eq!(f.reason, "cannot connect to LMTP server unix:/nonexistent/mailgate-test/lmtp: No such file or directory");

        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.say("220 ready\r\n").await;
            p.expect("LHLO mx.test", "250 lmtp.test\r\n").await;
            // Then silence: MAIL FROM gets no answer.
            let mut rest = Vec::new();
            let _ = p.0.read_to_end(&mut rest).await;
        });
        let lmtp = Lmtp { timeout: Duration::from_secs(1), ..lmtp };
        let f = lmtp.begin(&message("s@x.test", 1)).await.err().unwrap();
        assert_eq!(f.kind, FailureKind::Temporary);
        assert!(f.reason.contains(&lmtp.address.to_string()) && f.reason.contains("MAIL FROM: no answer within 1 seconds"), "{f:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn addresses_that_would_break_the_command_line_are_refused() {
        let (lmtp, _dir, server) = scripted(|mut p| async move {
            p.open("", "MAIL FROM:<s@x.test>").await;
            p.expect("QUIT", "221 Bye\r\n").await;
        });
        let mut t = lmtp.begin(&message("s@x.test", 1)).await.unwrap();
        let f = t.rcpt("a@x.test>\r\nRSET").await.unwrap_err();
        assert!(f.is_permanent());
        t.abort().await;
        server.await.unwrap();
    }
}
