//! Pure decisions: who may send, as whom, to whom.
//!
//! Nothing here does I/O: the session gathers the facts (TLS state, the authenticated
//! user, directory lookups) and asks these functions, which answer with a decision or the
//! exact [`Reply`] to give. Each function is tested with a table of cases below. The
//! legacy-TLS rules (endpoint rule, dated schedule, tenant opt-in) take `today` and the
//! random source as arguments.

use crate::config::{Endpoint, LegacyTls, StepAction};
use crate::directory::LegacySettings;
use crate::reply::Reply;
use crate::tls::TlsVersion;
use chrono::NaiveDate;
use rand::Rng;
use std::net::IpAddr;

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
    // The null reverse-path names nobody, so it impersonates nobody; RFC 5321 §4.5.5
    // requires it for delivery status notifications, which a gateway relaying through
    // this one (another Mailgate using it as its smart host) must be able to send.
    if f.from.is_empty() || f.from.eq_ignore_ascii_case(user) {
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
///
/// A remote recipient is accepted only when the sender's tenant has a smart host to relay
/// through (`can_relay`); otherwise it is refused now, with a reason, instead of queueing
/// a message that could never leave.
///
/// A tenant whose mailboxes live upstream (`local = "smarthost"`) takes any address in its
/// domains: the upstream knows its mailboxes, and refuses an unknown one itself.
pub fn recipient(address: &str, domain_tenant: Option<&str>, user_exists: bool, can_relay: bool, mailboxes_upstream: bool) -> Result<Route, Reply> {
    match domain_tenant {
        Some(tenant) if user_exists || mailboxes_upstream => Ok(Route::Local { tenant: tenant.to_string() }),
        Some(_) => Err(Reply::unknown_user(address)),
        None if can_relay => Ok(Route::Relay),
        None => Err(Reply::no_relay(address)),
    }
}

/// The legacy-TLS rule of an endpoint in force on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyRule {
    Allow,
    /// Answer `421 4.7.66` to this percentage of legacy sessions, serve the others.
    RejectPercent(u8),
    Explain,
    Refuse,
}

/// The schedule's latest step on or before `today`, else the endpoint's `legacy_tls`.
pub fn legacy_rule(ep: &Endpoint, today: NaiveDate) -> LegacyRule {
    let action = ep.schedule.iter().rev().find(|s| s.from <= today).map(|s| s.action);
    match action.unwrap_or(StepAction::Set(ep.legacy_tls)) {
        StepAction::RejectPercent(0) | StepAction::Set(LegacyTls::Allow) => LegacyRule::Allow,
        StepAction::RejectPercent(p) if p >= 100 => LegacyRule::Explain,
        StepAction::RejectPercent(p) => LegacyRule::RejectPercent(p),
        StepAction::Set(LegacyTls::Explain) => LegacyRule::Explain,
        StepAction::Set(LegacyTls::Refuse) => LegacyRule::Refuse,
    }
}

/// Before the handshake, from the ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloVerdict {
    Handshake,
    /// Send a protocol_version alert and close.
    Refuse,
}

/// A hello offering at most SSL 3.0 is always refused; one offering at most TLS 1.1 is
/// refused when the rule in force is `refuse`. An unparsed hello (`None`) proceeds: the
/// version is checked again after the handshake.
pub fn before_handshake(ep: &Endpoint, offered_max: Option<TlsVersion>, today: NaiveDate) -> HelloVerdict {
    match offered_max {
        Some(TlsVersion::Ssl3) => HelloVerdict::Refuse,
        Some(v) if v.is_legacy() && legacy_rule(ep, today) == LegacyRule::Refuse => HelloVerdict::Refuse,
        _ => HelloVerdict::Handshake,
    }
}

/// After the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionVerdict {
    Serve,
    /// Send this 421 and close, before any AUTH: the version is not served here.
    Explain(Reply),
    /// Send this `421 4.7.66` and close: a `reject_percent` step drew this session.
    Defer(Reply),
}

fn port_of(e: &Endpoint) -> Option<String> {
    e.listen.first().map(|a| format!("port {}", a.port()))
}

/// Another endpoint with the same TLS mode that serves legacy TLS on `today`: where a
/// legacy refusal points a device whose organization opted in.
pub fn legacy_hint(all: &[Endpoint], me: &Endpoint, today: NaiveDate) -> Option<String> {
    all.iter()
        .filter(|o| o.name != me.name && o.tls_mode == me.tls_mode && o.serves_legacy())
        .filter(|o| matches!(legacy_rule(o, today), LegacyRule::Allow | LegacyRule::RejectPercent(_)))
        .find_map(port_of)
}

