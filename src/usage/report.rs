//! The usage reports: per-sender TLS use, legacy senders and devices, and the what-if.
//!
//! Reports are pure functions over rollup rows ([`DailyRow`]); the what-if asks the same
//! policy functions the server uses ([`crate::policy`]), so its predicted replies are the
//! replies devices will really get. Output is a table, CSV (header as documented in
//! `docs/reports.md`) or JSON.

use super::store::DailyRow;
use super::{is_legacy_name, Outcome};
use crate::config::Endpoint;
use crate::directory::LegacySettings;
use crate::policy::{self, LegacyLogin, LegacyRule};
use crate::reply::Reply;
use crate::tls::TlsVersion;
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A report's period, whole days, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// The longest period a report covers (rollups are kept 400 days).
pub const MAX_DAYS: i64 = 400;

impl Period {
    /// `--since 7d|12w` (ending today) or `--from DATE [--to DATE]`; default: the last 7 days.
    pub fn parse(since: Option<&str>, from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<Period, String> {
        let date = |s: &str, flag: &str| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("{flag} {s:?}: expected a date like 2026-11-24"))
        };
        let period = match (since, from) {
            (Some(_), Some(_)) => return Err("give either --since or --from/--to, not both".into()),
            (Some(s), None) => {
                let bad = || format!("--since {s:?}: expected a count and d or w, like 90d");
                let (n, per) = match (s.strip_suffix('d'), s.strip_suffix('w')) {
                    (Some(n), _) => (n, 1),
                    (_, Some(n)) => (n, 7),
                    _ => return Err(bad()),
                };
                let days = n.parse::<i64>().map_err(|_| bad())?.saturating_mul(per);
                if days < 1 {
                    return Err(format!("--since {s:?}: must be at least 1d"));
                }
                if days > MAX_DAYS {
                    return Err(format!("--since {s:?}: reports cover at most {MAX_DAYS} days"));
                }
                let from = today.checked_sub_days(chrono::Days::new(days as u64 - 1)).ok_or("--since: out of range")?;
                Period { from, to: today }
            }
            (None, Some(f)) => Period { from: date(f, "--from")?, to: to.map(|t| date(t, "--to")).transpose()?.unwrap_or(today) },
            (None, None) => Period { from: today.checked_sub_days(chrono::Days::new(6)).unwrap_or(today), to: today },
        };
        if period.to < period.from {
            return Err("--to is before --from".into());
        }
        if period.days() > MAX_DAYS {
            return Err(format!("the period is {} days; reports cover at most {MAX_DAYS}", period.days()));
        }
        Ok(period)
    }

    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

fn pct(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// A device: its ClientHello fingerprint and the name it gave in EHLO.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
pub struct Device {
    pub fingerprint: String,
    pub ehlo: String,
}

/// `report tls`: one row per sender.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TlsRow {
    pub tenant: String,
    pub sender: String,
    pub sessions: i64,
    pub messages: i64,
    /// Shares of messages (of sessions when the sender sent none), in percent.
    pub tls10_pct: f64,
    pub tls11_pct: f64,
    pub tls12_pct: f64,
    pub tls13_pct: f64,
    pub endpoints: Vec<String>,
    pub last_seen: String,
    pub devices: Vec<Device>,
}

