//! Delivery status notifications (bounces and delay warnings), built as bytes.
//!
//! [`build`] turns what the queue knows about a message's failed or delayed recipients
//! into a complete RFC 5322 message, ready to be queued with the null sender `<>`:
//!
//! * the container is `multipart/report; report-type=delivery-status` (RFC 6522) with
//!   three parts: a `text/plain` explanation for the person who sent the message, the
//!   machine-readable `message/delivery-status` (RFC 3464, with the SMTP-specific use of
//!   its fields from RFC 3461 §6), and the original header section as
//!   `text/rfc822-headers` (RFC 6522 §4: "headers only");
//! * `Auto-Submitted: auto-replied` marks it as automatic (RFC 3834 §5), so that
//!   well-behaved responders do not answer it;
//! * status codes are RFC 3463 enhanced codes (`class.subject.detail`); [`enhanced_status`]
//!   extracts one from a reply such as `550 5.1.1 <a@b>: user unknown`;
//! * every line ends in CRLF and is at most 998 octets (RFC 5322 §2.1.1): long
//!   `Diagnostic-Code` text is folded at spaces (RFC 3464 §2.1.2 allows folding; RFC 5322
//!   §2.2.3 defines it) and, past [`MAX_DIAGNOSTIC`] characters, truncated. Reply text,
//!   reasons and addresses in the generated parts are reduced to printable ASCII (anything
//!   else becomes `?`; a non-ASCII recipient is written as an RFC 6533 `utf-8` address
//!   with `\x{HEX}` escapes).
//!
//! The original headers are copied as they are, except that bare LF becomes CRLF, bare CR
//! becomes a space, NUL and other control bytes (but TAB) become `?`, and a line longer
//! than 998 octets is folded. If they contain 8-bit bytes (an RFC 6532 message), that
//! part and the whole message say `Content-Transfer-Encoding: 8bit`, and the DSN must be
//! relayed with `BODY=8BITMIME` (or `SMTPUTF8`); otherwise the message is 7-bit.
//!
//! Nothing here does I/O or reads the clock: the caller passes `now`, the dates and a
//! `message_id_seed`, so the same input always gives the same bytes. The caller also
//! decides *whether* a DSN is owed: never for the null sender (RFC 5321 §4.5.5, RFC 3461
//! §6.2), and `build` does not check that.

use chrono::{DateTime, Utc};

/// Longest `Diagnostic-Code` / quoted reply kept, in characters; longer text is cut and
/// ends with `...`.
pub const MAX_DIAGNOSTIC: usize = 4000;

/// Hard line limit of RFC 5322 §2.1.1, without the CRLF.
const MAX_LINE: usize = 998;
/// Preferred width for folded fields and wrapped text (RFC 5322 §2.1.1 "SHOULD").
const WIDTH: usize = 78;

/// Which notification: the message failed for good, or is only late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// `Action: failed`: the mail system gave up on these recipients.
    Failed,
    /// `Action: delayed`: a warning; delivery is still being retried.
    Delayed,
}

/// One recipient the notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient address as given in `RCPT TO` (without angle brackets).
    pub address: String,
    /// RFC 3463 enhanced status code (`5.1.1`); see [`enhanced_status`]. Anything that is
    /// not a valid `4.x.x`/`5.x.x` code is replaced by `5.0.0` (failed) or `4.0.0` (delayed);
    /// a delayed recipient's `5.x.x` is written as `4.x.x`.
    pub status: String,
    /// The remote server involved (`mx.example.org`, `host:port` is accepted and the port
    /// dropped), written as `Remote-MTA: dns; ...`.
    pub remote_mta: Option<String>,
    /// The remote server's reply, when the failure is a reply (`550 5.1.1 <x>: user
    /// unknown`), written as `Diagnostic-Code: smtp; ...` and quoted to the sender.
    pub diagnostic: Option<String>,
    /// A sentence a person understands, always present (`The recipient's server does not
    /// know this address.`). Without a reply it also becomes `Diagnostic-Code: X-Mailgate; ...`.
    pub reason: String,
    /// When delivery to this recipient was last attempted (`Last-Attempt-Date`).
    pub last_attempt: Option<DateTime<Utc>>,
}

/// Everything [`build`] needs; borrowed, so the queue can build from its own records.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    pub kind: DsnKind,
    /// Our host name: `Reporting-MTA`, the `From` domain and the `Message-ID` domain.
    pub reporting_mta: &'a str,
    pub queue_id: &'a str,
    /// The envelope sender of the original message: the DSN's `To`.
    pub original_sender: &'a str,
    /// When the original message was accepted (`Arrival-Date`).
    pub arrival: DateTime<Utc>,
    /// When this notification is made (`Date`).
    pub now: DateTime<Utc>,
    /// For [`DsnKind::Delayed`]: when retrying stops (`Will-Retry-Until`). Ignored for
    /// [`DsnKind::Failed`].
    pub will_retry_until: Option<DateTime<Utc>>,
    pub recipients: &'a [DsnRecipient],
    /// The original header section (or the whole original message: only the part
    /// before the first empty line is used; see [`header_block`] to bound it).
    pub original_headers: &'a [u8],
    /// Makes the `Message-ID` and the MIME boundary unique, deterministically.
    pub message_id_seed: u64,
}

