//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030): streaming a message into the spool.
//!
//! The content goes to disk as it arrives, never whole into memory. Our Received header
//! (RFC 5321 §4.4) comes first and names the TLS version, the cipher and the authenticated
//! sender. The `250 ... queued as <ID>` reply is sent only after the spool has fsynced the
//! file and its directory. A message over SIZE is read to its end but not stored and gets
//! 552; a message with a bare CR or LF gets 554 unless `smtp.bare_line_endings =
//! "normalize"`.

use super::content::ContentDecoder;
use super::{Mode, Session};
use crate::config::BareLineEndings;
use crate::queue::{Envelope, SpoolWriter};
use crate::reply::Reply;

/// A message being received.
pub(crate) struct Incoming {
    decoder: ContentDecoder,
    writer: Option<SpoolWriter>,
    max: u64,
    too_big: bool,
    failed: bool,
    scratch: Vec<u8>,
}

impl Incoming {
    /// Decodes `input`; returns the bytes used and whether DATA's end was reached.
    pub(super) async fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        self.scratch.clear();
        let (used, done) = self.decoder.decode(input, &mut self.scratch);
        self.flush().await;
        (used, done)
    }

    /// End of BDAT content: a trailing CR is a bare CR.
    async fn finish_bdat(&mut self) {
        self.scratch.clear();
        self.decoder.finish(&mut self.scratch);
        self.flush().await;
    }

    async fn flush(&mut self) {
        let Some(w) = self.writer.as_mut() else { return };
        if w.content_bytes() + self.scratch.len() as u64 > self.max {
            // Stop storing; the rest is read and dropped, then 552.
            self.too_big = true;
            self.writer = None;
        } else if let Err(e) = w.write(&self.scratch).await {
            tracing::error!(error = %e, "spool write failed");
            self.failed = true;
            self.writer = None;
        }
    }
}

/// Keeps a client-supplied token safe inside a header comment.
fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\' | '<' | '>'))
        .take(255)
        .collect()
}

impl Session {
    pub(super) async fn handle_data(&mut self) -> Reply {
        if self.bdat.is_some() {
            return Reply::bad_sequence("DATA cannot follow BDAT in the same transaction");
        }
        if let Err(r) = self.ready_for_content() {
            return r;
        }
        match self.open_message(true).await {
            Ok(incoming) => {
                self.mode = Mode::Data(Box::new(incoming));
                Reply::start_data()
            }
            Err(r) => r,
        }
    }

    /// RFC 3030 §2: the chunk is read in every case; its reply comes after it.
    /// Returns a reply only when it can be given at once (an empty chunk).
    pub(super) async fn handle_bdat(&mut self, size: u64, last: bool) -> Option<Reply> {
        let max = self.ctx.config.limits.max_message_size;
        let refusal = if self.tls.is_none() {
            Some(Reply::tls_first())
        } else {
            self.ready_for_content().err()
        };
        if let Some(reply) = refusal {
            return self.discard_chunk(size, max, reply);
        }
        if self.bdat.is_none() {
            match self.open_message(false).await {
                Ok(incoming) => self.bdat = Some(incoming),
                Err(reply) => return self.discard_chunk(size, max, reply),
            }
        }
        // A chunk that cannot fit is not stored: it is read and dropped, like DATA past
        // the limit, so the session stays in step (RFC 3030 §2); then 552.
        let received = self.bdat.as_ref().and_then(|b| b.writer.as_ref()).map_or(0, |w| w.content_bytes());
        if size > max.saturating_sub(received) {
            self.reset_transaction();
            self.mode = Mode::BdatDiscard { remaining: size, reply: Reply::message_too_big(max) };
            return None;
        }
        if size == 0 {
            return Some(self.bdat_chunk_done(last).await);
        }
        self.mode = Mode::BdatChunk { remaining: size, last };
        None
    }

    /// Reads and drops a refused chunk; one larger than any message cannot be worth
    /// reading, so the session closes instead.
    fn discard_chunk(&mut self, size: u64, max: u64, reply: Reply) -> Option<Reply> {
        if size > max {
            self.reset_transaction();
            self.close_after_reply = true;
            return Some(Reply::message_too_big(max));
        }
        if size == 0 {
            return Some(reply);
        }
        self.mode = Mode::BdatDiscard { remaining: size, reply };
        None
    }

    /// A transaction with at least one recipient must be open.
    fn ready_for_content(&self) -> Result<(), Reply> {
        match &self.tx {
            None => Err(Reply::bad_sequence("Need MAIL FROM and RCPT TO before DATA or BDAT")),
            Some(tx) if tx.recipients.is_empty() => Err(Reply::no_valid_recipients()),
            Some(_) => Ok(()),
        }
    }

    /// Creates the spool file with the envelope and the Received header.
    async fn open_message(&mut self, dot_stuffed: bool) -> Result<Incoming, Reply> {
        let (Some(tx), Some(user)) = (&self.tx, &self.user) else {
            return Err(Reply::bad_sequence("Need MAIL FROM and RCPT TO before DATA or BDAT"));
        };
        let spool = &self.ctx.spool;
        let id = spool.new_id();
        let envelope = Envelope {
            id: id.clone(),
            received_at: (self.ctx.clock)().timestamp(),
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            auth_user: user.address.clone(),
            tenant: user.tenant.clone(),
            client_ip: self.conn.peer.ip().to_canonical().to_string(),
            endpoint: self.conn.endpoint.name.clone(),
        };
        let header = self.received_header(&id);
        let writer = spool.create(&envelope, header.as_bytes()).await.map_err(|e| {
            tracing::error!(error = %e, "cannot create a spool file");
            Reply::spool_error()
        })?;
        let normalize = self.ctx.config.smtp.bare_line_endings == BareLineEndings::Normalize;
        Ok(Incoming {
            decoder: if dot_stuffed { ContentDecoder::data(normalize) } else { ContentDecoder::bdat(normalize) },
            writer: Some(writer),
            max: self.ctx.config.limits.max_message_size,
            too_big: false,
            failed: false,
            scratch: Vec::with_capacity(16 * 1024),
        })
    }

