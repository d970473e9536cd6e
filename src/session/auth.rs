//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, and XOAUTH2 when
//! `[smtp] xoauth2_tokens_file` is set.
//!
//! AUTH is accepted only under TLS (538 5.7.11 otherwise), once per session and outside a
//! mail transaction. A failed login says 535 5.7.8 whether or not the user exists; only
//! after a correct password does the client learn that its account or SMTP AUTH is
//! disabled. Credentials never reach a log.
//!
//! XOAUTH2 exists so that Mailgate can stand in for Google or Microsoft 365 in tests of a
//! smart-host client: the bearer tokens are not validated against an identity provider but
//! looked up in a file of `address token` lines, re-read at every attempt. The exchange is
//! Google's ("OAuth 2.0 Mechanism"): the initial response is
//! `base64("user=" address ^A "auth=Bearer " token ^A ^A)`; an unknown token is answered by
//! `334` and a base64 JSON error, the client sends an empty line, and then comes
//! `535 5.7.8`. A listed token then passes the same checks as a correct password (account
//! enabled, SMTP AUTH allowed, the tenant's legacy-TLS opt-in).

use super::{Mode, Session};
use crate::directory::{AuthOutcome, User};
use crate::policy;
use crate::reply::Reply;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Where a multi-step AUTH exchange stands.
pub(super) enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword(String),
    /// AUTH XOAUTH2 without an initial response: the next line is the response.
    Xoauth2,
    /// A refused XOAUTH2 token: after the 334 error challenge, the client's (empty) line
    /// is answered by 535.
    Xoauth2Refused,
}

/// The 334 challenge after a refused XOAUTH2 token, as Google sends it (base64 of
/// `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`).
const XOAUTH2_ERROR: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

/// The user and bearer token of an XOAUTH2 response (`user=..^Aauth=Bearer ..^A^A`).
fn parse_xoauth2(response: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(response).ok()?;
    let body = text.strip_suffix("\x01\x01")?;
    let (mut user, mut token) = (None, None);
    for field in body.split('\x01') {
        let (key, value) = field.split_once('=')?;
        match key {
            "user" => user = Some(value),
            "auth" => {
                let (scheme, t) = value.split_once(' ')?;
                token = scheme.eq_ignore_ascii_case("bearer").then_some(t.trim());
            }
            _ => {}
        }
    }
    match (user, token) {
        (Some(u), Some(t)) if !u.is_empty() && !t.is_empty() => Some((u.to_string(), t.to_string())),
        _ => None,
    }
}

/// Whether the tokens file (`address token` per line; `#` comments) lists this pair.
fn token_listed(file: &str, user: &str, token: &str) -> bool {
    file.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).any(|l| {
        let mut words = l.split_whitespace();
        matches!((words.next(), words.next()), (Some(u), Some(t)) if u.eq_ignore_ascii_case(user.trim()) && t == token)
    })
}

/// What a password check would have said of a user whose token was accepted.
fn token_outcome(user: Option<User>) -> AuthOutcome {
    match user {
        None => AuthOutcome::BadCredentials,
        Some(u) if !u.enabled => AuthOutcome::AccountDisabled,
        Some(u) if !u.smtp_auth => AuthOutcome::SmtpAuthDisabled,
        Some(u) => AuthOutcome::Ok(u),
    }
}

/// base64 "Username:" and "Password:", the customary LOGIN prompts.
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decodes a client response; RFC 4954 §4: "=" is an empty response.
fn decode(b64: &str) -> Result<Vec<u8>, Reply> {
    let b64 = b64.trim();
    if b64 == "=" {
        return Ok(Vec::new());
    }
    B64.decode(b64).map_err(|_| Reply::auth_bad_base64())
}

fn utf8(bytes: Vec<u8>) -> Result<String, Reply> {
    String::from_utf8(bytes).map_err(|_| Reply::auth_failed())
}

impl Session {
    /// The EHLO AUTH line: `AUTH PLAIN LOGIN`, plus XOAUTH2 when a tokens file is set.
    pub(super) fn auth_mechanisms(&self) -> String {
        if self.xoauth2_offered() {
            "AUTH PLAIN LOGIN XOAUTH2".to_string()
        } else {
            "AUTH PLAIN LOGIN".to_string()
        }
    }

