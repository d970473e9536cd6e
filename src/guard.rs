//! Failed-AUTH limits and bans (`[auth_limits]`).
//!
//! Every failed login (wrong password, unknown user, refused XOAUTH2 token) is counted
//! under three keys: the client's address (/32, or /64 for IPv6, where one host usually
//! has a whole /64), its subnet (/24, or /48) and the login name whatever the address, so
//! that a guess spread over many addresses at one account is caught too (Stalwart's
//! auto-ban keys on both). Past a key's per-minute or per-day limit, that address, subnet
//! or login is banned for `ban_time`: the ban is written to the directory (it survives a
//! restart and every node sharing the directory enforces it), the client waits `tarpit`
//! seconds and gets a 421 that says so and when to come back.
//!
//! A ban is checked before any password work: an address ban at the AUTH command, a login
//! ban once the login is known, so a correct password during a ban is refused too.
//! Successful logins never count, and clients in `exempt` networks are neither counted
//! nor refused. The address used is the connection's peer (behind a trusted PROXY header,
//! the client it names), so no one can get another address banned.
//!
//! The counters are this node's memory: a restart forgets failures not yet banned.

use crate::config::AuthLimits;
use crate::directory::{AuditActor, BanKind, Directory, DirectoryError};
use crate::reply::Reply;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// Keys kept before old ones are dropped: bounds memory under a flood of addresses.
const MAX_KEYS: usize = 100_000;
const MINUTE: i64 = 60;
const DAY: i64 = 86_400;

/// Why an AUTH is refused by a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanRefusal {
    pub kind: BanKind,
    /// Unix seconds.
    pub expires_at: i64,
}

impl BanRefusal {
    /// The 421 for the client, with the minutes left (rounded up).
    pub fn reply(&self, now: i64) -> Reply {
        let minutes = (self.expires_at - now + MINUTE - 1) / MINUTE;
        match self.kind {
            BanKind::Address => Reply::banned_address(minutes),
            BanKind::Login => Reply::banned_login(minutes),
        }
    }
}

/// Failure times per key, newest last, at most a day's worth.
#[derive(Default)]
struct Counters {
    map: HashMap<String, VecDeque<i64>>,
}

impl Counters {
    /// Records a failure under `key` at `now`; true when it reaches either limit (0: none).
    fn record(&mut self, key: String, now: i64, per_minute: u32, per_day: u32) -> bool {
        if per_minute == 0 && per_day == 0 {
            return false;
        }
        if self.map.len() >= MAX_KEYS && !self.map.contains_key(&key) {
            self.prune(now);
        }
        let times = self.map.entry(key).or_default();
        while times.front().is_some_and(|&t| now - t >= DAY) {
            times.pop_front();
        }
        times.push_back(now);
        let cap = per_day.max(per_minute) as usize;
        while times.len() > cap {
            times.pop_front();
        }
        let last_minute = times.iter().rev().take_while(|&&t| now - t < MINUTE).count();
        (per_minute > 0 && last_minute >= per_minute as usize) || (per_day > 0 && times.len() >= per_day as usize)
    }

    /// Forgets a key once it is banned: the ban does the refusing from now on.
    fn forget(&mut self, key: &str) {
        self.map.remove(key);
    }

    /// Drops keys with no failure in the last day; if that is not enough, everything
    /// (logged): a flood must not grow memory without bound.
    fn prune(&mut self, now: i64) {
        self.map.retain(|_, t| t.back().is_some_and(|&last| now - last < DAY));
        if self.map.len() >= MAX_KEYS {
            tracing::warn!(keys = self.map.len(), "failed-AUTH counters full; forgetting them all");
            self.map.clear();
        }
    }
}

/// One address's buckets: the host (/32, /64) and the subnet (/24, /48); the listener's
/// per-subnet session limit uses the same subnets.
pub fn buckets(ip: IpAddr) -> (ipnet::IpNet, ipnet::IpNet) {
    let ip = ip.to_canonical();
    let (host, subnet) = if ip.is_ipv4() { (32, 24) } else { (64, 48) };
    let net = |len| ipnet::IpNet::new(ip, len).map(|n| n.trunc()).unwrap_or_else(|_| ipnet::IpNet::from(ip));
    (net(host), net(subnet))
}