/// Per sender over the period: sessions that completed a handshake, messages, the share of
/// each TLS version, endpoints, last seen and devices.
pub fn tls_report(rows: &[DailyRow]) -> Vec<TlsRow> {
    #[derive(Default)]
    struct Acc {
        sessions: i64,
        messages: i64,
        by_version: HashMap<String, (i64, i64)>,
        endpoints: BTreeSet<String>,
        last_seen: i64,
        devices: BTreeSet<Device>,
    }
    let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.version.is_empty()) {
        let a = acc.entry((r.tenant.clone(), r.sender.clone())).or_default();
        a.sessions += r.sessions;
        a.messages += r.messages;
        let v = a.by_version.entry(r.version.clone()).or_default();
        v.0 += r.sessions;
        v.1 += r.messages;
        a.endpoints.insert(r.endpoint.clone());
        a.last_seen = a.last_seen.max(r.last_seen);
        a.devices.insert(Device { fingerprint: r.fingerprint.clone(), ehlo: r.ehlo.clone() });
    }
    acc.into_iter()
        .map(|((tenant, sender), a)| {
            let share = |v: &str| {
                let (s, m) = a.by_version.get(v).copied().unwrap_or_default();
                if a.messages > 0 { pct(m, a.messages) } else { pct(s, a.sessions) }
            };
            TlsRow {
                tenant,
                sender,
                sessions: a.sessions,
                messages: a.messages,
                tls10_pct: share("TLSv1.0"),
                tls11_pct: share("TLSv1.1"),
                tls12_pct: share("TLSv1.2"),
                tls13_pct: share("TLSv1.3"),
                endpoints: a.endpoints.into_iter().collect(),
                last_seen: rfc3339(a.last_seen),
                devices: a.devices.into_iter().collect(),
            }
        })
        .collect()
}

/// `report legacy`: one row per sender or device, endpoint, version and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LegacyRow {
    pub tenant: String,
    /// The user or login; `[address]` when none is known.
    pub sender: String,
    pub client_ip: String,
    pub sni: String,
    pub ehlo: String,
    pub fingerprint: String,
    pub endpoint: String,
    /// The negotiated version; empty when the handshake never completed.
    pub version: String,
    /// The highest version the client offered.
    pub offered_max: String,
    pub outcome: Outcome,
    pub sessions: i64,
    pub messages: i64,
    pub last_seen: String,
    /// The negotiated suite (IANA name); empty when the handshake never completed.
    pub cipher: String,
    /// The suites the latest hello offered.
    pub offered_ciphers: String,
}

/// Every sender and device that used or tried TLS below 1.2, refused and unauthenticated
/// attempts included, and every attempt refused because it offered no suite the endpoint
/// serves (a TLS 1.2 device that knows only CBC or static-RSA suites).
pub fn legacy_report(rows: &[DailyRow]) -> Vec<LegacyRow> {
    /// (tenant, sender, endpoint, version, cipher, fingerprint, outcome)
    type Key = (String, String, String, String, String, String, Outcome);
    let mut acc: BTreeMap<Key, (LegacyRow, i64)> = BTreeMap::new();
    let legacy = |r: &&DailyRow| {
        r.outcome == Outcome::NoSharedCipher || is_legacy_name(if r.version.is_empty() { &r.offered_max } else { &r.version })
    };
    for r in rows.iter().filter(legacy) {
        let key = (r.tenant.clone(), r.sender.clone(), r.endpoint.clone(), r.version.clone(), r.cipher.clone(), r.fingerprint.clone(), r.outcome);
        let e = acc.entry(key).or_insert_with(|| {
            let row = LegacyRow {
                tenant: r.tenant.clone(),
                sender: r.sender.clone(),
                client_ip: String::new(),
                sni: String::new(),
                ehlo: String::new(),
                fingerprint: r.fingerprint.clone(),
                endpoint: r.endpoint.clone(),
                version: r.version.clone(),
                offered_max: String::new(),
                outcome: r.outcome,
                sessions: 0,
                messages: 0,
                last_seen: String::new(),
                cipher: r.cipher.clone(),
                offered_ciphers: String::new(),
            };
            (row, i64::MIN)
        });
        e.0.sessions += r.sessions;
        e.0.messages += r.messages;
        if r.last_seen >= e.1 {
            e.1 = r.last_seen;
            e.0.client_ip = r.client_ip.clone();
            e.0.sni = r.sni.clone();
            e.0.ehlo = r.ehlo.clone();
            e.0.offered_max = r.offered_max.clone();
            e.0.offered_ciphers = r.offered_ciphers.clone();
            e.0.last_seen = rfc3339(r.last_seen);
        }
    }
    acc.into_values().map(|(r, _)| r).collect()
}

