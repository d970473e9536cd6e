//! The SMTP session: a state machine fed with bytes, answering with replies.
//!
//! The session never touches a socket: the listener reads bytes and hands them to
//! [`Session::ingest`], which consumes whole command lines (parsed by `smtp-proto`) or
//! message content, appends the replies to an output buffer and says whether to go on,
//! start TLS or close. It reaches the directory and the spool only through their APIs.
//! Each verb has one handler (`auth.rs`, `envelope.rs`, `data.rs`, and the simple ones
//! below); every reply comes from [`crate::reply::Reply`].
//!
//! Protocol references: RFC 5321 (SMTP), RFC 6409 (submission), RFC 3207 (STARTTLS),
//! RFC 4954 (AUTH), RFC 3030 (CHUNKING/BDAT), RFC 1870 (SIZE), RFC 6531 (SMTPUTF8),
//! RFC 2920 (PIPELINING), RFC 2034 (ENHANCEDSTATUSCODES).

mod auth;
pub mod content;
mod data;
mod envelope;
#[cfg(test)]
mod tests;

use crate::config::{Config, Endpoint, TlsMode};
use crate::directory::{Directory, User};
use crate::queue::{Recipient, Spool};
use crate::reply::Reply;
use crate::tls::TlsFacts;
use smtp_proto::{Error as ParseError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::clock::{system_clock, Clock};

/// What a server shares with all its sessions.
pub struct SessionContext {
    pub config: Arc<Config>,
    /// Every endpoint with its bound addresses (port 0 resolved), for reply hints.
    pub endpoints: Arc<Vec<Endpoint>>,
    pub directory: Directory,
    pub spool: Arc<Spool>,
    pub clock: Clock,
    /// Where AUTH results and handshake times are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Failed-AUTH limits and bans.
    pub guard: Arc<crate::guard::Guard>,
}

/// Where a session came in.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub endpoint: Arc<Endpoint>,
    pub peer: SocketAddr,
}

impl ConnectionInfo {
    fn tls_mode(&self) -> TlsMode {
        self.endpoint.tls_mode
    }
}

/// What the driver must do after [`Session::ingest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Write the replies, read more input.
    Continue,
    /// Write the replies, then start TLS; buffered input has been discarded.
    StartTls,
    /// Write the replies, then close the connection.
    Close,
}

/// The mail transaction between MAIL and the end of DATA/BDAT.
#[derive(Debug, Default)]
struct Transaction {
    sender: String,
    smtputf8: bool,
    recipients: Vec<Recipient>,
}

enum Mode {
    Command,
    /// Discarding the rest of an over-long line.
    SkipLine,
    /// Waiting for an AUTH continuation line.
    Auth(auth::AuthStep),
    /// Receiving DATA content up to `CRLF.CRLF`.
    Data(Box<data::Incoming>),
    /// Receiving a BDAT chunk into `Session::bdat`.
    BdatChunk { remaining: u64, last: bool },
    /// Reading and discarding a BDAT chunk that was refused; the reply follows it
    /// (RFC 3030 §2: the chunk is always read).
    BdatDiscard { remaining: u64, reply: Reply },
}

/// What a session contributes to its usage event.
#[derive(Debug, Clone, Default)]
pub struct SessionUsage {
    pub ehlo: Option<String>,
    /// The authenticated user, or the login that failed or was refused.
    pub user: Option<String>,
    pub tenant: Option<String>,
    /// Why AUTH was refused, if it was.
    pub refusal: Option<crate::usage::Outcome>,
    pub messages: u32,
    pub bytes: u64,
}

impl SessionUsage {
    /// Delivered if a message was accepted; else the AUTH refusal; else other.
    pub fn outcome(&self) -> crate::usage::Outcome {
        if self.messages > 0 {
            crate::usage::Outcome::Delivered
        } else {
            self.refusal.unwrap_or(crate::usage::Outcome::Other)
        }
    }
}

/// One SMTP session.
pub struct Session {
    ctx: Arc<SessionContext>,
    conn: ConnectionInfo,
    tls: Option<TlsFacts>,
    helo: Option<String>,
    esmtp: bool,
    user: Option<User>,
    tx: Option<Transaction>,
    /// The message of a BDAT transaction, kept between chunks.
    bdat: Option<data::Incoming>,
    mode: Mode,
    errors: u32,
    messages: u32,
    /// Set when the connection cannot go on after the next reply.
    close_after_reply: bool,
    usage: SessionUsage,
}

impl Session {
    /// A new session; `tls` is set for implicit TLS or after STARTTLS.
    pub fn new(ctx: Arc<SessionContext>, conn: ConnectionInfo, tls: Option<TlsFacts>) -> Self {
        Session {
            ctx,
            conn,
            tls,
            helo: None,
            esmtp: false,
            user: None,
            tx: None,
            bdat: None,
            mode: Mode::Command,
            errors: 0,
            messages: 0,
            close_after_reply: false,
            usage: SessionUsage::default(),
        }
    }

