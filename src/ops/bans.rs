//! Bans (`[auth_limits]` makes them; the operator lists, adds and lifts them): operator
//! only, since a ban is on an address or a login, not on a tenant's object.

use super::{Caller, Ops, OpsError, OpsResult};
use crate::directory::{Ban, BanKind};

/// A ban to make.
#[derive(Debug, Clone)]
pub struct BanRequest {
    pub kind: BanKind,
    /// An address or network (`address`), or a login.
    pub target: String,
    /// `90s`, `30m`, `2h`, `7d` or seconds; none: `[auth_limits] ban_time`.
    pub duration: Option<String>,
    pub reason: String,
}

/// Which ban to lift.
#[derive(Debug, Clone)]
pub enum BanSelector {
    Id(i64),
    Target(BanKind, String),
}

/// Seconds in `90`, `90s`, `30m`, `2h` or `7d`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(factor)
}

impl Ops {
    pub async fn list_bans(&self, c: &Caller) -> OpsResult<Vec<Ban>> {
        c.operator_only("the ban list")?;
        Ok(self.dir.active_bans().await?)
    }

    pub async fn add_ban(&self, c: &Caller, r: &BanRequest) -> OpsResult<Ban> {
        c.operator_only("banning")?;
        let seconds = match r.duration.as_deref() {
            Some(d) => parse_duration(d).ok_or_else(|| OpsError::invalid("duration", format!("{d:?}: expected a duration like 90s, 30m, 2h or 7d")))?,
            None => self.config.auth_limits.ban_time,
        };
        let ban = self.dir_as(c).add_ban(r.kind, &r.target, seconds, &r.reason).await.map_err(|e| {
            let field = match &e {
                crate::directory::DirectoryError::Invalid(m) if m.contains("ban lasts") => "duration",
                crate::directory::DirectoryError::Invalid(m) if m.contains("reason") => "reason",
                _ => "target",
            };
            OpsError::from_directory(e, field)
        })?;
        self.directory_changed().await;
        Ok(ban)
    }

    /// Lifts a ban in force now.
    pub async fn remove_ban(&self, c: &Caller, which: &BanSelector) -> OpsResult<Ban> {
        c.operator_only("lifting a ban")?;
        let (kind, target) = match which {
            BanSelector::Target(kind, target) => (*kind, target.clone()),
            BanSelector::Id(id) => {
                let ban = self.dir.active_bans().await?.into_iter().find(|b| b.id == *id);
                let ban = ban.ok_or_else(|| OpsError::NotFound(format!("no ban {id} in force; see `mailgate ban list`")))?;
                (ban.kind, ban.target)
            }
        };
        let ban = self.dir_as(c).remove_ban(kind, &target).await.map_err(|e| OpsError::from_directory(e, "target"))?;
        self.directory_changed().await;
        Ok(ban)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        use super::parse_duration as p;
        assert_eq!([p("90"), p("90s"), p("30m"), p("2h"), p("7d")], [Some(90), Some(90), Some(1800), Some(7200), Some(604_800)]);
        assert_eq!([p(""), p("h"), p("1w"), p("-1h"), p("99999999999999999999d")], [None; 5]);
    }
}