/// The complete notification message, CRLF line endings. See the module documentation.
pub fn build(input: &DsnInput) -> Vec<u8> {
    let mta = host_token(input.reporting_mta);
    let qid = printable(input.queue_id);

    let text = human_part(input, &mta, &qid);
    let status = status_part(input, &mta, &qid);
    let (headers, eight_bit) = normalize_headers(header_block(input.original_headers, usize::MAX));
    let parts = [text.as_bytes(), status.as_bytes(), &headers];
    let boundary = choose_boundary(input.queue_id, input.message_id_seed, &parts);
    let cte = if eight_bit { "8bit" } else { "7bit" };

    let mut top = String::new();
    top.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n"));
    top.push_str(&fold_field("To", &format!("<{}>", header_address(input.original_sender))));
    top.push_str(match input.kind {
        DsnKind::Failed => "Subject: Undelivered Mail Returned to Sender\r\n",
        DsnKind::Delayed => "Subject: Delayed Mail (still being retried)\r\n",
    });
    top.push_str(&format!("Date: {}\r\n", rfc5322_date(input.now)));
    top.push_str(&fold_field(
        "Message-ID",
        &format!("<{}.{:x}.dsn@{}>", id_token(input.queue_id), input.message_id_seed, mta),
    ));
    top.push_str("Auto-Submitted: auto-replied\r\n");
    top.push_str("MIME-Version: 1.0\r\n");
    top.push_str("Content-Type: multipart/report; report-type=delivery-status;\r\n");
    top.push_str(&format!("\tboundary=\"{boundary}\"\r\n"));
    top.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n"));
    top.push_str("\r\n");
    top.push_str("This is a MIME-encapsulated message: a delivery status notification.\r\n");

    top.push_str(&format!("\r\n--{boundary}\r\n"));
    top.push_str("Content-Type: text/plain; charset=us-ascii\r\n");
    top.push_str("Content-Description: Notification\r\n");
    top.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
    top.push_str(&text);

    top.push_str(&format!("\r\n--{boundary}\r\n"));
    top.push_str("Content-Type: message/delivery-status\r\n");
    top.push_str("Content-Description: Delivery report\r\n\r\n");
    top.push_str(&status);

    top.push_str(&format!("\r\n--{boundary}\r\n"));
    top.push_str("Content-Type: text/rfc822-headers\r\n");
    top.push_str(match input.kind {
        DsnKind::Failed => "Content-Description: Undelivered Message Headers\r\n",
        DsnKind::Delayed => "Content-Description: Delayed Message Headers\r\n",
    });
    top.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n\r\n"));

    let mut out = top.into_bytes();
    out.extend_from_slice(&headers);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The header section of `message`: everything before the first empty line (LF or CRLF),
/// including the line ending of the last header line but not the empty line; the whole
/// message if there is no empty line. If that is longer than `max` bytes, it is cut at the
/// last line boundary within `max`, preferring one where a new field starts (so that no
/// folded field is split); empty if not even the first line fits.
pub fn header_block(message: &[u8], max: usize) -> &[u8] {
    let mut end = message.len();
    let mut pos = 0;
    while pos < message.len() {
        let line_end = match message[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => message.len(),
        };
        let line = &message[pos..line_end];
        if line == b"\n" || line == b"\r\n" {
            end = pos;
            break;
        }
        pos = line_end;
    }
    let block = &message[..end];
    if block.len() <= max {
        return block;
    }
    let mut any_line = 0;
    let mut field = 0;
    for p in 1..=max {
        if block[p - 1] == b'\n' {
            any_line = p;
            if !matches!(block.get(p), Some(b' ' | b'\t')) {
                field = p;
            }
        }
    }
    &block[..if field > 0 { field } else { any_line }]
}

/// The RFC 3463 enhanced status code in a reply or reason (`550 5.1.1 ...` -> `5.1.1`,
/// also `550-5.1.1`, `(#5.7.1)`); a `2.x.x` code is ignored. Without one: `5.0.0` if
/// `permanent`, else `4.0.0`.
pub fn enhanced_status(reply_or_reason: &str, permanent: bool) -> String {
    for token in reply_or_reason.split_whitespace() {
        // `550-5.1.1` (a multi-line reply's line) carries the code after the dash.
        let token = match token.as_bytes() {
            [a, b, c, b'-', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => &token[4..],
            _ => token,
        };
        let token = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if is_status(token) && !token.starts_with('2') {
            return token.to_string();
        }
    }
    if permanent { "5.0.0" } else { "4.0.0" }.to_string()
}

/// `class "." subject "." detail` with class 2, 4 or 5 and 1-3 digits each (RFC 3463 §2).
fn is_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let class_ok = matches!(parts.next(), Some("2" | "4" | "5"));
    let num = |p: Option<&str>| p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    class_ok && num(parts.next()) && num(parts.next()) && parts.next().is_none()
}

/// RFC 5322 §3.3 date-time, in UTC: `Tue, 1 Jul 2025 10:52:37 +0000`.
fn rfc5322_date(t: DateTime<Utc>) -> String {
    t.format("%a, %-d %b %Y %H:%M:%S +0000").to_string()
}

/// Printable ASCII only (space included): anything else becomes `?`.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Reply or reason text for a header field or a quote: printable ASCII, CR/LF/TAB runs
/// and spaces collapsed to one space, at most [`MAX_DIAGNOSTIC`] characters.
fn one_line_text(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect();
    let mut out = cleaned.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    if out.len() > MAX_DIAGNOSTIC {
        out.truncate(MAX_DIAGNOSTIC - 3);
        out.push_str("...");
    }
    out
}

/// A host name or address literal for `dns;` fields, `From` and `Message-ID`.
fn host_token(s: &str) -> String {
    let t: String = s
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".-_[]:".contains(c) { c } else { '-' })
        .collect();
    if t.is_empty() {
        "localhost".to_string()
    } else {
        t
    }
}