/// The scenario of a what-if.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// The schedule step (and opt-in end dates) in force on this date.
    On(NaiveDate),
    /// The tenant's opt-in switched off.
    DisableLegacy,
    /// A kind of suite removed from one endpoint (or all, `None`).
    DropSuites(SuiteKind, Option<String>),
}

/// A kind of cipher suite an operator may want to stop serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteKind {
    /// RSA key exchange (`TLS_RSA_WITH_*`): no forward secrecy.
    StaticRsa,
    /// CBC with HMAC: BEAST at TLS 1.0, Lucky13.
    Cbc,
}

impl SuiteKind {
    pub fn parse(s: &str) -> Option<SuiteKind> {
        match s {
            "static-rsa" => Some(SuiteKind::StaticRsa),
            "cbc" => Some(SuiteKind::Cbc),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SuiteKind::StaticRsa => "static-rsa",
            SuiteKind::Cbc => "cbc",
        }
    }

    /// Whether a suite is of this kind.
    pub fn covers(self, s: &crate::tls::profile::Suite) -> bool {
        use crate::tls::profile::{Bulk, Kx};
        match self {
            SuiteKind::StaticRsa => s.kx == Kx::Rsa,
            SuiteKind::Cbc => s.bulk == Bulk::Cbc,
        }
    }

    /// Whether a negotiated suite's name is of this kind.
    pub fn covers_name(self, name: &str) -> bool {
        match self {
            SuiteKind::StaticRsa => crate::tls::profile::is_static_rsa(name),
            SuiteKind::Cbc => crate::tls::profile::is_cbc(name),
        }
    }
}

/// `report what-if`: a sender and device that would fail, and how.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct WhatIfRow {
    pub tenant: String,
    pub sender: String,
    pub endpoint: String,
    pub version: String,
    pub fingerprint: String,
    pub ehlo: String,
    pub client_ip: String,
    /// Sessions served in the period.
    pub sessions: i64,
    pub messages: i64,
    /// Share of its sessions that would fail, in percent (below 100 for a reject_percent step).
    pub affected_pct: u8,
    /// Messages per day that would be refused (period average times the share).
    pub messages_per_day: f64,
    /// The reply the device would get.
    pub reply: String,
    /// The suite its latest session used.
    pub cipher: String,
}

/// Who would fail: every sender and device served below TLS 1.2 in the period, checked
/// against the scenario with the server's own policy functions.
pub fn what_if(
    rows: &[DailyRow],
    endpoints: &[Endpoint],
    tenants: &HashMap<String, LegacySettings>,
    scenario: Scenario,
    period: Period,
    today: NaiveDate,
) -> Vec<WhatIfRow> {
    if let Scenario::DropSuites(kind, endpoint) = &scenario {
        return what_if_suites(rows, endpoints, *kind, endpoint.as_deref(), period);
    }
    let served = |r: &&DailyRow| is_legacy_name(&r.version) && matches!(r.outcome, Outcome::Delivered | Outcome::Other);
    let mut out = Vec::new();
    for g in group_devices(rows.iter().filter(served), false) {
        let Some(ep) = endpoints.iter().find(|e| e.name == g.endpoint) else { continue };
        let Some(v) = TlsVersion::parse(&g.version) else { continue };
        let settings = tenants.get(&g.tenant).cloned().unwrap_or_default();
        let client = g.last.client_ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let Some((share, reply)) = predict(ep, endpoints, &settings, &scenario, v, &g.sender, client, today) else { continue };
        out.push(g.row(share, reply.trim_end(), period));
    }
    out
}

/// A what-if's sender and device with its totals over the period and its latest row.
struct WhatIfGroup<'a> {
    tenant: String,
    sender: String,
    endpoint: String,
    version: String,
    cipher: String,
    fingerprint: String,
    sessions: i64,
    messages: i64,
    last: &'a DailyRow,
}