    /// RFC 5321 §4.4 trace header; `with ESMTPSA` per RFC 3848.
    fn received_header(&self, id: &str) -> String {
        let cfg = &self.ctx.config;
        let helo = header_safe(self.helo.as_deref().unwrap_or("unknown"));
        let with = match (self.esmtp, self.tls.is_some(), self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, true, true) => "ESMTPSA",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, false, false) => "ESMTP",
        };
        // RFC 5321 §4.1.3: an IPv6 address literal carries the "IPv6:" tag.
        let ip = match self.conn.peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut h = format!("Received: from {helo} ([{ip}])\r\n\tby {host} (Mailgate) with {with} id {id}", host = cfg.hostname);
        if let Some(t) = &self.tls {
            h.push_str(&format!("\r\n\t(using {} with cipher {})", t.version, t.cipher));
        }
        if let Some(u) = &self.user {
            h.push_str(&format!("\r\n\t(authenticated sender: {})", header_safe(&u.address)));
        }
        if let Some(tx) = &self.tx {
            if let [only] = tx.recipients.as_slice() {
                h.push_str(&format!("\r\n\tfor <{}>", header_safe(&only.address)));
            }
        }
        h.push_str(&format!(";\r\n\t{}\r\n", (self.ctx.clock)().to_rfc2822()));
        h
    }

    /// Feeds message content; returns the bytes used and, at a chunk's or DATA's end, the reply.
    pub(super) async fn content(&mut self, input: &[u8]) -> (usize, Option<Reply>) {
        match &mut self.mode {
            Mode::Data(incoming) => {
                let (used, done) = incoming.feed(input).await;
                if !done {
                    return (used, None);
                }
                let Mode::Data(incoming) = std::mem::replace(&mut self.mode, Mode::Command) else {
                    return (used, None);
                };
                (used, Some(self.finish_message(*incoming).await))
            }
            Mode::BdatChunk { remaining, last } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                *remaining -= take as u64;
                let (done, last) = (*remaining == 0, *last);
                if let Some(incoming) = self.bdat.as_mut() {
                    incoming.feed(&input[..take]).await;
                }
                if !done {
                    return (take, None);
                }
                self.mode = Mode::Command;
                (take, Some(self.bdat_chunk_done(last).await))
            }
            Mode::BdatDiscard { remaining, .. } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining > 0 {
                    return (take, None);
                }
                match std::mem::replace(&mut self.mode, Mode::Command) {
                    Mode::BdatDiscard { reply, .. } => (take, Some(reply)),
                    _ => (take, None),
                }
            }
            _ => (0, None),
        }
    }

    /// The reply to a complete BDAT chunk.
    async fn bdat_chunk_done(&mut self, last: bool) -> Reply {
        let Some(mut incoming) = self.bdat.take() else {
            return Reply::bad_sequence("Need MAIL FROM and RCPT TO before BDAT");
        };
        if last {
            incoming.finish_bdat().await;
            return self.finish_message(incoming).await;
        }
        if incoming.too_big {
            self.reset_transaction();
            return Reply::message_too_big(incoming.max);
        }
        if incoming.failed {
            self.reset_transaction();
            return Reply::spool_error();
        }
        let received = incoming.writer.as_ref().map_or(0, |w| w.content_bytes());
        self.bdat = Some(incoming);
        Reply::chunk_ok(received)
    }

    /// Ends the transaction: refuse, or make the message durable and answer 250.
    async fn finish_message(&mut self, incoming: Incoming) -> Reply {
        let tx = self.tx.take();
        self.bdat = None;
        let bare_refused = incoming.decoder.bare_line_ending_seen()
            && self.ctx.config.smtp.bare_line_endings == BareLineEndings::Reject;
        let reply = if incoming.failed {
            Reply::spool_error()
        } else if incoming.too_big {
            Reply::message_too_big(incoming.max)
        } else if bare_refused {
            Reply::bare_line_ending()
        } else if let Some(writer) = incoming.writer {
            let size = writer.content_bytes();
            match writer.commit().await {
                Ok(id) => {
                    self.messages += 1;
                    self.usage.messages += 1;
                    self.usage.bytes += size;
                    // Like Postfix's error limits: errors count "without delivering mail".
                    self.errors = 0;
                    tracing::info!(
                        queue_id = %id,
                        sender = tx.as_ref().map_or("", |t| t.sender.as_str()),
                        recipients = tx.as_ref().map_or(0, |t| t.recipients.len()),
                        size,
                        "message queued"
                    );
                    return Reply::queued(&id);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot commit a message to the spool");
                    Reply::spool_error()
                }
            }
        } else {
            Reply::spool_error()
        };
        tracing::info!(code = reply.code, "message refused");
        reply
    }
}