/// `Remote-MTA` host: `host:25` -> `host`, `[192.0.2.1]:25` -> `[192.0.2.1]`.
fn remote_host(s: &str) -> String {
    let s = s.trim();
    let s = if s.starts_with('[') {
        s.find(']').map_or(s, |i| &s[..=i])
    } else {
        match s.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => s,
        }
    };
    host_token(s)
}

/// The queue id as the local part of a `Message-ID` (RFC 5322 dot-atom-text).
fn id_token(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() {
        "dsn".to_string()
    } else {
        t
    }
}

/// The `To` address: control characters and `<>` removed; non-ASCII kept (RFC 6532:
/// such a sender can only be reached over SMTPUTF8 anyway).
fn header_address(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() && *c != '<' && *c != '>').collect()
}

/// A recipient for `Final-Recipient` and for the text: `rfc822; a@b` when printable
/// ASCII, else RFC 6533 `utf-8; ` with `\x{HEX}` for each character outside QCHAR.
fn recipient_field(addr: &str) -> (String, String) {
    if addr.chars().all(|c| c.is_ascii_graphic()) {
        return ("rfc822".to_string(), addr.to_string());
    }
    let mut out = String::new();
    for c in addr.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", c as u32));
        }
    }
    ("utf-8".to_string(), out)
}

/// `Name: value` folded at spaces to about [`WIDTH`] columns (RFC 5322 §2.2.3), every
/// line at most [`MAX_LINE`] octets; a word too long for one line is split (unfolding
/// then shows a space inside it). Ends in CRLF.
fn fold_field(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        // Words that can never fit go out in chunks, each on its own line.
        while 1 + word.len() > MAX_LINE - 1 {
            let (chunk, rest) = split_at_most(word, MAX_LINE - 2);
            if line_len > 0 {
                out.push_str("\r\n");
            }
            out.push(' ');
            out.push_str(chunk);
            line_len = 1 + chunk.len();
            word = rest;
        }
        // Past the preferred width a new line starts, unless this is the field's first
        // word (better one long line than an empty first one), but never past 998.
        let end = line_len + 1 + word.len();
        if (end > WIDTH && line_len > name.len() + 1) || end > MAX_LINE {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

/// `s` split after at most `n` bytes, at a character boundary (at least one character).
fn split_at_most(s: &str, n: usize) -> (&str, &str) {
    let mut i = n.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    if i == 0 {
        i = s.chars().next().map_or(0, char::len_utf8);
    }
    s.split_at(i)
}

/// Printable-ASCII `text` wrapped to [`WIDTH`] columns, each line starting with
/// `indent`; over-long words are split. Every line ends in CRLF.
fn wrap(text: &str, indent: &str) -> String {
    let room = WIDTH.saturating_sub(indent.len()).max(20);
    let mut out = String::new();
    let mut line = String::new();
    let flush = |line: &mut String, out: &mut String| {
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
            out.push_str("\r\n");
            line.clear();
        }
    };
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        while word.len() > room {
            flush(&mut line, &mut out);
            let (chunk, rest) = split_at_most(word, room);
            line.push_str(chunk);
            flush(&mut line, &mut out);
            word = rest;
        }
        if !line.is_empty() && line.len() + 1 + word.len() > room {
            flush(&mut line, &mut out);
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    flush(&mut line, &mut out);
    out
}

/// Part 1: what happened, for the person who sent the message.
fn human_part(input: &DsnInput, mta: &str, qid: &str) -> String {
    let mut t = String::new();
    t.push_str(&wrap(&format!("This is the Mail Delivery System at {mta}."), ""));
    t.push_str("\r\n");
    match input.kind {
        DsnKind::Failed => {
            t.push_str(&wrap(
                "Your message could not be delivered to the recipients listed below. \
                 The mail system has given up and will not try again.",
                "",
            ));
        }
        DsnKind::Delayed => {
            let until = match input.will_retry_until {
                Some(u) => format!("until {}", rfc5322_date(u)),
                None => "for a while".to_string(),
            };
            t.push_str(&wrap(
                &format!(
                    "Your message has not yet been delivered to the recipients listed below. \
                     This is only a warning: you do not need to do anything yet. The mail \
                     system will keep trying to deliver it {until}. If it still cannot be \
                     delivered by then, you will receive another message."
                ),
                "",
            ));
        }
    }
    for r in input.recipients {
        let (_, addr) = recipient_field(&r.address);
        t.push_str("\r\n");
        t.push_str(&wrap(&format!("<{addr}>"), ""));
        t.push_str(&wrap(&one_line_text(&r.reason), "    "));
        let remote = r.remote_mta.as_deref().map(remote_host);
        if let Some(reply) = r.diagnostic.as_deref().filter(|d| !d.trim().is_empty()) {
            let who = match &remote {
                Some(h) => format!("The recipient's mail server ({h}) replied:"),
                None => "The recipient's mail server replied:".to_string(),
            };
            t.push_str(&wrap(&who, "    "));
            t.push_str(&wrap(&one_line_text(reply), "        "));
        } else if let Some(h) = &remote {
            t.push_str(&wrap(&format!("Mail server involved: {h}"), "    "));
        }
        if let Some(at) = r.last_attempt {
            t.push_str(&wrap(&format!("Last attempt: {}", rfc5322_date(at)), "    "));
        }
    }
    t.push_str("\r\n");
    if input.kind == DsnKind::Failed {
        t.push_str(&wrap(
            "What you can do: check the addresses above for typing mistakes and send \
             the message again. If the problem remains, contact the recipient another \
             way or ask your mail administrator for help.",
            "",
        ));
        t.push_str("\r\n");
    }
    t.push_str(&wrap(&format!("Message received: {}", rfc5322_date(input.arrival)), ""));
    t.push_str(&wrap(&format!("Queue ID (for your mail administrator): {qid}"), ""));
    t.push_str("\r\n");
    t.push_str(&wrap(
        "The technical report and the headers of your original message are attached.",
        "",
    ));
    t
}

/// Part 2: the `message/delivery-status` body (RFC 3464 §2): per-message fields, then a
/// blank line and the per-recipient fields for each recipient.
fn status_part(input: &DsnInput, mta: &str, qid: &str) -> String {
    let mut s = String::new();
    s.push_str(&fold_field("Reporting-MTA", &format!("dns; {mta}")));
    s.push_str(&fold_field("X-Mailgate-Queue-ID", qid));
    s.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(input.arrival)));
    let (action, fallback) = match input.kind {
        DsnKind::Failed => ("failed", "5.0.0"),
        DsnKind::Delayed => ("delayed", "4.0.0"),
    };
    for r in input.recipients {
        s.push_str("\r\n");
        let (kind, addr) = recipient_field(&r.address);
        s.push_str(&fold_field("Final-Recipient", &format!("{kind}; {addr}")));
        s.push_str(&format!("Action: {action}\r\n"));
        let status = r.status.trim();
        let status = match input.kind {
            _ if !is_status(status) || status.starts_with('2') => fallback.to_string(),
            // A delay is transient by definition (RFC 3463 class 4); `failed` may carry a
            // 4.x.x code (the message expired after temporary errors).
            DsnKind::Delayed => format!("4{}", &status[1..]),
            DsnKind::Failed => status.to_string(),
        };
        s.push_str(&format!("Status: {status}\r\n"));
        if let Some(h) = &r.remote_mta {
            s.push_str(&fold_field("Remote-MTA", &format!("dns; {}", remote_host(h))));
        }
        match r.diagnostic.as_deref().filter(|d| !d.trim().is_empty()) {
            Some(reply) => s.push_str(&fold_field("Diagnostic-Code", &format!("smtp; {}", one_line_text(reply)))),
            None if !r.reason.trim().is_empty() => {
                s.push_str(&fold_field("Diagnostic-Code", &format!("X-Mailgate; {}", one_line_text(&r.reason))))
            }
            None => {}
        }
        if let Some(at) = r.last_attempt {
            s.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322_date(at)));
        }
        if input.kind == DsnKind::Delayed {
            if let Some(until) = input.will_retry_until {
                s.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(until)));
            }
        }
    }
    s
}

