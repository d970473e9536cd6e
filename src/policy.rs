//! Pure decisions: who may send, as whom, to whom.
//!
//! Nothing here does I/O: the session gathers the facts (TLS state, the authenticated
//! user, directory lookups) and asks these functions, which answer with a decision or the
//! exact [`Reply`] to give. Each function is tested with a table of cases below. Later
//! issues add the TLS rollout schedule and tenant opt-in here, with `now` and the random
//! source passed in.

use crate::reply::Reply;

/// What the session knows when a client sends MAIL FROM.
#[derive(Debug, Clone, Copy)]
pub struct MailFacts<'a> {
    pub tls_active: bool,
    /// The authenticated address, if any.
    pub authenticated: Option<&'a str>,
    /// The address in MAIL FROM (empty for the null sender).
    pub from: &'a str,
}

/// RFC 6409 §4.3 and RFC 3207 §4: a submission endpoint takes mail only over TLS and
/// only from an authenticated user, and only with that user's own address (send-as).
pub fn mail_from(f: MailFacts<'_>) -> Result<(), Reply> {
    if !f.tls_active {
        return Err(Reply::tls_first());
    }
    let Some(user) = f.authenticated else {
        return Err(Reply::auth_required());
    };
    if f.from.eq_ignore_ascii_case(user) {
        Ok(())
    } else {
        Err(Reply::send_as_denied(f.from, user))
    }
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An existing user of an accepted domain: delivered into its mailbox.
    Local { tenant: String },
    /// Outside our accepted domains: queued for relay.
    Relay,
}

/// RCPT TO: a recipient in an accepted domain must be an existing user (550 5.1.1);
/// anything else is accepted for relay by the authenticated sender.
pub fn recipient(address: &str, domain_tenant: Option<&str>, user_exists: bool) -> Result<Route, Reply> {
    match domain_tenant {
        Some(tenant) if user_exists => Ok(Route::Local { tenant: tenant.to_string() }),
        Some(_) => Err(Reply::unknown_user(address)),
        None => Ok(Route::Relay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (TLS active, authenticated user, MAIL FROM, expected refusal code and text).
    type MailCase<'a> = (bool, Option<&'a str>, &'a str, Option<(u16, &'a str)>);

    #[test]
    fn mail_from_table() {
        let cases: [MailCase; 6] = [
            (false, None, "a@x.test", Some((530, "STARTTLS"))),
            (false, Some("a@x.test"), "a@x.test", Some((530, "STARTTLS"))),
            (true, None, "a@x.test", Some((530, "Authentication required"))),
            (true, Some("a@x.test"), "A@X.TEST", None),
            (true, Some("a@x.test"), "b@x.test", Some((550, "may only send as"))),
            (true, Some("a@x.test"), "", Some((550, "may only send as"))),
        ];
        for (tls, auth, from, want) in cases {
            let got = mail_from(MailFacts { tls_active: tls, authenticated: auth, from });
            match (got, want) {
                (Ok(()), None) => {}
                (Err(r), Some((code, text))) => {
                    assert_eq!(r.code, code, "{from}");
                    assert!(r.to_text().contains(text), "{}", r.to_text());
                }
                (got, want) => panic!("{tls} {auth:?} {from}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn recipient_table() {
        assert_eq!(recipient("a@x.test", Some("t"), true), Ok(Route::Local { tenant: "t".into() }));
        assert_eq!(recipient("b@x.test", Some("t"), false).unwrap_err().code, 550);
        assert_eq!(recipient("b@x.test", Some("t"), false).unwrap_err().enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(recipient("c@y.test", None, false), Ok(Route::Relay));
    }
}
