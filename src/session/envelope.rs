//! MAIL FROM and RCPT TO: opening a transaction and collecting its recipients.

use super::{Session, Transaction};
use crate::directory::normalize_address;
use crate::policy::{self, MailFacts, Route};
use crate::queue::{Recipient, RecipientRoute};
use crate::reply::Reply;
use smtp_proto::{MailFrom, RcptTo, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};

impl Session {
    /// RFC 5321 §4.1.1.2, with the parameters we announce: SIZE (RFC 1870), BODY
    /// (RFC 6152), SMTPUTF8 (RFC 6531) and AUTH= (RFC 4954 §5, accepted and ignored).
    pub(super) fn handle_mail(&mut self, from: MailFrom<String>) -> Reply {
        if self.helo.is_none() {
            return Reply::bad_sequence("Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return Reply::bad_sequence("Nested MAIL command: a transaction is already open; send RSET first");
        }
        // RFC 3207 §4: nothing about the transaction is looked at before TLS.
        if self.tls.is_none() {
            return Reply::tls_first();
        }
        if let Some(param) = unsupported_mail_param(&from) {
            return Reply::unsupported_parameter(param);
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !from.address.is_ascii() && !smtputf8 {
            return Reply::needs_smtputf8();
        }
        let max = self.ctx.config.limits.max_message_size;
        if from.size as u64 > max {
            return Reply::message_too_big(max);
        }
        let facts = MailFacts {
            tls_active: self.tls.is_some(),
            authenticated: self.user.as_ref().map(|u| u.address.as_str()),
            from: &from.address,
        };
        if let Err(reply) = policy::mail_from(facts) {
            return reply;
        }
        self.tx = Some(Transaction { sender: from.address.to_lowercase(), smtputf8, recipients: Vec::new() });
        Reply::sender_ok(&from.address)
    }

    /// RFC 5321 §4.1.1.3: each recipient is checked against the directory now, so the
    /// client learns of an unknown local user before sending the message.
    pub(super) async fn handle_rcpt(&mut self, to: RcptTo<String>) -> Reply {
        let limit = self.ctx.config.limits.max_recipients;
        let Some(tx) = &self.tx else {
            return Reply::bad_sequence("Need MAIL FROM before RCPT TO");
        };
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return Reply::unsupported_parameter("NOTIFY, ORCPT or RRVS");
        }
        if !to.address.is_ascii() && !tx.smtputf8 {
            return Reply::needs_smtputf8();
        }
        let Ok(address) = normalize_address(&to.address) else {
            return Reply::bad_recipient_syntax();
        };
        if tx.recipients.iter().any(|r| r.address == address) {
            return Reply::recipient_ok(&address);
        }
        // RFC 5321 §4.5.3.1.10: 452 and the client sends the others in another message.
        if tx.recipients.len() >= limit {
            return Reply::too_many_recipients(limit);
        }
        let route = match self.route(&address).await {
            Ok(route) => route,
            Err(reply) => return reply,
        };
        let route = match route {
            Route::Local { tenant } => RecipientRoute::Local { tenant },
            Route::Relay => RecipientRoute::Relay,
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(Recipient { address: address.clone(), route });
        }
        Reply::recipient_ok(&address)
    }

    async fn route(&self, address: &str) -> Result<Route, Reply> {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let (dir, config) = (&self.ctx.directory, &self.ctx.config);
        // A tenant whose mailboxes live upstream needs no user lookup: the upstream decides.
        let upstream = |t: &str| *config.local_delivery(t) == crate::config::LocalDelivery::Smarthost;
        let lookup = async {
            let tenant = dir.domain_tenant(domain).await?;
            let exists = match tenant.as_deref() {
                Some(t) if !upstream(t) => dir.user(address).await?.is_some(),
                _ => false,
            };
            Ok::<_, crate::directory::DirectoryError>((tenant, exists))
        };
        match lookup.await {
            Ok((tenant, exists)) => {
                let can_relay = self.user.as_ref().is_some_and(|u| config.smarthost_for(&u.tenant).is_some());
                policy::recipient(address, tenant.as_deref(), exists, can_relay, tenant.as_deref().is_some_and(upstream))
            }
            Err(e) => {
                tracing::error!(error = %e, "directory error during RCPT");
                Err(Reply::directory_unavailable())
            }
        }
    }
}

/// The first MAIL parameter we do not announce, if any (RFC 5321 §4.1.1.11: 555).
fn unsupported_mail_param(from: &MailFrom<String>) -> Option<&'static str> {
    let extra = from.flags & !(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8);
    if extra != 0 {
        return Some(match extra {
            f if f & smtp_proto::MAIL_BODY_BINARYMIME != 0 => "BODY=BINARYMIME",
            f if f & (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS) != 0 => "RET",
            f if f & smtp_proto::MAIL_REQUIRETLS != 0 => "REQUIRETLS",
            f if f & smtp_proto::MAIL_CONPERM != 0 => "CONPERM",
            _ => "BY",
        });
    }
    let checks = [
        (from.env_id.is_some(), "ENVID"),
        (from.trans_id.is_some(), "TRANSID"),
        (from.by != 0, "BY"),
        (from.hold_for != 0 || from.hold_until != 0, "HOLDFOR/HOLDUNTIL"),
        (from.mt_priority != 0, "MT-PRIORITY"),
        (from.solicit.is_some(), "SOLICIT"),
        (from.mtrk.is_some(), "MTRK"),
    ];
    checks.iter().find(|(present, _)| *present).map(|(_, name)| *name)
}