/// Part 3's body: CRLF line endings, no NUL/control bytes, lines at most 998 octets,
/// ending in CRLF (unless empty). Also says whether 8-bit bytes remain.
fn normalize_headers(h: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(h.len() + 16);
    let mut col = 0usize;
    let mut eight_bit = false;
    let mut i = 0;
    while i < h.len() {
        let b = h[i];
        i += 1;
        match b {
            b'\r' if h.get(i) == Some(&b'\n') => continue, // the LF ends the line
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                col = 0;
                continue;
            }
            _ => {}
        }
        let b = match b {
            b'\r' => b' ',
            b'\t' => b'\t',
            0..=0x1f | 0x7f => b'?',
            b => b,
        };
        // Fold an over-long line, not inside a UTF-8 sequence if that can be helped.
        if col >= MAX_LINE || (col >= MAX_LINE - 4 && b & 0xC0 != 0x80) {
            out.extend_from_slice(b"\r\n ");
            col = 1;
        }
        eight_bit |= b >= 0x80;
        out.push(b);
        col += 1;
    }
    if col > 0 {
        out.extend_from_slice(b"\r\n");
    }
    (out, eight_bit)
}

/// A boundary derived from the queue id and seed that occurs in none of `parts` (RFC 2046
/// §5.1.1: it must not appear in the encapsulated content).
fn choose_boundary(queue_id: &str, seed: u64, parts: &[&[u8]]) -> String {
    (0u64..)
        .map(|attempt| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in queue_id.bytes().chain(seed.to_le_bytes()).chain(attempt.to_le_bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            // splitmix64 finaliser, so that nearby seeds give unrelated boundaries.
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^= h >> 31;
            format!("=_mailgate-dsn-{h:016x}")
        })
        .find(|b| !parts.iter().any(|p| contains(p, b.as_bytes())))
        .expect("an unused boundary exists")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 7, 1, h, m, 0).unwrap()
    }

    const ORIG: &[u8] = b"Received: from dev (dev [192.0.2.7])\r\n\tby mx; Tue, 1 Jul 2025 09:00:00 +0000\r\n\
From: Printer <printer@office.example>\r\nTo: bob@remote.example\r\nSubject: Scan from MFP-3\r\n\
Message-ID: <abc@office.example>\r\n\r\nbody line\r\n";

    fn rcpt_unknown() -> DsnRecipient {
        DsnRecipient {
            address: "bob@remote.example".into(),
            status: "5.1.1".into(),
            remote_mta: Some("mx.remote.example:25".into()),
            diagnostic: Some("550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown".into()),
            reason: "The recipient's mail server does not know this address.".into(),
            last_attempt: Some(t(9, 5)),
        }
    }

    fn rcpt_no_reply() -> DsnRecipient {
        DsnRecipient {
            address: "carol@gone.example".into(),
            status: "5.4.4".into(),
            remote_mta: None,
            diagnostic: None,
            reason: "The domain gone.example has no mail server.".into(),
            last_attempt: None,
        }
    }

    fn input<'a>(kind: DsnKind, rcpts: &'a [DsnRecipient], orig: &'a [u8]) -> DsnInput<'a> {
        DsnInput {
            kind,
            reporting_mta: "gw.mailgate.example",
            queue_id: "Q1A2B3",
            original_sender: "printer@office.example",
            arrival: t(9, 0),
            now: t(10, 30),
            will_retry_until: Some(Utc.with_ymd_and_hms(2025, 7, 6, 9, 0, 0).unwrap()),
            recipients: rcpts,
            original_headers: orig,
            message_id_seed: 0xfeed_beef,
        }
    }

    fn text(m: &[u8]) -> String {
        String::from_utf8(m.to_vec()).unwrap()
    }

    /// Every line ends in CRLF, is at most 998 octets; no bare CR or LF anywhere.
    fn assert_wire_clean(m: &[u8]) {
        assert!(m.ends_with(b"\r\n"));
        for (i, &b) in m.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && m[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        for line in m.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "line of {} octets", line.len());
        }
    }

    fn header<'m>(m: &'m str, name: &str) -> Option<&'m str> {
        let head = &m[..m.find("\r\n\r\n").unwrap()];
        head.split("\r\n").find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    /// Runs Python's `email` parser on `msg` and checks it against `expect` (JSON):
    /// kind, sender, the original subject and per recipient its fields.
    fn python_check(msg: &[u8], expect: serde_json::Value) {
        const SCRIPT: &str = r#"
import email, json, re, sys
exp = json.loads(sys.argv[1])
msg = email.message_from_binary_file(sys.stdin.buffer)
def unfold(v):
    return None if v is None else re.sub(r'\r?\n(?=[ \t])', '', v)
def check(cond, what):
    if not cond:
        sys.exit('FAILED: ' + what)
for part in msg.walk():
    check(not part.defects, 'defects %r in %s' % (part.defects, part.get_content_type()))
check(msg.is_multipart(), 'is_multipart')
check(msg.get_content_type() == 'multipart/report', 'content type ' + msg.get_content_type())
check(msg.get_param('report-type') == 'delivery-status', 'report-type')
check(msg['Auto-Submitted'] == 'auto-replied', 'Auto-Submitted')
check(msg['To'] == '<' + exp['sender'] + '>', 'To ' + str(msg['To']))
check(msg['Subject'] == exp['subject'], 'Subject ' + str(msg['Subject']))
parts = msg.get_payload()
check(len(parts) == 3, 'three parts, got %d' % len(parts))
types = [p.get_content_type() for p in parts]
check(types == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], 'types %r' % types)
check(parts[0].get_content_charset() == 'us-ascii', 'charset')
human = ' '.join(parts[0].get_payload().split())
for s in exp['human']:
    check(' '.join(s.split()) in human, 'human text lacks %r' % s)