    fn xoauth2_offered(&self) -> bool {
        self.ctx.config.smtp.xoauth2_tokens_file.is_some()
    }

    fn mechanism_unsupported(&self) -> Reply {
        Reply::auth_mechanism_unsupported(if self.xoauth2_offered() { "PLAIN, LOGIN or XOAUTH2" } else { "PLAIN or LOGIN" })
    }

    pub(super) async fn handle_auth(&mut self, mechanism: u64, initial: String) -> Reply {
        if self.tls.is_none() {
            return Reply::auth_needs_tls();
        }
        if self.user.is_some() {
            return Reply::already_authenticated();
        }
        // RFC 4954 §4: AUTH follows EHLO (again after STARTTLS, RFC 3207 §4.2).
        if self.helo.is_none() {
            return Reply::bad_sequence("Send EHLO first");
        }
        if self.tx.is_some() {
            return Reply::bad_sequence("AUTH is not allowed during a mail transaction; send RSET first");
        }
        if let Some(refused) = self.ban_in_force(None).await {
            return refused;
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.mode = Mode::Auth(AuthStep::Plain);
                Reply::auth_challenge("")
            }
            smtp_proto::AUTH_PLAIN => self.plain(&initial).await,
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.mode = Mode::Auth(AuthStep::LoginUser);
                Reply::auth_challenge(LOGIN_USER_PROMPT)
            }
            smtp_proto::AUTH_LOGIN => match decode(&initial).and_then(utf8) {
                Ok(user) => {
                    self.mode = Mode::Auth(AuthStep::LoginPassword(user));
                    Reply::auth_challenge(LOGIN_PASSWORD_PROMPT)
                }
                Err(r) => r,
            },
            smtp_proto::AUTH_XOAUTH2 if self.ctx.config.smtp.xoauth2_tokens_file.is_some() => {
                if initial.is_empty() {
                    self.mode = Mode::Auth(AuthStep::Xoauth2);
                    Reply::auth_challenge("")
                } else {
                    self.xoauth2(&initial).await
                }
            }
            _ => self.mechanism_unsupported(),
        }
    }

    /// A continuation line of a multi-step AUTH.
    pub(super) async fn auth_continue(&mut self, step: AuthStep, line: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        // RFC 4954 §4: "*" cancels the exchange.
        if text == "*" {
            return Reply::auth_cancelled();
        }
        match step {
            AuthStep::Plain => self.plain(text).await,
            AuthStep::LoginUser => match decode(text).and_then(utf8) {
                Ok(user) => {
                    self.mode = Mode::Auth(AuthStep::LoginPassword(user));
                    Reply::auth_challenge(LOGIN_PASSWORD_PROMPT)
                }
                Err(r) => r,
            },
            AuthStep::LoginPassword(user) => match decode(text).and_then(utf8) {
                Ok(password) => self.verify(&user, &password).await,
                Err(r) => r,
            },
            AuthStep::Xoauth2 => self.xoauth2(text).await,
            AuthStep::Xoauth2Refused => Reply::auth_failed(),
        }
    }

    /// XOAUTH2: the user/token pair must be listed in the tokens file; then the user is
    /// checked as after a correct password.
    async fn xoauth2(&mut self, b64: &str) -> Reply {
        let bytes = match decode(b64) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some((login, token)) = parse_xoauth2(&bytes) else {
            return Reply::auth_failed();
        };
        if let Some(refused) = self.ban_in_force(Some(&login)).await {
            return refused;
        }
        let Some(path) = self.ctx.config.smtp.xoauth2_tokens_file.clone() else {
            return self.mechanism_unsupported();
        };
        let file = match tokio::fs::read_to_string(&path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the XOAUTH2 tokens file");
                return Reply::temporary_auth_failure();
            }
        };
        if !token_listed(&file, &login, &token) {
            self.note_failed_login(&login).await;
            if let Some(banned) = self.count_failure(&login).await {
                return banned;
            }
            tracing::info!(login = %login.chars().take(100).collect::<String>(), "XOAUTH2 token refused");
            self.mode = Mode::Auth(AuthStep::Xoauth2Refused);
            return Reply::auth_challenge(XOAUTH2_ERROR);
        }
        let outcome = self.ctx.directory.user(&login.trim().to_lowercase()).await.map(token_outcome);
        self.conclude(&login, outcome).await
    }

    /// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`; an authzid other than the
    /// authcid is not allowed (send-as is checked at MAIL, not here).
    async fn plain(&mut self, b64: &str) -> Reply {
        let bytes = match decode(b64) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut parts = bytes.splitn(3, |&b| b == 0);
        let (Some(authz), Some(authc), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
            return Reply::auth_failed();
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
            return Reply::auth_failed();
        }
        match (std::str::from_utf8(authc), std::str::from_utf8(pass)) {
            (Ok(user), Ok(password)) => {
                let (user, password) = (user.to_string(), password.to_string());
                self.verify(&user, &password).await
            }
            _ => Reply::auth_failed(),
        }
    }

    /// Usage: a failed login is attributed to the tenant of the login's domain, if any,
    /// so that the tenant's admins see devices failing with their addresses.
    async fn note_failed_login(&mut self, login: &str) {
        let login = login.trim().to_lowercase();
        let domain = login.rsplit_once('@').map(|(_, d)| d.to_string());
        let tenant = match domain {
            Some(d) => self.ctx.directory.domain_tenant(&d).await.ok().flatten(),
            None => None,
        };
        self.usage.refusal = Some(crate::usage::Outcome::AuthFailed);
        self.usage.user = tenant.as_ref().map(|_| crate::usage::printable(&login));
        self.usage.tenant = tenant;
    }

    /// A ban in force on this client (and login, once known): its 421, counted and
    /// recorded. Checked before any password work, so a right password is refused too.
    async fn ban_in_force(&mut self, login: Option<&str>) -> Option<Reply> {
        let now = (self.ctx.clock)().timestamp();
        match self.ctx.guard.banned(&self.ctx.directory, self.conn.peer.ip(), login, now).await {
            Ok(None) => None,
            Ok(Some(ban)) => {
                self.ctx.metrics.auth("banned");
                Some(self.refuse_banned(ban, login, now).await)
            }
            Err(e) => {
                self.ctx.metrics.auth("temporary_error");
                tracing::error!(error = %e, "directory error reading the bans");
                Some(Reply::temporary_auth_failure())
            }
        }
    }

    /// A wrong password (or token) counted by the guard; past a limit, the new ban's 421
    /// after the tarpit.
    async fn count_failure(&mut self, login: &str) -> Option<Reply> {
        let now = (self.ctx.clock)().timestamp();
        let ban = self.ctx.guard.failed(&self.ctx.directory, self.conn.peer.ip(), login, now).await?;
        tokio::time::sleep(self.ctx.guard.tarpit()).await;
        Some(self.refuse_banned(ban, Some(login), now).await)
    }

    async fn refuse_banned(&mut self, ban: crate::guard::BanRefusal, login: Option<&str>, now: i64) -> Reply {
        if let Some(login) = login {
            self.note_failed_login(login).await;
        }
        self.usage.refusal = Some(crate::usage::Outcome::Banned);
        tracing::info!(client = %self.conn.peer.ip(), kind = ban.kind.as_str(), until = ban.expires_at, "AUTH refused: banned");
        ban.reply(now)
    }

    /// Below TLS 1.2, the tenant's opt-in is checked after the password and before any
    /// MAIL; a refusal is a 534 naming the reason.
    async fn legacy_opt_in(&self, user: &str, tenant: &str) -> Result<(), (Reply, crate::usage::Outcome)> {
        let Some(version) = self.tls.as_ref().map(|t| t.version).filter(|v| v.is_legacy()) else {
            return Ok(());
        };
        let settings = match self.ctx.directory.legacy_settings(tenant).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "directory error reading the legacy opt-in");
                return Err((Reply::temporary_auth_failure(), crate::usage::Outcome::Other));
            }
        };
        let login = policy::LegacyLogin {
            version,
            user,
            client: self.conn.peer.ip(),
            today: (self.ctx.clock)().date_naive(),
        };
        let ep = &self.conn.endpoint;
        policy::legacy_opt_in(ep, &settings, login).map_err(|refusal| {
            tracing::info!(user, tenant, tls_version = %version, reason = refusal.name(), "legacy TLS session refused at AUTH");
            (policy::opt_in_reply(ep, &self.ctx.endpoints, &refusal, login), crate::usage::Outcome::from_refusal(&refusal))
        })
    }

    async fn verify(&mut self, login: &str, password: &str) -> Reply {
        if let Some(refused) = self.ban_in_force(Some(login)).await {
            return refused;
        }
        let outcome = self.ctx.directory.authenticate(login, password).await;
        self.conclude(login, outcome).await
    }

    /// The end of every mechanism: the user logs in, or the refusal is told and counted.
    async fn conclude(&mut self, login: &str, outcome: Result<AuthOutcome, crate::directory::DirectoryError>) -> Reply {
        match outcome {
            Ok(AuthOutcome::Ok(user)) => {
                self.usage.user = Some(user.address.clone());
                self.usage.tenant = Some(user.tenant.clone());
                if let Err((reply, outcome)) = self.legacy_opt_in(&user.address, &user.tenant).await {
                    self.ctx.metrics.auth("legacy_refused");
                    self.usage.refusal = Some(outcome);
                    return reply;
                }
                self.ctx.metrics.auth("success");
                tracing::info!(user = %user.address, tenant = %user.tenant, "authenticated");
                self.user = Some(user);
                self.usage.refusal = None;
                Reply::auth_ok()
            }
            Ok(outcome) => {
                self.ctx.metrics.auth(match outcome {
                    AuthOutcome::AccountDisabled => "account_disabled",
                    AuthOutcome::SmtpAuthDisabled => "smtp_auth_disabled",
                    _ => "bad_credentials",
                });
                self.note_failed_login(login).await;
                tracing::info!(login = %login.chars().take(100).collect::<String>(), ?outcome, "authentication refused");
                // Only a wrong password counts: the others knew it.
                if outcome == AuthOutcome::BadCredentials {
                    if let Some(banned) = self.count_failure(login).await {
                        return banned;
                    }
                }
                match outcome {
                    AuthOutcome::AccountDisabled => Reply::account_disabled(),
                    AuthOutcome::SmtpAuthDisabled => Reply::auth_disabled_for_user(),
                    _ => Reply::auth_failed(),
                }
            }
            Err(e) => {
                self.ctx.metrics.auth("temporary_error");
                tracing::error!(error = %e, "directory error during AUTH");
                Reply::temporary_auth_failure()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xoauth2_responses() {
        let ok = parse_xoauth2(b"user=alice@contoso.test\x01auth=Bearer tok-1\x01\x01");
        assert_eq!(ok, Some(("alice@contoso.test".into(), "tok-1".into())));
        // Google's documented example.
        let google = B64.decode("dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==").unwrap();
        assert_eq!(parse_xoauth2(&google), Some(("someuser@example.com".into(), "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg".into())));
        for bad in [
            &b"user=a@b\x01auth=Bearer t\x01"[..],
            b"user=a@b\x01auth=Basic dDp0\x01\x01",
            b"auth=Bearer t\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=a@b\x01auth=Bearer \x01\x01",
            b"\xff\x01\x01",
        ] {
            assert_eq!(parse_xoauth2(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn looks_tokens_up_in_the_file() {
        let file = "# test tokens\nalice@contoso.test tok-1\n\n  Bob@Fabrikam.test   tok-2  \n";
        assert!(token_listed(file, "alice@contoso.test", "tok-1"));
        assert!(token_listed(file, "bob@fabrikam.test", "tok-2"));
        assert!(!token_listed(file, "alice@contoso.test", "tok-2"));
        assert!(!token_listed(file, "alice@contoso.test", "TOK-1"));
        assert!(!token_listed(file, "#", "test"));
    }

    #[test]
    fn the_error_challenge_is_googles_json() {
        let json = B64.decode(XOAUTH2_ERROR).unwrap();
        assert_eq!(json, br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#);
    }

    #[test]
    fn token_users_get_the_password_rules() {
        let u = |enabled, smtp_auth| User { address: "a@b.test".into(), tenant: "t".into(), enabled, smtp_auth };
        assert_eq!(token_outcome(None), AuthOutcome::BadCredentials);
        assert_eq!(token_outcome(Some(u(false, true))), AuthOutcome::AccountDisabled);
        assert_eq!(token_outcome(Some(u(true, false))), AuthOutcome::SmtpAuthDisabled);
        assert_eq!(token_outcome(Some(u(true, true))), AuthOutcome::Ok(u(true, true)));
    }
}