    /// What this session contributes to its usage event.
    pub fn usage(&self) -> &SessionUsage {
        &self.usage
    }

    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.ctx.config.hostname)
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&User> {
        self.user.as_ref()
    }

    /// Messages queued in this session.
    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// How long to wait for the next input: RFC 5321 §4.5.3.2.
    pub fn read_timeout(&self) -> Duration {
        let l = &self.ctx.config.limits;
        match self.mode {
            Mode::Data(_) | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. } => Duration::from_secs(l.data_timeout),
            _ => Duration::from_secs(l.command_timeout),
        }
    }

    /// True while message content is being received (shutdown lets it finish).
    pub fn in_message(&self) -> bool {
        matches!(self.mode, Mode::Data(_) | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. })
    }

    /// The client went away or timed out: drop any message being received.
    pub fn abort(&mut self) {
        self.mode = Mode::Command;
        self.reset_transaction();
    }

    /// The driver cut the connection for a protocol reason (`pregreet`, `too_slow`): any
    /// message being received is dropped, and the reason is the session's outcome unless
    /// a message was accepted before.
    pub fn cut(&mut self, outcome: crate::usage::Outcome) {
        self.abort();
        self.usage.refusal = Some(outcome);
    }

    /// Ends the transaction; an unfinished message is discarded.
    fn reset_transaction(&mut self) {
        self.tx = None;
        self.bdat = None;
    }

    /// Consumes what it can of `input` (the rest stays for the next call) and appends
    /// the replies to `out`.
    pub async fn ingest(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Flow {
        let mut pos = 0;
        let flow = loop {
            if pos >= input.len() {
                break Flow::Continue;
            }
            let step = match &mut self.mode {
                Mode::Command | Mode::Auth(_) => self.next_line(input, &mut pos, out).await,
                Mode::SkipLine => {
                    match input[pos..].iter().position(|&c| c == b'\n') {
                        Some(i) => {
                            pos += i + 1;
                            self.mode = Mode::Command;
                        }
                        None => pos = input.len(),
                    }
                    Some(Flow::Continue)
                }
                Mode::Data(_) | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. } => {
                    let (used, reply) = self.content(&input[pos..]).await;
                    pos += used;
                    reply.map(|r| self.send(r, out))
                }
            };
            match step {
                None => break Flow::Continue,
                Some(Flow::Continue) => {}
                Some(Flow::StartTls) => {
                    // RFC 3207 §4.2 / CVE-2011-0411: anything pipelined after STARTTLS
                    // was sent in clear text and must not be executed inside TLS.
                    input.clear();
                    return Flow::StartTls;
                }
                Some(Flow::Close) => break Flow::Close,
            }
        };
        input.drain(..pos.min(input.len()));
        flow
    }

    /// Takes one complete line from `input` and handles it; `None` when more is needed.
    async fn next_line(&mut self, input: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Option<Flow> {
        let max = self.ctx.config.limits.max_line_length;
        let rest = &input[*pos..];
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            if rest.len() > max {
                *pos = input.len();
                self.mode = Mode::SkipLine;
                return Some(self.send(Reply::line_too_long(max), out));
            }
            return None;
        };
        let line = &rest[..=nl];
        *pos += nl + 1;
        if line.len() > max {
            return Some(self.send(Reply::line_too_long(max), out));
        }
        let reply = if let Mode::Auth(step) = std::mem::replace(&mut self.mode, Mode::Command) {
            Some(self.auth_continue(step, line).await)
        } else {
            match self.command(line).await {
                Ok(r) => r,
                Err(flow) => return Some(self.finish_special(flow, out)),
            }
        };
        // A BDAT command answers only after its chunk has been read.
        Some(reply.map_or(Flow::Continue, |r| self.send(r, out)))
    }

    /// STARTTLS and QUIT change the connection, not just reply.
    fn finish_special(&mut self, flow: Flow, out: &mut Vec<u8>) -> Flow {
        match flow {
            Flow::StartTls => {
                Reply::starttls_ready().write_to(out);
                Flow::StartTls
            }
            _ => {
                Reply::bye(&self.ctx.config.hostname).write_to(out);
                Flow::Close
            }
        }
    }

    /// Writes a reply, counting errors; too many errors close the session.
    fn send(&mut self, reply: Reply, out: &mut Vec<u8>) -> Flow {
        reply.write_to(out);
        // RFC 5321 §4.5.3.1.10: after 452 for too many recipients the client is expected
        // to carry on; it is not a client error.
        let expected = reply.code == 452 && reply.enhanced == Some(crate::reply::Enhanced(4, 5, 3));
        if reply.is_error() && !expected {
            self.errors += 1;
            if self.errors >= self.ctx.config.limits.max_errors {
                tracing::info!(errors = self.errors, "closing session after too many errors");
                Reply::too_many_errors().write_to(out);
                return Flow::Close;
            }
        }
        if reply.code == 421 || self.close_after_reply {
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Parses and dispatches one command line. `Err` carries STARTTLS or QUIT; `Ok(None)`
    /// means the reply comes later (BDAT).
    async fn command(&mut self, line: &[u8]) -> Result<Option<Reply>, Flow> {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return Ok(Some(self.parse_error(line, e))),
        };
        tracing::debug!(verb = request.name(), "command");
        Ok(Some(match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true),
            Request::Helo { host } => self.handle_ehlo(host, false),
            Request::StartTls => return self.handle_starttls(line).map(Some).map_err(|_| Flow::StartTls),
            Request::Auth { mechanism, initial_response } => self.handle_auth(mechanism, initial_response).await,
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to).await,
            Request::Data => self.handle_data().await,
            Request::Bdat { chunk_size, is_last } => return Ok(self.handle_bdat(chunk_size as u64, is_last).await),
            Request::Rset => {
                self.reset_transaction();
                Reply::reset()
            }
            Request::Noop { .. } => Reply::ok(),
            Request::Quit => return Err(Flow::Close),
            Request::Help { .. } => Reply::help(),
            Request::Vrfy { .. } => Reply::vrfy(),
            Request::Expn { .. } => Reply::not_implemented("EXPN"),
            Request::Etrn { .. } => Reply::not_implemented("ETRN"),
            Request::Atrn { .. } => Reply::not_implemented("ATRN"),
            Request::Burl { .. } => Reply::not_implemented("BURL"),
            Request::Lhlo { .. } => Reply::unknown_command(),
        }))
    }

    fn parse_error(&self, line: &[u8], e: ParseError) -> Reply {
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
        match e {
            ParseError::UnknownCommand => Reply::unknown_command(),
            ParseError::InvalidSenderAddress => Reply::bad_sender_syntax(),
            ParseError::InvalidRecipientAddress => Reply::bad_recipient_syntax(),
            ParseError::UnsupportedParameter { param } => Reply::unsupported_parameter(&param),
            ParseError::InvalidParameter { param } => Reply::syntax(&format!("invalid value for {param}")),
            ParseError::SyntaxError { syntax } => match verb.as_deref() {
                Some(b"MAIL") if !line.to_ascii_uppercase().starts_with(b"MAIL FROM:") => {
                    Reply::syntax("use MAIL FROM:<address>")
                }
                Some(b"RCPT") if !line.to_ascii_uppercase().starts_with(b"RCPT TO:") => Reply::syntax("use RCPT TO:<address>"),
                _ => Reply::syntax(&format!("expected {syntax}")),
            },
            _ => Reply::syntax("cannot parse the command"),
        }
    }

    /// RFC 5321 §4.1.1.1: EHLO/HELO names the client and resets the transaction.
    fn handle_ehlo(&mut self, host: String, esmtp: bool) -> Reply {
        let host = if host.is_empty() { format!("[{}]", self.conn.peer.ip()) } else { host };
        self.helo = Some(host.clone());
        self.usage.ehlo = Some(crate::usage::printable(&host));
        self.esmtp = esmtp;
        self.reset_transaction();
        let cfg = &self.ctx.config;
        if !esmtp {
            return Reply::helo(&cfg.hostname, &host);
        }
        let mut ext = Vec::new();
        if self.tls.is_none() && self.conn.tls_mode() == TlsMode::Starttls {
            ext.push("STARTTLS".to_string());
        }
        // RFC 4954 §4 and RFC 6409 §4.3: AUTH only once the channel is encrypted.
        if self.tls.is_some() && self.user.is_none() {
            ext.push(self.auth_mechanisms());
        }
        for e in ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"] {
            ext.push(e.to_string());
        }
        ext.push(format!("SIZE {}", cfg.limits.max_message_size));
        Reply::ehlo(&cfg.hostname, &host, ext)
    }

    /// RFC 3207 §4: STARTTLS takes no parameters and is refused once TLS is active.
    fn handle_starttls(&mut self, line: &[u8]) -> Result<Reply, ()> {
        if self.tls.is_some() {
            return Ok(Reply::tls_already_active());
        }
        if String::from_utf8_lossy(line).trim().len() > "STARTTLS".len() {
            return Ok(Reply::syntax("STARTTLS takes no parameters"));
        }
        Err(())
    }
}

/// Builds a session context from a loaded configuration (used by the server and tests).
pub fn context(config: Arc<Config>, directory: Directory, spool: Arc<Spool>, clock: Clock) -> Arc<SessionContext> {
    let endpoints = Arc::new(config.endpoints.clone());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let guard = Arc::new(crate::guard::Guard::new(config.auth_limits.clone(), &metrics));
    Arc::new(SessionContext { config, endpoints, directory, spool, clock, metrics, guard })
}
