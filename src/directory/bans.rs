//! Bans: a client address (or network) or a login name refused at AUTH until a time.
//! Made by the failed-AUTH limits (`crate::guard`) or an operator (`mailgate ban add`,
//! `POST /api/v1/bans`); stored with the directory, so every node that shares it enforces
//! them and they survive a restart. A ban is in force strictly before its `expires_at`.

use super::{Directory, DirectoryError, Result};
use serde::{Deserialize, Serialize};

/// What a ban refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BanKind {
    /// Clients in a network (`target` in CIDR form).
    Address,
    /// One login name, from any address.
    Login,
}

impl BanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::Address => "address",
            BanKind::Login => "login",
        }
    }

    pub fn parse(s: &str) -> Option<BanKind> {
        match s {
            "address" => Some(BanKind::Address),
            "login" => Some(BanKind::Login),
            _ => None,
        }
    }
}

/// A ban as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Ban {
    pub id: i64,
    pub kind: BanKind,
    /// A network in CIDR form, or a lower-case login.
    pub target: String,
    pub reason: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds: in force before this time.
    pub expires_at: i64,
    /// `auth-limits` for an automatic ban, else who made it.
    pub created_by: String,
}

impl Ban {
    /// Whether this ban refuses a client at `ip` logging in as `login` at `now`.
    pub fn refuses(&self, ip: std::net::IpAddr, login: Option<&str>, now: i64) -> bool {
        if now >= self.expires_at {
            return false;
        }
        match self.kind {
            BanKind::Address => self.target.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&ip.to_canonical())),
            BanKind::Login => login.is_some_and(|l| l.trim().eq_ignore_ascii_case(&self.target)),
        }
    }
}

/// The longest a ban made by hand may last.
const MAX_BAN_SECONDS: u64 = 365 * 86_400;

/// A target in its stored form: a network truncated to its address, or a lower-case login.
pub fn normalize_target(kind: BanKind, target: &str) -> Result<String> {
    let t = target.trim();
    match kind {
        BanKind::Address => {
            let net = t
                .parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(|ip| ipnet::IpNet::from(ip.to_canonical())))
                .map_err(|_| DirectoryError::Invalid(format!("{t:?} is not an address or network like 192.0.2.7 or 192.0.2.0/24")))?;
            Ok(net.trunc().to_string())
        }
        BanKind::Login => {
            if t.is_empty() || t.len() > 320 || t.chars().any(char::is_control) {
                return Err(DirectoryError::Invalid("a login has 1 to 320 characters, without control characters".into()));
            }
            Ok(t.to_lowercase())
        }
    }
}

impl Directory {
    /// Bans `target` for `seconds` from now (a ban already there gets the new end and reason).
    pub async fn add_ban(&self, kind: BanKind, target: &str, seconds: u64, reason: &str) -> Result<Ban> {
        let target = normalize_target(kind, target)?;
        if !(1..=MAX_BAN_SECONDS).contains(&seconds) {
            return Err(DirectoryError::Invalid("a ban lasts between 1 second and 365 days".into()));
        }
        if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
            return Err(DirectoryError::Invalid("the reason has at most 200 characters, without control characters".into()));
        }
        let stamp = self.stamp();
        let expires_at = stamp.now + seconds as i64;
        let ban = self.store.put_ban(&stamp, kind, &target, reason, expires_at).await?;
        self.note_change();
        Ok(ban)
    }

    /// Lifts a ban before its end.
    pub async fn remove_ban(&self, kind: BanKind, target: &str) -> Result<Ban> {
        let target = normalize_target(kind, target)?;
        let ban = self.store.remove_ban(&self.stamp(), kind, &target).await?;
        self.note_change();
        Ok(ban)
    }

    /// The bans in force now, newest first (cached on a server, like the other hot-path
    /// reads; every change clears the cache).
    pub async fn active_bans(&self) -> Result<Vec<Ban>> {
        let now = self.now_secs();
        let bans = self.cached(&self.lookups.bans, "", self.store.bans(now)).await?;
        Ok(bans.into_iter().filter(|b| now < b.expires_at).collect())
    }
}