/// Where a legacy client should send once it speaks TLS 1.2+: a sibling with the same TLS
/// mode, preferring one that serves no legacy TLS; else this endpoint itself (TLS 1.2+
/// is served on every endpoint).
pub fn modern_hint(all: &[Endpoint], me: &Endpoint) -> Option<String> {
    let same_mode = || all.iter().filter(|o| o.name != me.name && o.tls_mode == me.tls_mode);
    same_mode()
        .find(|o| !o.serves_legacy())
        .or_else(|| same_mode().next())
        .and_then(port_of)
        .or_else(|| port_of(me))
}

/// Versions the endpoint does not list are answered with a 421; TLS 1.2+ listed is
/// served; below, the rule in force decides, `rng` drawing for a `reject_percent` step.
/// `all` is every endpoint with its bound address, for the hint in the reply.
pub fn after_handshake(
    ep: &Endpoint,
    all: &[Endpoint],
    version: TlsVersion,
    today: NaiveDate,
    rng: &mut impl Rng,
) -> SessionVerdict {
    let hint = || legacy_hint(all, ep, today);
    let not_supported = || SessionVerdict::Explain(Reply::legacy_tls_not_supported(hint().as_deref()));
    if !ep.tls_versions.contains(&version) {
        return if version.is_legacy() {
            not_supported()
        } else {
            SessionVerdict::Explain(Reply::tls_version_not_offered(version, &ep.tls_versions))
        };
    }
    if !version.is_legacy() {
        return SessionVerdict::Serve;
    }
    match legacy_rule(ep, today) {
        LegacyRule::Allow => SessionVerdict::Serve,
        LegacyRule::RejectPercent(p) if rng.gen_range(0..100u8) < p => {
            SessionVerdict::Defer(Reply::legacy_tls_deferred(hint().as_deref()))
        }
        LegacyRule::RejectPercent(_) => SessionVerdict::Serve,
        LegacyRule::Explain | LegacyRule::Refuse => not_supported(),
    }
}

/// Why a legacy session was refused at AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptInRefusal {
    Vetoed,
    NotOptedIn,
    Expired(NaiveDate),
    UserOutOfScope,
    NetworkOutOfScope,
}

impl OptInRefusal {
    /// A short name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Vetoed => "vetoed",
            Self::NotOptedIn => "not_opted_in",
            Self::Expired(_) => "opt_in_expired",
            Self::UserOutOfScope => "user_out_of_scope",
            Self::NetworkOutOfScope => "network_out_of_scope",
        }
    }
}

/// The facts of an authenticated legacy session that the opt-in is checked against.
#[derive(Debug, Clone, Copy)]
pub struct LegacyLogin<'a> {
    pub version: TlsVersion,
    pub user: &'a str,
    pub client: IpAddr,
    pub today: NaiveDate,
}

/// A session below TLS 1.2 on an endpoint that requires opt-in is served only for a
/// tenant that opted in, is not vetoed by the operator, and whose opt-in covers the date
/// (`legacy_until` inclusive), the user and the client network.
pub fn legacy_opt_in(ep: &Endpoint, t: &LegacySettings, login: LegacyLogin<'_>) -> Result<(), OptInRefusal> {
    if !login.version.is_legacy() {
        return Ok(());
    }
    // The operator's veto holds on every endpoint, opt-in required or not.
    if t.forbidden {
        return Err(OptInRefusal::Vetoed);
    }
    if !ep.legacy_requires_opt_in {
        return Ok(());
    }
    if !t.allowed {
        return Err(OptInRefusal::NotOptedIn);
    }
    if let Some(until) = t.until.filter(|u| login.today > *u) {
        return Err(OptInRefusal::Expired(until));
    }
    if !t.users.is_empty() && !t.users.iter().any(|u| u.eq_ignore_ascii_case(login.user)) {
        return Err(OptInRefusal::UserOutOfScope);
    }
    let ip = login.client.to_canonical();
    if !t.networks.is_empty() && !t.networks.iter().any(|n| n.contains(&ip)) {
        return Err(OptInRefusal::NetworkOutOfScope);
    }
    Ok(())
}

