//! Every SMTP reply Mailgate sends, built in one place.
//!
//! A [`Reply`] is a typed value: the basic code (RFC 5321 §4.2), the enhanced status code
//! (RFC 3463, announced by ENHANCEDSTATUSCODES, RFC 2034) and one or more text lines. The
//! same situation always gets the same reply because the constructors below are the only
//! place where reply texts are written. Per RFC 2034 §3 the enhanced code is carried by all
//! 2xx, 4xx and 5xx replies except the greeting and the EHLO/HELO reply; 3xx intermediate
//! replies (334, 354) carry none.

use std::borrow::Cow;
use std::fmt::Write as _;

/// An RFC 3463 enhanced status code: class.subject.detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub lines: Vec<Cow<'static, str>>,
}

fn reply(code: u16, e: (u8, u16, u16), text: impl Into<Cow<'static, str>>) -> Reply {
    Reply { code, enhanced: Some(Enhanced(e.0, e.1, e.2)), lines: vec![text.into()] }
}

fn in_minutes(m: i64) -> String {
    match m.max(1) {
        1 => "1 minute".to_string(),
        m => format!("{m} minutes"),
    }
}

impl Reply {
    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// The reply as it goes on the wire, CRLF-terminated (RFC 5321 §4.2.1 multi-line form).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let mut s = String::with_capacity(line.len() + 16);
            let _ = write!(s, "{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                let _ = write!(s, "{e} ");
            }
            s.push_str(line);
            // RFC 4954 §4: "334" SP [base64]; keep the space of an empty challenge.
            let s = if self.code == 334 { s.as_str() } else { s.trim_end() };
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{} \r\n", self.code).as_bytes());
        }
    }

    /// The reply as text, for logs and tests.
    pub fn to_text(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    // ---- connection level -------------------------------------------------------------

    /// RFC 5321 §4.3.1: the greeting (no enhanced code, RFC 2034 §3).
    pub fn greeting(host: &str) -> Reply {
        Reply { code: 220, enhanced: None, lines: vec![format!("{host} ESMTP Mailgate ready").into()] }
    }
    pub fn bye(host: &str) -> Reply {
        reply(221, (2, 0, 0), format!("{host} closing connection, goodbye"))
    }
    pub fn too_many_sessions() -> Reply {
        reply(421, (4, 3, 2), "Too many concurrent sessions (from your address or in all); try again in a few minutes")
    }
    /// Over `limits.max_connections_per_ip_per_minute`.
    pub fn too_many_connections() -> Reply {
        reply(421, (4, 7, 0), "Too many connections from your address in the last minute; try again in a minute")
    }
    pub fn shutting_down(host: &str) -> Reply {
        reply(421, (4, 3, 2), format!("{host} is shutting down; try again in a few minutes"))
    }
    /// RFC 5321 §4.5.3.2: the server closes an idle session with a 421.
    pub fn timeout(host: &str) -> Reply {
        reply(421, (4, 4, 2), format!("{host} timeout waiting for the client; closing connection"))
    }
    pub fn too_many_errors() -> Reply {
        reply(421, (4, 7, 0), "Too many errors in this session; closing connection")
    }
    /// `[limits] pregreet = "refuse"`: RFC 5321 §3.1, the client waits for the greeting;
    /// 554 is the greeting that refuses a connection (§4.3.1), as Postfix's postscreen does.
    pub fn pregreet() -> Reply {
        reply(554, (5, 5, 1), "Protocol error: your client sent data before the 220 greeting; an SMTP client must wait for it (RFC 5321 section 3.1)")
    }
    /// Message content below `[limits] min_data_rate`: nothing of the message is queued.
    pub fn data_too_slow(host: &str, rate: u64) -> Reply {
        reply(421, (4, 4, 2), format!("{host} message content arrived slower than {rate} octets a second; closing connection, the message was not queued"))
    }
    pub fn session_too_long() -> Reply {
        reply(421, (4, 4, 2), "Session exceeded its maximum duration; closing connection")
    }

    // ---- EHLO / HELO / simple verbs -------------------------------------------------------

    /// RFC 5321 §4.1.1.1: first line names the server, then one extension per line.
    pub fn ehlo(host: &str, client: &str, extensions: Vec<String>) -> Reply {
        let mut lines: Vec<Cow<'static, str>> = vec![format!("{host} Hello {client}").into()];
        lines.extend(extensions.into_iter().map(Cow::Owned));
        Reply { code: 250, enhanced: None, lines }
    }
    pub fn helo(host: &str, client: &str) -> Reply {
        Reply { code: 250, enhanced: None, lines: vec![format!("{host} Hello {client}").into()] }
    }
    pub fn ok() -> Reply {
        reply(250, (2, 0, 0), "OK")
    }
    pub fn reset() -> Reply {
        reply(250, (2, 0, 0), "Reset OK")
    }
    /// RFC 5321 §3.5.3: VRFY may answer 252 when the server will not verify.
    pub fn vrfy() -> Reply {
        reply(252, (2, 5, 0), "Cannot VRFY user, but will accept a message and attempt delivery")
    }
    pub fn help() -> Reply {
        reply(
            214,
            (2, 0, 0),
            "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
        )
    }

    // ---- syntax and sequence ----------------------------------------------------------------

    pub fn unknown_command() -> Reply {
        reply(500, (5, 5, 2), "Syntax error: command not recognized")
    }
    /// RFC 5321 §4.5.3.1.4: a command line longer than the limit.
    pub fn line_too_long(limit: usize) -> Reply {
        reply(500, (5, 5, 2), format!("Line too long: commands may be at most {limit} octets"))
    }
    pub fn syntax(what: &str) -> Reply {
        reply(501, (5, 5, 4), format!("Syntax error in parameters: {what}"))
    }
    pub fn not_implemented(verb: &str) -> Reply {
        reply(502, (5, 5, 1), format!("{verb} is not implemented on this server"))
    }
    pub fn bad_sequence(what: &'static str) -> Reply {
        reply(503, (5, 5, 1), what)
    }
    /// RFC 5321 §4.1.1.11: MAIL/RCPT parameter not recognized or not implemented.
    pub fn unsupported_parameter(param: &str) -> Reply {
        reply(555, (5, 5, 4), format!("Parameter {param} is not recognized or not implemented"))
    }

    // ---- STARTTLS (RFC 3207) -----------------------------------------------------------------

    pub fn starttls_ready() -> Reply {
        reply(220, (2, 0, 0), "Ready to start TLS")
    }
    pub fn tls_already_active() -> Reply {
        reply(503, (5, 5, 1), "TLS is already active on this connection")
    }
    /// RFC 3207 §4: commands other than EHLO/HELO/STARTTLS/NOOP/RSET/QUIT before TLS.
    pub fn tls_first() -> Reply {
        reply(530, (5, 7, 0), "Must issue a STARTTLS command first")
    }

    // ---- legacy TLS ------------------------------------------------------------------------------

    /// After a TLS 1.0/1.1 handshake on an endpoint that does not serve it (as Exchange
    /// Online did): readable, before any AUTH, then the connection closes.
    pub fn legacy_tls_not_supported(legacy_hint: Option<&str>) -> Reply {
        let mut text = String::from("TLS 1.0 and 1.1 are not supported on this endpoint. Use TLS 1.2 or later.");
        if let Some(hint) = legacy_hint {
            text.push_str(&format!(" Organizations that opted in to legacy TLS may use the legacy endpoint on {hint}."));
        }
        reply(421, (4, 7, 66), text)
    }
    /// A `reject_percent` step drew this legacy session: retry later, or upgrade.
    pub fn legacy_tls_deferred(legacy_hint: Option<&str>) -> Reply {
        let mut text = String::from(
            "TLS 1.0 and 1.1 are being retired on this endpoint and this session was deferred; try again later. Use TLS 1.2 or later.",
        );
        if let Some(hint) = legacy_hint {
            text.push_str(&format!(" Organizations that opted in to legacy TLS may use the legacy endpoint on {hint}."));
        }
        reply(421, (4, 7, 66), text)
    }
    /// A TLS 1.2+ version that this endpoint does not list in `tls_versions`.
    pub fn tls_version_not_offered(version: crate::tls::TlsVersion, offered: &[crate::tls::TlsVersion]) -> Reply {
        let list: Vec<&str> = offered.iter().map(|v| v.human()).collect();
        reply(421, (4, 7, 0), format!("{} is not offered on this endpoint; use {}", version.human(), list.join(" or ")))
    }
    /// RFC 4954 §6: 534 5.7.9 at AUTH, the text naming the reason and the way out.
    pub fn legacy_opt_in_refused(text: String) -> Reply {
        reply(534, (5, 7, 9), text)
    }

    // ---- AUTH (RFC 4954) ------------------------------------------------------------------------

    /// RFC 4954 §6: 538 when the mechanism needs an encrypted channel.
    pub fn auth_needs_tls() -> Reply {
        reply(538, (5, 7, 11), "Encryption required for authentication: issue STARTTLS first")
    }
    pub fn auth_challenge(b64: &str) -> Reply {
        Reply { code: 334, enhanced: None, lines: vec![b64.to_string().into()] }
    }
    pub fn auth_ok() -> Reply {
        reply(235, (2, 7, 0), "Authentication successful")
    }
    /// A ban made by the failed-AUTH limits (or an operator) on the client's address;
    /// `minutes` until it ends. 421 closes the session (RFC 5321 §3.8).
    pub fn banned_address(minutes: i64) -> Reply {
        reply(421, (4, 7, 0), format!("Too many failed authentications from your address; try again later (in {})", in_minutes(minutes)))
    }
    /// The same for a login banned across addresses.
    pub fn banned_login(minutes: i64) -> Reply {
        reply(421, (4, 7, 0), format!("Too many failed authentications for this login; try again later (in {})", in_minutes(minutes)))
    }
    /// RFC 4954 §6: 535 5.7.8; never says whether the user exists.
    pub fn auth_failed() -> Reply {
        reply(535, (5, 7, 8), "Authentication credentials invalid")
    }
    pub fn auth_disabled_for_user() -> Reply {
        reply(
            535,
            (5, 7, 0),
            "SMTP AUTH is disabled for this account; ask your administrator to enable it",
        )
    }
    pub fn account_disabled() -> Reply {
        reply(535, (5, 7, 0), "This account is disabled; ask your administrator to enable it")
    }
    pub fn auth_cancelled() -> Reply {
        reply(501, (5, 0, 0), "Authentication cancelled by the client")
    }
    pub fn auth_bad_base64() -> Reply {
        reply(501, (5, 5, 2), "Cannot decode the AUTH response: invalid base64")
    }
    /// `offered`: the mechanisms this server announces, e.g. "PLAIN or LOGIN".
    pub fn auth_mechanism_unsupported(offered: &str) -> Reply {
        reply(504, (5, 5, 4), format!("Unrecognized authentication mechanism; use {offered}"))
    }
    pub fn already_authenticated() -> Reply {
        reply(503, (5, 5, 1), "Already authenticated")
    }
    pub fn auth_required() -> Reply {
        reply(530, (5, 7, 0), "Authentication required: log in with AUTH before sending mail")
    }
    pub fn temporary_auth_failure() -> Reply {
        reply(454, (4, 7, 0), "Temporary authentication failure; try again later")
    }

    // ---- envelope ------------------------------------------------------------------------------

    pub fn sender_ok(addr: &str) -> Reply {
        reply(250, (2, 1, 0), format!("Sender <{addr}> OK"))
    }
    pub fn recipient_ok(addr: &str) -> Reply {
        reply(250, (2, 1, 5), format!("Recipient <{addr}> OK"))
    }
    pub fn bad_sender_syntax() -> Reply {
        reply(501, (5, 1, 7), "Bad sender address syntax")
    }
    pub fn bad_recipient_syntax() -> Reply {
        reply(501, (5, 1, 3), "Bad recipient address syntax: use a full address like <user@example.com>")
    }
    /// RFC 6531 §3.5: a non-ASCII address without SMTPUTF8.
    pub fn needs_smtputf8() -> Reply {
        reply(553, (5, 6, 7), "Non-ASCII address requires the SMTPUTF8 parameter on MAIL FROM")
    }
    pub fn send_as_denied(from: &str, user: &str) -> Reply {
        reply(
            550,
            (5, 7, 1),
            format!("Sender <{from}> refused: {user} may only send as its own address <{user}>"),
        )
    }
    pub fn unknown_user(addr: &str) -> Reply {
        reply(550, (5, 1, 1), format!("Recipient <{addr}> does not exist here: no such user"))
    }
    /// A remote recipient with no smart host to relay through (RFC 5321 §3.6.2: a
    /// server need not relay; RFC 3463 X.7.1: delivery not authorized).
    pub fn no_relay(addr: &str) -> Reply {
        reply(
            550,
            (5, 7, 1),
            format!("Recipient <{addr}> refused: this gateway delivers only to its own domains (no smart host is configured for remote mail); ask your mail administrator"),
        )
    }
    /// RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
    pub fn too_many_recipients(limit: usize) -> Reply {
        reply(452, (4, 5, 3), format!("Too many recipients: at most {limit} per message"))
    }
    /// RFC 1870 §6: the declared or actual size is over the limit.
    pub fn message_too_big(limit: u64) -> Reply {
        reply(552, (5, 3, 4), format!("Message too big: the limit is {limit} octets"))
    }
    pub fn no_valid_recipients() -> Reply {
        reply(554, (5, 5, 1), "No valid recipients: give at least one accepted RCPT TO first")
    }
    pub fn directory_unavailable() -> Reply {
        reply(451, (4, 3, 0), "Directory temporarily unavailable; try again later")
    }

    // ---- DATA / BDAT ------------------------------------------------------------------------------

    pub fn start_data() -> Reply {
        Reply { code: 354, enhanced: None, lines: vec!["End data with <CR><LF>.<CR><LF>".into()] }
    }
    pub fn queued(id: &str) -> Reply {
        reply(250, (2, 0, 0), format!("OK queued as {id}"))
    }
    pub fn chunk_ok(octets: u64) -> Reply {
        reply(250, (2, 0, 0), format!("{octets} octets received"))
    }
    /// RFC 5321 §2.3.8: lines end in CRLF; a bare CR or LF is refused (SMTP smuggling).
    pub fn bare_line_ending() -> Reply {
        reply(
            554,
            (5, 6, 0),
            "Message refused: it contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
        )
    }
    pub fn spool_error() -> Reply {
        reply(451, (4, 3, 0), "Local error while queueing the message; try again later")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_carries_enhanced_code() {
        assert_eq!(Reply::auth_failed().to_text(), "535 5.7.8 Authentication credentials invalid\r\n");
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let r = Reply::ehlo("mx", "client", vec!["PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(r.to_text(), "250-mx Hello client\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn greeting_and_intermediate_have_no_enhanced_code() {
        assert!(Reply::greeting("mx").to_text().starts_with("220 mx ESMTP"));
        assert_eq!(Reply::auth_challenge("").to_text(), "334 \r\n");
        assert!(Reply::start_data().to_text().starts_with("354 End"));
    }
}
