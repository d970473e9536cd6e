//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
//!
//! AUTH is accepted only under TLS (538 5.7.11 otherwise), once per session and outside a
//! mail transaction. A failed login says 535 5.7.8 whether or not the user exists; only
//! after a correct password does the client learn that its account or SMTP AUTH is
//! disabled. Credentials never reach a log.

use super::{Mode, Session};
use crate::directory::AuthOutcome;
use crate::policy;
use crate::reply::Reply;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Where a multi-step AUTH exchange stands.
pub(super) enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword(String),
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
            _ => Reply::auth_mechanism_unsupported(),
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
        }
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
        match self.ctx.directory.authenticate(login, password).await {
            Ok(AuthOutcome::Ok(user)) => {
                self.usage.user = Some(user.address.clone());
                self.usage.tenant = Some(user.tenant.clone());
                if let Err((reply, outcome)) = self.legacy_opt_in(&user.address, &user.tenant).await {
                    self.usage.refusal = Some(outcome);
                    return reply;
                }
                tracing::info!(user = %user.address, tenant = %user.tenant, "authenticated");
                self.user = Some(user);
                self.usage.refusal = None;
                Reply::auth_ok()
            }
            Ok(outcome) => {
                self.note_failed_login(login).await;
                tracing::info!(login = %login.chars().take(100).collect::<String>(), ?outcome, "authentication refused");
                match outcome {
                    AuthOutcome::AccountDisabled => Reply::account_disabled(),
                    AuthOutcome::SmtpAuthDisabled => Reply::auth_disabled_for_user(),
                    _ => Reply::auth_failed(),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "directory error during AUTH");
                Reply::temporary_auth_failure()
            }
        }
    }
}
