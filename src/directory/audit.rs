//! The audit log: one record per change of the directory (tenants, domains, users, legacy
//! settings, API keys), written by the change's own transaction, and records of changes
//! made elsewhere (queue operations) written right after them. Each record names who
//! acted (`cli:<os user>`, `key:<id>`), in which scope, on what, and the values before and
//! after; a password or a key's secret is never in it.

use super::{Directory, Result};
use serde::Serialize;

/// Who makes the changes of a [`Directory`] handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// `cli:<os user>`, `key:<id>`, or `system`.
    pub actor: String,
    /// `operator`, or the tenant whose admin acts.
    pub scope: String,
}

impl AuditActor {
    /// Changes made by Mailgate itself (the demo's seeding) or by code without a caller.
    pub fn system() -> AuditActor {
        AuditActor { actor: "system".into(), scope: "operator".into() }
    }
}

/// One change as recorded.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct AuditRecord {
    pub id: i64,
    /// Unix seconds.
    pub time: i64,
    pub actor: String,
    pub scope: String,
    /// The tenant the object belongs to (none for operator-wide objects).
    pub tenant: Option<String>,
    /// `tenant.add`, `tenant.legacy`, `domain.add`, `user.add`, `user.set`, `user.passwd`,
    /// `apikey.add`, `apikey.revoke`, `queue.retry`, `queue.hold`, `queue.release`,
    /// `queue.delete`, `queue.bounce`, `ban.add`, `ban.remove`.
    pub action: String,
    /// The object's name: a tenant, domain, address, key id or queue id.
    pub object: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Which records `audit_list` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant's records.
    pub tenant: Option<String>,
    /// Only records at or after this time (Unix seconds).
    pub since: i64,
    /// At most this many.
    pub limit: u32,
}

/// A change about to be recorded.
pub struct Change<'a> {
    pub(crate) tenant: Option<&'a str>,
    pub(crate) action: &'a str,
    pub(crate) object: &'a str,
    pub(crate) before: Option<serde_json::Value>,
    pub(crate) after: Option<serde_json::Value>,
}

impl<'a> Change<'a> {
    pub(crate) fn new(tenant: Option<&'a str>, action: &'a str, object: &'a str) -> Change<'a> {
        Change { tenant, action, object, before: None, after: None }
    }
    pub(crate) fn before(mut self, v: serde_json::Value) -> Self {
        self.before = Some(v);
        self
    }
    pub(crate) fn after(mut self, v: serde_json::Value) -> Self {
        self.after = Some(v);
        self
    }
}

/// A value as the audit log stores it.
pub(crate) fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl Directory {
    /// Records a change made outside the directory (a queue operation), once it is done.
    pub async fn record_change(
        &self,
        tenant: Option<&str>,
        action: &str,
        object: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<()> {
        self.store.record_change(&self.stamp(), &Change { tenant, action, object, before, after }).await
    }

    /// Audit records, newest first.
    pub async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.store.audit_list(filter).await
    }
}