/// Rows summed per sender and device (tenant, sender, endpoint, version, fingerprint, and
/// the suite when `by_cipher`), each with its latest row; without `by_cipher` the group's
/// suite is the latest row's.
fn group_devices<'a>(rows: impl Iterator<Item = &'a DailyRow>, by_cipher: bool) -> Vec<WhatIfGroup<'a>> {
    /// (tenant, sender, endpoint, version, cipher or "", fingerprint)
    type Key<'k> = (&'k str, &'k str, &'k str, &'k str, &'k str, &'k str);
    let mut groups: BTreeMap<Key<'a>, WhatIfGroup<'a>> = BTreeMap::new();
    for r in rows {
        let cipher = if by_cipher { r.cipher.as_str() } else { "" };
        let key = (r.tenant.as_str(), r.sender.as_str(), r.endpoint.as_str(), r.version.as_str(), cipher, r.fingerprint.as_str());
        let g = groups.entry(key).or_insert_with(|| WhatIfGroup {
            tenant: r.tenant.clone(),
            sender: r.sender.clone(),
            endpoint: r.endpoint.clone(),
            version: r.version.clone(),
            cipher: String::new(),
            fingerprint: r.fingerprint.clone(),
            sessions: 0,
            messages: 0,
            last: r,
        });
        g.sessions += r.sessions;
        g.messages += r.messages;
        if r.last_seen >= g.last.last_seen {
            g.last = r;
        }
    }
    groups
        .into_values()
        .map(|mut g| {
            g.cipher = g.last.cipher.clone();
            g
        })
        .collect()
}

impl WhatIfGroup<'_> {
    fn row(self, share: u8, reply: &str, period: Period) -> WhatIfRow {
        WhatIfRow {
            tenant: self.tenant,
            sender: self.sender,
            endpoint: self.endpoint,
            version: self.version,
            fingerprint: self.fingerprint,
            ehlo: self.last.ehlo.clone(),
            client_ip: self.last.client_ip.clone(),
            sessions: self.sessions,
            messages: self.messages,
            affected_pct: share,
            messages_per_day: per_day(self.messages, period, share),
            reply: reply.to_string(),
            cipher: self.cipher,
        }
    }
}

/// Messages a day over the period, times the share that would fail.
fn per_day(messages: i64, period: Period, share: u8) -> f64 {
    (messages as f64 / period.days() as f64 * f64::from(share) / 100.0 * 100.0).round() / 100.0
}

/// The reply a client gets when no suite it offers is served.
pub const NO_SHARED_SUITE: &str = "TLS handshake refused with a handshake_failure alert: no cipher suite in common";

/// Who would fail if `kind` were no longer served on `endpoint` (every endpoint when
/// `None`): every sender and device whose sessions used such a suite and whose latest
/// hello offered nothing else the endpoint would still serve at that version. (Under the
/// server's order a client gets a weaker suite only when it offers nothing better, so a
/// hello not recorded counts as having no alternative.)
fn what_if_suites(rows: &[DailyRow], endpoints: &[Endpoint], kind: SuiteKind, endpoint: Option<&str>, period: Period) -> Vec<WhatIfRow> {
    let hit = |r: &&DailyRow| {
        endpoint.is_none_or(|e| e == r.endpoint)
            && kind.covers_name(&r.cipher)
            && matches!(r.outcome, Outcome::Delivered | Outcome::Other)
    };
    let mut out = Vec::new();
    for g in group_devices(rows.iter().filter(hit), true) {
        let Some(ep) = endpoints.iter().find(|e| e.name == g.endpoint) else { continue };
        let Some(v) = TlsVersion::parse(&g.version) else { continue };
        let offered: Vec<&str> = g.last.offered_ciphers.split(' ').filter(|n| !n.is_empty()).collect();
        // Only suites a certificate it was served with can sign for (the report does not
        // know the others): a what-if errs towards naming a device.
        let auth = crate::tls::profile::by_name(&g.cipher).map(|s| s.auth);
        let signable = |s: &crate::tls::profile::Suite| auth.is_none_or(|a| s.auth == a);
        let remaining = ep.tls.suites_at(v).filter(|s| !kind.covers(s) && signable(s)).any(|s| offered.contains(&s.iana));
        if remaining {
            continue;
        }
        out.push(g.row(100, NO_SHARED_SUITE, period));
    }
    out
}