blocks = parts[1].get_payload()
check(isinstance(blocks, list), 'delivery-status parsed into blocks')
check(len(blocks) == 1 + len(exp['rcpts']), 'blocks: %d' % len(blocks))
check(blocks[0]['Reporting-MTA'] == 'dns; gw.mailgate.example', 'Reporting-MTA')
check(blocks[0]['X-Mailgate-Queue-ID'] == 'Q1A2B3', 'queue id')
check(blocks[0]['Arrival-Date'] == 'Tue, 1 Jul 2025 09:00:00 +0000', 'Arrival-Date')
for b, r in zip(blocks[1:], exp['rcpts']):
    for k, v in r.items():
        got = unfold(b[k])
        check(got == v, '%s: got %r, want %r' % (k, got, v))
orig = email.message_from_string(parts[2].get_payload())
check(orig['Subject'] == exp['orig_subject'], 'original Subject %r' % orig['Subject'])
print('ok')
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(expect.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child.stdin.take().unwrap().write_all(msg).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.starts_with(b"ok"),
            "python: {}{}\n--- message ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(msg)
        );
    }

    #[test]
    fn failed_structure() {
        let rcpts = [rcpt_unknown(), rcpt_no_reply()];
        let m = build(&input(DsnKind::Failed, &rcpts, ORIG));
        assert_wire_clean(&m);
        assert!(m.is_ascii());
        let s = text(&m);
        assert_eq!(header(&s, "From"), Some("Mail Delivery System <MAILER-DAEMON@gw.mailgate.example>"));
        assert_eq!(header(&s, "To"), Some("<printer@office.example>"));
        assert_eq!(header(&s, "Subject"), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(header(&s, "Date"), Some("Tue, 1 Jul 2025 10:30:00 +0000"));
        assert_eq!(header(&s, "Message-ID"), Some("<Q1A2B3.feedbeef.dsn@gw.mailgate.example>"));
        assert_eq!(header(&s, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(header(&s, "MIME-Version"), Some("1.0"));
        assert_eq!(header(&s, "Content-Transfer-Encoding"), Some("7bit"));
        assert!(s.contains(
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"=_mailgate-dsn-"
        ));
        assert!(s.contains(
            "\r\n\r\nReporting-MTA: dns; gw.mailgate.example\r\nX-Mailgate-Queue-ID: Q1A2B3\r\n\
             Arrival-Date: Tue, 1 Jul 2025 09:00:00 +0000\r\n\r\n\
             Final-Recipient: rfc822; bob@remote.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Remote-MTA: dns; mx.remote.example\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.example>: Recipient address\r\n \
             rejected: User unknown\r\nLast-Attempt-Date: Tue, 1 Jul 2025 09:05:00 +0000\r\n\r\n\
             Final-Recipient: rfc822; carol@gone.example\r\nAction: failed\r\nStatus: 5.4.4\r\n\
             Diagnostic-Code: X-Mailgate; The domain gone.example has no mail server.\r\n\r\n--"
        ));
        assert!(!s.contains("Will-Retry-Until"));
        // Human part: who, why, the reply quoted, the queue id.
        assert!(s.contains("<bob@remote.example>\r\n    The recipient's mail server does not know this address.\r\n"));
        assert!(s.contains("    The recipient's mail server (mx.remote.example) replied:\r\n        550 5.1.1"));
        assert!(s.contains("Queue ID (for your mail administrator): Q1A2B3"));
        assert!(s.replace("\r\n", " ").contains("will not try again"));
        // Part 3: the headers only, not the body.
        assert!(s.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(s.contains("Subject: Scan from MFP-3\r\nMessage-ID: <abc@office.example>\r\n\r\n--=_mailgate-dsn-"));
        assert!(!s.contains("body line"));
        assert!(s.ends_with("--\r\n"));
        // Deterministic.
        assert_eq!(m, build(&input(DsnKind::Failed, &rcpts, ORIG)));
    }

    #[test]
    fn delayed_structure() {
        let mut r = rcpt_unknown();
        r.status = "4.2.0".into();
        r.diagnostic = Some("451 4.2.0 Mailbox busy, try later".into());
        r.reason = "The recipient's mailbox is temporarily unavailable.".into();
        let rcpts = [r];
        let m = build(&input(DsnKind::Delayed, &rcpts, ORIG));
        assert_wire_clean(&m);
        let s = text(&m);
        assert_eq!(header(&s, "Subject"), Some("Delayed Mail (still being retried)"));
        assert!(s.contains(
            "Action: delayed\r\nStatus: 4.2.0\r\nRemote-MTA: dns; mx.remote.example\r\n\
             Diagnostic-Code: smtp; 451 4.2.0 Mailbox busy, try later\r\n\
             Last-Attempt-Date: Tue, 1 Jul 2025 09:05:00 +0000\r\n\
             Will-Retry-Until: Sun, 6 Jul 2025 09:00:00 +0000\r\n"
        ));
        let flat = s.replace("\r\n", " ");
        assert!(flat.contains("until Sun, 6 Jul 2025 09:00:00 +0000"));
        assert!(flat.contains("you do not need to do anything yet"));
        assert!(!flat.contains("will not try again"));
        // No retry deadline known: no field, vaguer words.
        let mut i = input(DsnKind::Delayed, &rcpts, ORIG);
        i.will_retry_until = None;
        let s = text(&build(&i));
        assert!(!s.contains("Will-Retry-Until"));
        assert!(s.replace("\r\n", " ").contains("keep trying to deliver it for a while"));
    }

    #[test]
    fn invalid_status_falls_back_by_kind() {
        let mut r = rcpt_no_reply();
        r.status = "user unknown".into();
        let rcpts = [r];
        assert!(text(&build(&input(DsnKind::Failed, &rcpts, ORIG))).contains("\r\nStatus: 5.0.0\r\n"));
        assert!(text(&build(&input(DsnKind::Delayed, &rcpts, ORIG))).contains("\r\nStatus: 4.0.0\r\n"));
        let mut r = rcpt_no_reply();
        r.status = "2.0.0".into();
        assert!(text(&build(&input(DsnKind::Failed, &[r], ORIG))).contains("\r\nStatus: 5.0.0\r\n"));
        // A delay is class 4 whatever the caller says; a failure may be class 4 (expiry).
        let mut r = rcpt_no_reply();
        r.status = "5.7.26".into();
        assert!(text(&build(&input(DsnKind::Delayed, &[r], ORIG))).contains("\r\nStatus: 4.7.26\r\n"));
        let mut r = rcpt_no_reply();
        r.status = "4.4.7".into();
        assert!(text(&build(&input(DsnKind::Failed, &[r], ORIG))).contains("\r\nStatus: 4.4.7\r\n"));
    }

    #[test]
    fn python_parses_failed() {
        let rcpts = [rcpt_unknown(), rcpt_no_reply()];
        let m = build(&input(DsnKind::Failed, &rcpts, ORIG));
        python_check(
            &m,
            serde_json::json!({
                "sender": "printer@office.example",
                "subject": "Undelivered Mail Returned to Sender",
                "orig_subject": "Scan from MFP-3",
                "human": ["bob@remote.example", "User unknown", "Q1A2B3", "carol@gone.example", "no mail server"],
                "rcpts": [
                    {"Final-Recipient": "rfc822; bob@remote.example", "Action": "failed", "Status": "5.1.1",
                     "Remote-MTA": "dns; mx.remote.example",
                     "Diagnostic-Code":
                         "smtp; 550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown",
                     "Last-Attempt-Date": "Tue, 1 Jul 2025 09:05:00 +0000", "Will-Retry-Until": null},
                    {"Final-Recipient": "rfc822; carol@gone.example", "Action": "failed", "Status": "5.4.4",
                     "Remote-MTA": null,
                     "Diagnostic-Code": "X-Mailgate; The domain gone.example has no mail server."},
                ],
            }),
        );
    }

    #[test]
    fn python_parses_delayed() {
        let mut r = rcpt_unknown();
        r.status = enhanced_status("421 4.7.0 Try again later", false);
        r.diagnostic = Some("421 4.7.0 Try again later".into());
        let rcpts = [r];
        let m = build(&input(DsnKind::Delayed, &rcpts, ORIG));
        python_check(
            &m,
            serde_json::json!({
                "sender": "printer@office.example",
                "subject": "Delayed Mail (still being retried)",
                "orig_subject": "Scan from MFP-3",
                "human": ["Sun, 6 Jul 2025 09:00:00 +0000", "421 4.7.0 Try again later", "Q1A2B3"],
                "rcpts": [
                    {"Final-Recipient": "rfc822; bob@remote.example", "Action": "delayed", "Status": "4.7.0",
                     "Diagnostic-Code": "smtp; 421 4.7.0 Try again later",
                     "Will-Retry-Until": "Sun, 6 Jul 2025 09:00:00 +0000"},
                ],
            }),
        );
    }

    #[test]
    fn python_parses_hostile_reply_and_bare_lf_headers() {
        // Non-ASCII and control characters, a multi-line reply, and a 2000-character line.
        let words = "blocked ".repeat(250);
        let mut a = rcpt_unknown();
        a.diagnostic =
            Some("550 5.7.1 Zugriff verweigert \u{fffd}\u{fffd} f\u{fc}r Sie\r\n550 5.7.1 \x01second\tline".into());
        a.status = enhanced_status(a.diagnostic.as_deref().unwrap(), true);
        let mut b = rcpt_unknown();
        b.address = "dave@remote.example".into();
        b.diagnostic = Some(format!("554 5.7.1 {}", words.trim_end()));
        let mut c = rcpt_unknown();
        c.address = "erin@remote.example".into();
        let blob = "x".repeat(2000);
        c.diagnostic = Some(format!("550 5.1.1 {blob}"));
        let rcpts = [a, b, c];
        let orig = b"From: Printer <printer@office.example>\nSubject: LF only\nX-Long: a\n\tcontinued\n\nbody\n";
        let m = build(&input(DsnKind::Failed, &rcpts, orig));
        assert_wire_clean(&m);
        assert!(m.is_ascii());
        let s = text(&m);
        assert!(s.contains("\r\nSubject: LF only\r\nX-Long: a\r\n\tcontinued\r\n\r\n--=_mailgate-dsn-"));
        python_check(
            &m,
            serde_json::json!({
                "sender": "printer@office.example",
                "subject": "Undelivered Mail Returned to Sender",
                "orig_subject": "LF only",
                "human": ["Zugriff verweigert ?? f?r Sie 550 5.7.1 ?second line"],
                "rcpts": [
                    {"Status": "5.7.1",
                     "Diagnostic-Code": "smtp; 550 5.7.1 Zugriff verweigert ?? f?r Sie 550 5.7.1 ?second line"},
                    {"Final-Recipient": "rfc822; dave@remote.example",
                     "Diagnostic-Code": format!("smtp; 554 5.7.1 {}", words.trim_end())},
                    {"Final-Recipient": "rfc822; erin@remote.example"},
                ],
            }),
        );
        // The unbreakable 2000-character word is split over lines of at most 998 octets;
        // unfolded, only spaces were added.
        let field_start = s.find("Diagnostic-Code: smtp; 550 5.1.1\r\n xxx").unwrap();
        let field_end = field_start + s[field_start..].find("\r\nLast-Attempt-Date").unwrap();
        let field = &s[field_start..field_end];
        assert!(field.split("\r\n").count() >= 3);
        assert_eq!(field.replace("\r\n", "").replace(' ', ""), format!("Diagnostic-Code:smtp;5505.1.1{blob}"));
    }

    #[test]
    fn very_long_diagnostic_is_truncated() {
        let mut r = rcpt_unknown();
        r.diagnostic = Some(format!("550 5.1.1 {}", "word ".repeat(5000)));
        let m = build(&input(DsnKind::Failed, &[r], ORIG));
        assert_wire_clean(&m);
        let s = text(&m);
        let start = s.find("Diagnostic-Code:").unwrap();
        let end = start + s[start..].find("\r\nLast-Attempt-Date").unwrap();
        let unfolded = s[start..end].replace("\r\n", "");
        assert!(unfolded.ends_with("..."));
        assert!(unfolded.len() <= "Diagnostic-Code: smtp; ".len() + MAX_DIAGNOSTIC);
    }

    #[test]
    fn non_ascii_recipient_and_sender() {
        let mut r = rcpt_no_reply();
        r.address = "j\u{f6}rg+x@b\u{fc}ro.example".into();
        let mut i = input(DsnKind::Failed, std::slice::from_ref(&r), ORIG);
        i.original_sender = "d\u{e9}v\r\nBcc: evil@x>@office.example";
        let s = text(&build(&i));
        assert!(s.contains("\r\nFinal-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}ro.example\r\n"));
        // No header injection through the sender; its UTF-8 is kept (RFC 6532).
        assert_eq!(header(&s, "To"), Some("<d\u{e9}vBcc: evil@x@office.example>"));
        assert!(!s.contains("\r\nBcc:"));
    }

    #[test]
    fn eight_bit_original_headers_are_labelled() {
        let orig = "Subject: Gr\u{fc}\u{df}e\r\nX-Nul: a\0b\r\n\r\n".as_bytes();
        let m = build(&input(DsnKind::Failed, &[rcpt_unknown()], orig));
        assert_wire_clean(&m);
        let s = String::from_utf8(m).unwrap();
        assert_eq!(header(&s, "Content-Transfer-Encoding"), Some("8bit"));
        assert!(s.contains("Content-Transfer-Encoding: 8bit\r\n\r\nSubject: Gr\u{fc}\u{df}e\r\nX-Nul: a?b\r\n"));
        // The generated parts stay ASCII.
        let from = s.find("Content-Type: text/plain").unwrap();
        let to = s.find("Content-Type: text/rfc822-headers").unwrap();
        let report = &s[from..to];
        assert!(report.is_ascii());
    }

    #[test]
    fn long_original_header_line_is_folded() {
        let orig = format!("Subject: hi\r\nX-Huge: {}\r\n\r\n", "y".repeat(3000));
        let m = build(&input(DsnKind::Failed, &[rcpt_unknown()], orig.as_bytes()));
        assert_wire_clean(&m);
        let s = text(&m);
        let part = &s[s.rfind("X-Huge: ").unwrap()..];
        let part = &part[..part.find("\r\n\r\n").unwrap()];
        assert_eq!(part.replace("\r\n ", ""), format!("X-Huge: {}", "y".repeat(3000)));
    }

    #[test]
    fn boundary_avoids_original_content() {
        let rcpts = [rcpt_unknown()];
        let plain = text(&build(&input(DsnKind::Failed, &rcpts, ORIG)));
        let i = plain.find("boundary=\"").unwrap() + "boundary=\"".len();
        let first = &plain[i..i + plain[i..].find('"').unwrap()];
        let hostile = format!("Subject: x\r\nX-Trap: --{first}\r\n\r\n");
        let m = text(&build(&input(DsnKind::Failed, &rcpts, hostile.as_bytes())));
        let j = m.find("boundary=\"").unwrap() + "boundary=\"".len();
        let second = &m[j..j + m[j..].find('"').unwrap()];
        assert_ne!(first, second);
        assert!(second.len() <= 70);
        assert_eq!(m.matches(&format!("--{second}")).count(), 4);
        // Another seed, another boundary.
        let mut other = input(DsnKind::Failed, &rcpts, ORIG);
        other.message_id_seed = 1;
        assert!(!text(&build(&other)).contains(first));
    }

    #[test]
    fn no_recipients_and_empty_headers() {
        let m = build(&input(DsnKind::Failed, &[], b""));
        assert_wire_clean(&m);
        let s = text(&m);
        assert!(s.contains("Arrival-Date: Tue, 1 Jul 2025 09:00:00 +0000\r\n\r\n--=_mailgate-dsn-"));
        assert!(s.contains("Content-Type: text/rfc822-headers\r\n"));
    }

    #[test]
    fn enhanced_status_table() {
        let cases: &[(&str, bool, &str)] = &[
            ("550 5.1.1 <bob@x>: user unknown", true, "5.1.1"),
            ("550-5.1.1 The email account does not exist; 5.1.1 more", true, "5.1.1"),
            ("452 4.2.2 Mailbox full", false, "4.2.2"),
            ("421 4.7.0 Try again later", true, "4.7.0"),
            ("554 5.7.1", true, "5.7.1"),
            ("550 Requested action not taken (#5.1.0)", true, "5.1.0"),
            ("550 5.7.26 unauthenticated mail is prohibited", true, "5.7.26"),
            ("553 5.1.10 null MX", true, "5.1.10"),
            ("550 user unknown", true, "5.0.0"),
            ("450 try later", false, "4.0.0"),
            ("250 2.0.0 Ok: queued", true, "5.0.0"),
            ("connection refused by 192.0.2.1:25", false, "4.0.0"),
            ("Host or domain name not found (5.4.4).", true, "5.4.4"),
            ("550 5.1.1.1 odd", true, "5.0.0"),
            ("550 5.1234.1 odd", true, "5.0.0"),
            ("550 6.1.1 odd", true, "5.0.0"),
            ("", false, "4.0.0"),
            ("", true, "5.0.0"),
        ];
        for &(input, permanent, want) in cases {
            assert_eq!(enhanced_status(input, permanent), want, "{input:?}");
        }
    }

    #[test]
    fn header_block_crlf_and_lf() {
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n", usize::MAX), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody\n", usize::MAX), b"A: 1\nB: 2\n");
        assert_eq!(header_block(b"A: 1\nB: 2\r\n\nbody", usize::MAX), b"A: 1\nB: 2\r\n");
        // No blank line: all of it is headers.
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n", usize::MAX), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(b"A: 1\r\nB: 2", usize::MAX), b"A: 1\r\nB: 2");
        // Empty header section, empty message.
        assert_eq!(header_block(b"\r\nbody", usize::MAX), b"");
        assert_eq!(header_block(b"", 10), b"");
    }

    #[test]
    fn header_block_max_cuts_at_line_boundary() {
        let m = b"A: 1\r\nB: 22\r\n folded\r\nC: 3\r\n\r\nbody";
        assert_eq!(header_block(m, 1000), b"A: 1\r\nB: 22\r\n folded\r\nC: 3\r\n");
        assert_eq!(header_block(m, 28), b"A: 1\r\nB: 22\r\n folded\r\nC: 3\r\n");
        assert_eq!(header_block(m, 27), b"A: 1\r\nB: 22\r\n folded\r\n");
        // The field `B` is not split from its continuation line.
        assert_eq!(header_block(m, 20), b"A: 1\r\n");
        assert_eq!(header_block(m, 6), b"A: 1\r\n");
        assert_eq!(header_block(m, 5), b"");
        // Only a continuation boundary fits after the first line's field: take it.
        let one = b"A: 1\r\n 2\r\n 3\r\n";
        assert_eq!(header_block(one, 11), b"A: 1\r\n 2\r\n");
        // LF-only input is cut the same way.
        assert_eq!(header_block(b"A: 1\nB: 2\nC: 3\n", 10), b"A: 1\nB: 2\n");
    }
}