/// The limits, their counters and the bans' metric.
pub struct Guard {
    limits: AuthLimits,
    counters: Mutex<Counters>,
    bans_made: prometheus::IntCounterVec,
}

impl Guard {
    pub fn new(limits: AuthLimits, metrics: &crate::metrics::Metrics) -> Guard {
        let bans_made = crate::metrics::family("mailgate_auth_bans_total", "Bans made by the failed-AUTH limits, by kind (address, login).", "kind");
        metrics.register(bans_made.clone());
        Guard { limits, counters: Mutex::new(Counters::default()), bans_made }
    }

    /// In an `exempt` network: never counted, never refused by a ban.
    pub fn exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.limits.exempt.iter().any(|n| n.contains(&ip))
    }

    /// How long a client waits before it is told of the ban it just earned.
    pub fn tarpit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.limits.tarpit)
    }

    /// The ban in force on this client (and login, once known), if any.
    pub async fn banned(&self, dir: &Directory, ip: IpAddr, login: Option<&str>, now: i64) -> Result<Option<BanRefusal>, DirectoryError> {
        if self.exempt(ip) {
            return Ok(None);
        }
        let bans = dir.active_bans().await?;
        // Address bans first: they say more to the device's owner.
        let pick = |kind| bans.iter().filter(|b| b.kind == kind).find(|b| b.refuses(ip, login, now));
        Ok(pick(BanKind::Address).or_else(|| pick(BanKind::Login)).map(|b| BanRefusal { kind: b.kind, expires_at: b.expires_at }))
    }

    /// Counts a failed login; past a limit, makes the ban(s) and returns the refusal the
    /// client gets (after [`Guard::tarpit`]). A ban that cannot be written is logged and
    /// the session goes on as before (the 535).
    pub async fn failed(&self, dir: &Directory, ip: IpAddr, login: &str, now: i64) -> Option<BanRefusal> {
        if !self.limits.enabled || self.exempt(ip) {
            return None;
        }
        let l = &self.limits;
        let (host, subnet) = buckets(ip);
        let login = login.trim().to_lowercase();
        let mut to_ban = Vec::new();
        {
            let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let mut check = |key: String, kind, target: String, per_minute, per_day, what: &str| {
                if c.record(key.clone(), now, per_minute, per_day) {
                    c.forget(&key);
                    to_ban.push((kind, target, format!("too many failed authentications {what}")));
                }
            };
            check(format!("a:{host}"), BanKind::Address, host.to_string(), l.address_per_minute, l.address_per_day, "from this address");
            check(format!("s:{subnet}"), BanKind::Address, subnet.to_string(), l.subnet_per_minute, l.subnet_per_day, "from this subnet");
            if !login.is_empty() && login.len() <= 320 {
                check(format!("l:{login}"), BanKind::Login, login.clone(), l.login_per_minute, l.login_per_day, "of this login");
            }
        }
        let dir = dir.acting_as(AuditActor { actor: "auth-limits".into(), scope: "operator".into() });
        let mut refusal = None;
        for (kind, target, reason) in to_ban {
            match dir.add_ban(kind, &target, l.ban_time, &reason).await {
                Ok(ban) => {
                    self.bans_made.with_label_values(&[kind.as_str()]).inc();
                    tracing::warn!(kind = kind.as_str(), target = %ban.target, until = ban.expires_at, client = %ip, reason, "banned");
                    refusal = refusal.or(Some(BanRefusal { kind, expires_at: ban.expires_at }));
                }
                Err(e) => tracing::error!(error = %e, kind = kind.as_str(), target, "cannot write a ban"),
            }
        }
        refusal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_minute_and_per_day() {
        let mut c = Counters::default();
        let key = || "a:192.0.2.7/32".to_string();
        // 3 a minute, 5 a day.
        assert!(!c.record(key(), 1000, 3, 5));
        assert!(!c.record(key(), 1010, 3, 5));
        assert!(c.record(key(), 1020, 3, 5), "the third within a minute reaches the limit");
        let mut c = Counters::default();
        for (i, t) in [0, 100, 200, 300].into_iter().enumerate() {
            assert!(!c.record(key(), t, 3, 5), "failure {i} spread out is under both limits");
        }
        assert!(c.record(key(), 400, 3, 5), "the fifth within a day reaches the day's limit");
        let mut c = Counters::default();
        for t in [0, 100, 200, 300] {
            c.record(key(), t, 3, 5);
        }
        assert!(!c.record(key(), DAY + 150, 3, 5), "failures older than a day are forgotten");
        assert!(!Counters::default().record(key(), 0, 0, 0), "0 and 0: no limit");
    }

    #[test]
    fn buckets_are_host_and_subnet() {
        let (h, s) = buckets("192.0.2.77".parse().unwrap());
        assert_eq!((h.to_string().as_str(), s.to_string().as_str()), ("192.0.2.77/32", "192.0.2.0/24"));
        let (h, s) = buckets("2001:db8:1:2:3:4:5:6".parse().unwrap());
        assert_eq!((h.to_string().as_str(), s.to_string().as_str()), ("2001:db8:1:2::/64", "2001:db8:1::/48"));
        let (h, _) = buckets("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(h.to_string(), "192.0.2.1/32", "an IPv4-mapped address is its IPv4 address");
    }

    #[test]
    fn counters_stay_bounded() {
        let mut c = Counters::default();
        for i in 0..(MAX_KEYS + 10) {
            c.record(format!("a:{i}"), 0, 10, 50);
        }
        assert!(c.map.len() <= MAX_KEYS);
    }

    #[tokio::test]
    async fn failures_ban_then_the_ban_refuses_even_the_right_password() {
        let t = tempfile::tempdir().unwrap();
        let now = 1_900_000_000;
        let at = chrono::DateTime::from_timestamp(now, 0).unwrap();
        let dir = Directory::open(&t.path().join("d.sqlite")).await.unwrap().with_clock(std::sync::Arc::new(move || at));
        let limits = AuthLimits {
            address_per_minute: 3,
            login_per_minute: 4,
            exempt: vec!["10.9.0.0/16".parse().unwrap()],
            ..AuthLimits::default()
        };
        let g = Guard::new(limits, &crate::metrics::Metrics::new());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(g.failed(&dir, ip, "a@b.test", now).await, None);
        assert_eq!(g.failed(&dir, ip, "a@b.test", now).await, None);
        let ban = g.failed(&dir, ip, "a@b.test", now).await.expect("the third failure bans");
        assert_eq!(ban, BanRefusal { kind: BanKind::Address, expires_at: now + 3600 });
        assert_eq!(g.banned(&dir, ip, Some("other@b.test"), now).await.unwrap(), Some(ban));
        let mut wire = Vec::new();
        ban.reply(now).write_to(&mut wire);
        assert_eq!(String::from_utf8(wire).unwrap().trim_end(), "421 4.7.0 Too many failed authentications from your address; try again later (in 60 minutes)");
        assert_eq!(g.banned(&dir, "192.0.2.8".parse().unwrap(), None, now).await.unwrap(), None, "another address is not banned");
        assert_eq!(g.banned(&dir, ip, None, now + 3600).await.unwrap(), None, "the ban ends on time");
        // The fourth failure of the login, from a fresh address, bans the login everywhere.
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(g.failed(&dir, other, "A@b.test", now).await.map(|b| b.kind), Some(BanKind::Login));
        assert_eq!(g.banned(&dir, "203.0.113.9".parse().unwrap(), Some("a@B.test"), now).await.unwrap().map(|b| b.kind), Some(BanKind::Login));
        // The exempt network is neither counted nor refused.
        let office: IpAddr = "10.9.1.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(g.failed(&dir, office, "x@b.test", now).await, None);
        }
        assert_eq!(g.banned(&dir, office, Some("a@b.test"), now).await.unwrap(), None);
        let records = dir.audit_list(&crate::directory::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert!(records.iter().all(|r| r.action == "ban.add" && r.actor == "auth-limits"), "{records:?}");
        assert_eq!(records.len(), 2);
    }
}