/// The share of sessions refused and the reply, or `None` if the device would still be served.
fn predict(
    ep: &Endpoint,
    all: &[Endpoint],
    settings: &LegacySettings,
    scenario: &Scenario,
    version: TlsVersion,
    user: &str,
    client: std::net::IpAddr,
    today: NaiveDate,
) -> Option<(u8, String)> {
    let (day, settings) = match scenario {
        Scenario::On(day) => (*day, settings.clone()),
        Scenario::DisableLegacy | Scenario::DropSuites(..) => {
            (today, LegacySettings { allowed: false, ..settings.clone() })
        }
    };
    if matches!(scenario, Scenario::On(_)) {
        let hint = policy::legacy_hint(all, ep, day);
        if !ep.tls_versions.contains(&version) {
            return Some((100, Reply::legacy_tls_not_supported(hint.as_deref()).to_text()));
        }
        match policy::legacy_rule(ep, day) {
            LegacyRule::Allow => {}
            LegacyRule::RejectPercent(p) => return Some((p, Reply::legacy_tls_deferred(hint.as_deref()).to_text())),
            LegacyRule::Explain => return Some((100, Reply::legacy_tls_not_supported(hint.as_deref()).to_text())),
            LegacyRule::Refuse => return Some((100, "TLS handshake refused with a protocol_version alert".into())),
        }
    }
    let login = LegacyLogin { version, user, client, today: day };
    policy::legacy_opt_in(ep, &settings, login)
        .err()
        .map(|refusal| (100, policy::opt_in_reply(ep, all, &refusal, login).to_text()))
}

/// A report row as table cells and CSV fields.
pub trait Tabular: Serialize {
    fn headers() -> &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

impl Tabular for TlsRow {
    fn headers() -> &'static [&'static str] {
        &["tenant", "sender", "sessions", "messages", "tls10_pct", "tls11_pct", "tls12_pct", "tls13_pct", "endpoints", "last_seen", "devices"]
    }
    fn cells(&self) -> Vec<String> {
        let devices: Vec<String> = self.devices.iter().map(|d| format!("{} {}", d.fingerprint, d.ehlo)).collect();
        vec![
            self.tenant.clone(),
            self.sender.clone(),
            self.sessions.to_string(),
            self.messages.to_string(),
            format!("{:.1}", self.tls10_pct),
            format!("{:.1}", self.tls11_pct),
            format!("{:.1}", self.tls12_pct),
            format!("{:.1}", self.tls13_pct),
            self.endpoints.join(" "),
            self.last_seen.clone(),
            devices.join("; "),
        ]
    }
}

impl Tabular for LegacyRow {
    fn headers() -> &'static [&'static str] {
        &[
            "tenant", "sender", "client_ip", "sni", "ehlo", "fingerprint", "endpoint", "version", "offered_max", "outcome", "sessions",
            "messages", "last_seen", "cipher", "offered_ciphers",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.tenant.clone(),
            self.sender.clone(),
            self.client_ip.clone(),
            self.sni.clone(),
            self.ehlo.clone(),
            self.fingerprint.clone(),
            self.endpoint.clone(),
            self.version.clone(),
            self.offered_max.clone(),
            self.outcome.as_str().to_string(),
            self.sessions.to_string(),
            self.messages.to_string(),
            self.last_seen.clone(),
            self.cipher.clone(),
            self.offered_ciphers.clone(),
        ]
    }
}

impl Tabular for WhatIfRow {
    fn headers() -> &'static [&'static str] {
        &[
            "tenant", "sender", "endpoint", "version", "fingerprint", "ehlo", "client_ip", "sessions", "messages", "affected_pct",
            "messages_per_day", "reply", "cipher",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.tenant.clone(),
            self.sender.clone(),
            self.endpoint.clone(),
            self.version.clone(),
            self.fingerprint.clone(),
            self.ehlo.clone(),
            self.client_ip.clone(),
            self.sessions.to_string(),
            self.messages.to_string(),
            self.affected_pct.to_string(),
            format!("{:.2}", self.messages_per_day),
            self.reply.clone(),
            self.cipher.clone(),
        ]
    }
}