/// The 5xx for an opt-in refusal: the reason and the way out.
pub fn opt_in_reply(ep: &Endpoint, all: &[Endpoint], refusal: &OptInRefusal, login: LegacyLogin<'_>) -> Reply {
    let v = login.version.human();
    let upgrade = match modern_hint(all, ep) {
        Some(hint) => format!("use TLS 1.2 or later on {hint}"),
        None => "use TLS 1.2 or later".to_string(),
    };
    let text = match refusal {
        OptInRefusal::Vetoed => format!("Legacy TLS ({v}) is forbidden for your organization by the service operator; {upgrade}"),
        OptInRefusal::NotOptedIn => format!("Legacy TLS ({v}) is not enabled for your organization; {upgrade}"),
        OptInRefusal::Expired(d) => format!("Legacy TLS ({v}) for your organization ended on {d}; {upgrade}"),
        OptInRefusal::UserOutOfScope => format!(
            "Legacy TLS ({v}) is not enabled for {}; {upgrade}, or ask your administrator to add this account to the legacy opt-in",
            login.user
        ),
        OptInRefusal::NetworkOutOfScope => format!(
            "Legacy TLS ({v}) is not allowed from {} for your organization; {upgrade}, or ask your administrator to add this network to the legacy opt-in",
            login.client.to_canonical()
        ),
    };
    Reply::legacy_opt_in_refused(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ScheduleStep, TlsMode};
    use rand::SeedableRng;

    fn endpoint(legacy_tls: LegacyTls, versions: &[TlsVersion], schedule: Vec<ScheduleStep>) -> Endpoint {
        Endpoint {
            name: "e".into(),
            listen: vec!["127.0.0.1:587".parse().unwrap()],
            tls_mode: TlsMode::Starttls,
            tls_versions: versions.to_vec(),
            legacy_tls,
            schedule,
            legacy_requires_opt_in: true,
            tls: crate::tls::profile::TlsPolicy::new(versions, None, None, None).unwrap(),
        }
    }

    /// A standard endpoint on 587 and a legacy one on 2588, both STARTTLS.
    fn pair(std: LegacyTls, legacy_schedule: Vec<ScheduleStep>) -> Vec<Endpoint> {
        let mut s = endpoint(std, &MODERN, vec![]);
        s.name = "std".into();
        let mut l = endpoint(LegacyTls::Allow, &ALL, legacy_schedule);
        l.name = "legacy".into();
        l.listen = vec!["127.0.0.1:2588".parse().unwrap()];
        vec![s, l]
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    const ALL: [TlsVersion; 4] = [TlsVersion::Tls10, TlsVersion::Tls11, TlsVersion::Tls12, TlsVersion::Tls13];
    const MODERN: [TlsVersion; 2] = [TlsVersion::Tls12, TlsVersion::Tls13];

    fn steps() -> Vec<ScheduleStep> {
        vec![
            ScheduleStep { from: d("2026-12-01"), action: StepAction::RejectPercent(10) },
            ScheduleStep { from: d("2027-01-15"), action: StepAction::RejectPercent(50) },
            ScheduleStep { from: d("2027-03-01"), action: StepAction::RejectPercent(100) },
            ScheduleStep { from: d("2027-06-01"), action: StepAction::Set(LegacyTls::Refuse) },
        ]
    }

    #[test]
    fn schedule_follows_the_date() {
        let ep = endpoint(LegacyTls::Allow, &ALL, steps());
        let cases = [
            ("2026-11-30", LegacyRule::Allow),
            ("2026-12-01", LegacyRule::RejectPercent(10)),
            ("2027-01-14", LegacyRule::RejectPercent(10)),
            ("2027-01-15", LegacyRule::RejectPercent(50)),
            ("2027-03-01", LegacyRule::Explain),
            ("2027-06-01", LegacyRule::Refuse),
            ("2030-01-01", LegacyRule::Refuse),
        ];
        for (day, want) in cases {
            assert_eq!(legacy_rule(&ep, d(day)), want, "{day}");
        }
    }

    #[test]
    fn hints_follow_bound_ports_mode_and_schedule() {
        let all = pair(LegacyTls::Explain, steps());
        assert_eq!(legacy_hint(&all, &all[0], d("2026-11-24")).as_deref(), Some("port 2588"));
        assert_eq!(legacy_hint(&all, &all[0], d("2027-03-01")), None, "legacy endpoint no longer serves legacy then");
        assert_eq!(modern_hint(&all, &all[1]).as_deref(), Some("port 587"));
        let mut implicit = all.clone();
        implicit[1].tls_mode = TlsMode::Implicit;
        assert_eq!(legacy_hint(&implicit, &implicit[0], d("2026-11-24")), None, "never a hint to another TLS mode");
        // A version the endpoint does not list, even TLS 1.2, is not served.
        let mut only13 = all[0].clone();
        only13.tls_versions = vec![TlsVersion::Tls13];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        match after_handshake(&only13, &all, TlsVersion::Tls12, d("2026-11-24"), &mut rng) {
            SessionVerdict::Explain(r) => assert!(r.to_text().starts_with("421 4.7.0 TLS 1.2 is not offered"), "{}", r.to_text()),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn handshake_verdicts() {
        let all = pair(LegacyTls::Explain, vec![]);
        let std_explain = all[0].clone();
        let std_refuse = endpoint(LegacyTls::Refuse, &MODERN, vec![]);
        let legacy = endpoint(LegacyTls::Allow, &ALL, steps());
        let today = d("2026-11-24");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // (endpoint, offered, negotiated, date, verdict before the handshake, served after it)
        type Case<'a> = (&'a Endpoint, Option<TlsVersion>, TlsVersion, &'a str, HelloVerdict, bool);
        let cases: [Case; 9] = [
            (&std_explain, Some(TlsVersion::Tls10), TlsVersion::Tls10, "2026-11-24", HelloVerdict::Handshake, false),
            (&std_explain, Some(TlsVersion::Tls13), TlsVersion::Tls13, "2026-11-24", HelloVerdict::Handshake, true),
            (&std_explain, Some(TlsVersion::Tls12), TlsVersion::Tls12, "2026-11-24", HelloVerdict::Handshake, true),
            (&std_refuse, Some(TlsVersion::Tls11), TlsVersion::Tls11, "2026-11-24", HelloVerdict::Refuse, false),
            (&std_refuse, None, TlsVersion::Tls10, "2026-11-24", HelloVerdict::Handshake, false),
            (&std_refuse, Some(TlsVersion::Ssl3), TlsVersion::Ssl3, "2026-11-24", HelloVerdict::Refuse, false),
            (&legacy, Some(TlsVersion::Tls10), TlsVersion::Tls10, "2026-11-24", HelloVerdict::Handshake, true),
            (&legacy, Some(TlsVersion::Tls10), TlsVersion::Tls10, "2027-03-01", HelloVerdict::Handshake, false),
            (&legacy, Some(TlsVersion::Tls10), TlsVersion::Tls10, "2027-06-01", HelloVerdict::Refuse, false),
        ];
        for (i, (ep, offered, negotiated, day, before, serve)) in cases.into_iter().enumerate() {
            assert_eq!(before_handshake(ep, offered, d(day)), before, "case {i}");
            let after = after_handshake(ep, &all, negotiated, d(day), &mut rng);
            assert_eq!(after == SessionVerdict::Serve, serve, "case {i}: {after:?}");
            if let SessionVerdict::Explain(r) = after {
                let text = r.to_text();
                assert!(text.starts_with("421 4.7.66 TLS 1.0 and 1.1 are not supported on this endpoint. Use TLS 1.2 or later."), "{text}");
                if ep.name == "std" {
                    assert!(text.contains("port 2588"), "names the legacy endpoint: {text}");
                }
            }
        }
        let _ = today;
    }

    #[test]
    fn reject_percent_uses_the_injected_random_source() {
        let mut ep = endpoint(LegacyTls::Allow, &ALL, vec![]);
        for (p, lo, hi) in [(0u8, 0, 0), (50, 350, 650), (100, 1000, 1000)] {
            ep.schedule = vec![ScheduleStep { from: d("2020-01-01"), action: StepAction::RejectPercent(p) }];
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let explained = (0..1000)
                .filter(|_| after_handshake(&ep, &[], TlsVersion::Tls10, d("2026-11-24"), &mut rng) != SessionVerdict::Serve)
                .count();
            assert!((lo..=hi).contains(&explained), "p={p}: {explained}");
            // Same seed, same draws.
            let mut a = rand::rngs::StdRng::seed_from_u64(7);
            let mut b = rand::rngs::StdRng::seed_from_u64(7);
            let run = |r: &mut rand::rngs::StdRng| {
                (0..50).map(|_| after_handshake(&ep, &[], TlsVersion::Tls10, d("2026-11-24"), r) == SessionVerdict::Serve).collect::<Vec<_>>()
            };
            assert_eq!(run(&mut a), run(&mut b));
        }
    }

    #[test]
    fn opt_in_table() {
        let all = pair(LegacyTls::Explain, vec![]);
        let ep = all[1].clone();
        let mut relaxed = ep.clone();
        relaxed.legacy_requires_opt_in = false;
        let on = LegacySettings { allowed: true, ..Default::default() };
        let net: ipnet::IpNet = "10.1.0.0/16".parse().unwrap();
        let login = |user: &'static str, ip: &str, version: TlsVersion, day: &str| LegacyLogin {
            version,
            user,
            client: ip.parse().unwrap(),
            today: d(day),
        };
        let l10 = login("a@x.test", "10.1.2.3", TlsVersion::Tls10, "2026-11-24");
        let cases: Vec<(&Endpoint, LegacySettings, LegacyLogin, Result<(), OptInRefusal>)> = vec![
            (&ep, on.clone(), l10, Ok(())),
            (&ep, LegacySettings::default(), l10, Err(OptInRefusal::NotOptedIn)),
            (&ep, LegacySettings::default(), login("a@x.test", "10.1.2.3", TlsVersion::Tls12, "2026-11-24"), Ok(())),
            (&relaxed, LegacySettings::default(), l10, Ok(())),
            (&relaxed, LegacySettings { forbidden: true, ..Default::default() }, l10, Err(OptInRefusal::Vetoed)),
            (&ep, LegacySettings { forbidden: true, ..on.clone() }, l10, Err(OptInRefusal::Vetoed)),
            (&ep, LegacySettings { until: Some(d("2026-11-24")), ..on.clone() }, l10, Ok(())),
            (&ep, LegacySettings { until: Some(d("2026-11-23")), ..on.clone() }, l10, Err(OptInRefusal::Expired(d("2026-11-23")))),
            (&ep, LegacySettings { users: vec!["b@x.test".into()], ..on.clone() }, l10, Err(OptInRefusal::UserOutOfScope)),
            (&ep, LegacySettings { users: vec!["A@X.test".into()], ..on.clone() }, l10, Ok(())),
            (&ep, LegacySettings { networks: vec![net], ..on.clone() }, l10, Ok(())),
            (&ep, LegacySettings { networks: vec![net], ..on.clone() }, login("a@x.test", "::ffff:10.1.9.9", TlsVersion::Tls11, "2026-11-24"), Ok(())),
            (&ep, LegacySettings { networks: vec![net], ..on.clone() }, login("a@x.test", "10.2.0.1", TlsVersion::Tls10, "2026-11-24"), Err(OptInRefusal::NetworkOutOfScope)),
        ];
        for (i, (ep, settings, login, want)) in cases.into_iter().enumerate() {
            let got = legacy_opt_in(ep, &settings, login);
            assert_eq!(got, want, "case {i}");
            if let Err(refusal) = got {
                let text = opt_in_reply(ep, &all, &refusal, login).to_text();
                assert!(text.starts_with("534 5.7.9 Legacy TLS (TLS 1."), "{text}");
                assert!(text.contains("use TLS 1.2 or later on port 587"), "{text}");
            }
        }
        // Each refusal has its own text.
        let texts: std::collections::HashSet<String> = [
            OptInRefusal::Vetoed,
            OptInRefusal::NotOptedIn,
            OptInRefusal::Expired(d("2026-01-01")),
            OptInRefusal::UserOutOfScope,
            OptInRefusal::NetworkOutOfScope,
        ]
        .iter()
        .map(|r| opt_in_reply(&ep, &all, r, l10).to_text())
        .collect();
        assert_eq!(texts.len(), 5);
    }

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
            (true, Some("a@x.test"), "", None),
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
        assert_eq!(recipient("a@x.test", Some("t"), true, false, false), Ok(Route::Local { tenant: "t".into() }));
        assert_eq!(recipient("b@x.test", Some("t"), false, true, false).unwrap_err().code, 550);
        assert_eq!(recipient("b@x.test", Some("t"), false, true, false).unwrap_err().enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(recipient("c@y.test", None, false, true, false), Ok(Route::Relay));
        let refused = recipient("c@y.test", None, false, false, false).unwrap_err();
        assert_eq!(recipient("anyone@x.test", Some("t"), false, false, true), Ok(Route::Local { tenant: "t".into() }), "mailboxes upstream");
        assert_eq!((refused.code, refused.enhanced.unwrap().to_string()), (550, "5.7.1".to_string()));
    }
}