/// RFC 4180 CSV with a header line. A cell a spreadsheet would read as a formula (it
/// starts with `=`, `+`, `@` or a `-` that is not a number: client-chosen EHLO names can)
/// is prefixed with `'`.
pub fn to_csv<T: Tabular>(rows: &[T]) -> String {
    let field = |s: &str| {
        let s = if s.starts_with(['=', '+', '@']) || (s.starts_with('-') && s.parse::<f64>().is_err()) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
    };
    let mut out = T::headers().join(",");
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.cells().iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

/// An aligned text table.
pub fn to_table<T: Tabular>(rows: &[T]) -> String {
    let headers: Vec<String> = T::headers().iter().map(|h| h.to_uppercase()).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(Tabular::cells).collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| cells.iter().map(|c| c[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0).min(60))
        .collect();
    let line = |c: &[String]| {
        c.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&headers);
    for c in &cells {
        out.push_str(&line(c));
    }
    if rows.is_empty() {
        out.push_str("(no rows in this period)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, sender: &str, version: &str, outcome: Outcome, sessions: i64, messages: i64) -> DailyRow {
        DailyRow {
            day: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            tenant: tenant.into(),
            sender: sender.into(),
            endpoint: "legacy".into(),
            version: version.into(),
            fingerprint: "t10i".into(),
            outcome,
            sessions,
            messages,
            bytes: 0,
            last_seen: 1_795_000_000,
            ehlo: "printer".into(),
            sni: String::new(),
            client_ip: "10.0.0.9".into(),
            offered_max: if version.is_empty() { "TLSv1.0".into() } else { version.into() },
            cipher: if version.is_empty() { String::new() } else { "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into() },
            offered_ciphers: String::new(),
        }
    }

    #[test]
    fn periods() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        assert_eq!(Period::parse(Some("7d"), None, None, today).unwrap().days(), 7);
        assert_eq!(Period::parse(Some("90d"), None, None, today).unwrap().from, NaiveDate::from_ymd_opt(2026, 8, 27).unwrap());
        assert_eq!(Period::parse(Some("2w"), None, None, today).unwrap().days(), 14);
        assert_eq!(Period::parse(None, Some("2026-11-01"), Some("2026-11-30"), today).unwrap().days(), 30);
        for bad in [
            (Some("7x"), None, None),
            (Some("0d"), None, None),
            (None, Some("2026-11-30"), Some("2026-11-01")),
            (Some("500d"), None, None),
            (Some("99999999999999d"), None, None),
            (Some("9223372036854775807w"), None, None),
            (Some("-3d"), None, None),
            (Some("d"), None, None),
            (Some("7\u{e9}"), None, None),
        ] {
            assert!(Period::parse(bad.0, bad.1, bad.2, today).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_shares_by_messages() {
        let rows = [
            row("contoso", "a@c.test", "TLSv1.0", Outcome::Delivered, 3, 3),
            row("contoso", "a@c.test", "TLSv1.2", Outcome::Delivered, 1, 1),
            row("contoso", "a@c.test", "", Outcome::RefusedAtHandshake, 5, 0),
        ];
        let r = tls_report(&rows);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].sessions, r[0].messages, r[0].tls10_pct, r[0].tls12_pct), (4, 4, 75.0, 25.0));
        let legacy = legacy_report(&rows);
        assert_eq!(legacy.len(), 2, "the refused attempt is listed too");
        assert!(legacy.iter().any(|l| l.outcome == Outcome::RefusedAtHandshake && l.offered_max == "TLSv1.0"));
    }

    #[test]
    fn outcome_names_agree_everywhere() {
        for o in Outcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }

    #[test]
    fn csv_quotes_fields() {
        let mut r = row("t", "s", "TLSv1.0", Outcome::Delivered, 1, 1);
        r.ehlo = "a,\"b\"".into();
        let csv = to_csv(&legacy_report(&[r]));
        assert!(csv.starts_with("tenant,sender,client_ip,"));
        assert!(csv.contains("\"a,\"\"b\"\"\""));
    }
}
