//! The directory's storage seam: the rows it reads and the writes it makes, without
//! validation, caches, hashing or sentences for the operator (those stay in
//! [`Directory`](super::Directory)).
//!
//! Every write takes a [`Stamp`] (the time and who acts) and writes its audit record in the
//! same transaction as the change, so no engine can make a change without its record.
//! Read-modify-write changes (`set_legacy`, `set_user`) read the row they replace inside
//! that transaction, under the engine's write lock, so two concurrent changes of one
//! object both land, each with a `before` that is the value it really replaced.
//!
//! [`SqliteDirectory`](super::sqlite::SqliteDirectory) is the implementation today; a
//! PostgreSQL one goes beside it with the same migration history.

use super::audit::{AuditActor, AuditFilter, AuditRecord, Change};
use super::{Ban, BanKind};
use super::{ApiKey, Domain, LegacyChanges, LegacySettings, Result, Tenant, User, UserChanges};

/// When a write happens and who makes it: stamped on the row and on its audit record.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// Unix seconds.
    pub now: i64,
    pub actor: AuditActor,
}

/// A user row as AUTH and RCPT need it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    /// The argon2id PHC string.
    pub password_hash: String,
}

/// A user to insert: already normalised, its tenant found, its password hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub address: String,
    pub tenant: String,
    pub password_hash: String,
    pub smtp_auth: bool,
}

/// An API key to insert: its id and the SHA-256 of its secret, already made.
#[derive(Debug, Clone)]
pub struct NewKeyRow {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub tenant: Option<String>,
    pub description: String,
    pub expires: Option<chrono::NaiveDate>,
    /// Already truncated to their network addresses.
    pub allow_ips: Vec<String>,
}

/// Where the directory's rows live. Errors: `NotFound` / `Exists` with the sentences of
/// [`super::no_tenant`] and friends, `Vetoed` from [`LegacyChanges::apply`], `Database`.
#[async_trait::async_trait]
pub trait DirectoryStore: Send + Sync {
    // ---- tenants and domains ----
    /// `Exists` when the name is taken.
    async fn add_tenant(&self, stamp: &Stamp, name: &str) -> Result<()>;
    async fn tenant_names(&self) -> Result<Vec<String>>;
    /// The tenant with its domains, user count and legacy settings; `NotFound` if none.
    async fn tenant(&self, name: &str) -> Result<Tenant>;
    async fn tenant_exists(&self, name: &str) -> Result<bool>;
    /// `NotFound` if there is no such tenant.
    async fn legacy_settings(&self, tenant: &str) -> Result<LegacySettings>;
    /// Applies `changes` to the current settings in one transaction; returns the new ones.
    async fn set_legacy(&self, stamp: &Stamp, tenant: &str, changes: &LegacyChanges) -> Result<LegacySettings>;
    /// `domain` is normalised; `NotFound` for the tenant, `Exists` for the domain.
    async fn add_domain(&self, stamp: &Stamp, domain: &str, tenant: &str) -> Result<()>;
    async fn list_domains(&self, tenant: Option<&str>) -> Result<Vec<Domain>>;
    /// The owner of a (lower-case) domain.
    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>>;

    // ---- users ----
    /// `Exists` when the address is taken.
    async fn add_user(&self, stamp: &Stamp, user: &NewUser) -> Result<User>;
    /// One tenant's users (`NotFound` if it does not exist) or all, by tenant and address.
    async fn list_users(&self, tenant: Option<&str>) -> Result<Vec<User>>;
    /// A user by lower-case address.
    async fn user_record(&self, address: &str) -> Result<Option<UserRecord>>;
    /// `NotFound` if there is no such user.
    async fn set_user(&self, stamp: &Stamp, address: &str, changes: &UserChanges) -> Result<User>;
    /// `NotFound` if there is no such user; the audit record names no hash.
    async fn set_password_hash(&self, stamp: &Stamp, address: &str, password_hash: &str) -> Result<()>;

    // ---- API keys ----
    async fn add_api_key(&self, stamp: &Stamp, key: &NewKeyRow) -> Result<ApiKey>;
    /// One tenant's keys or all, newest first.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>>;
    /// A key and the digest of its secret.
    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, [u8; 32])>>;
    /// `NotFound` for an unknown id, `Exists` for one already revoked.
    async fn revoke_api_key(&self, stamp: &Stamp, id: &str) -> Result<ApiKey>;
    /// Records a use (not a change: no audit record).
    async fn mark_api_key_used(&self, id: &str, at: i64) -> Result<()>;

    // ---- bans ----
    /// Bans `target` until `expires_at`, or gives an existing ban that end and reason;
    /// expired bans are deleted on the way (their end is not a change anyone made).
    async fn put_ban(&self, stamp: &Stamp, kind: BanKind, target: &str, reason: &str, expires_at: i64) -> Result<Ban>;
    /// `NotFound` if there is no such ban in force.
    async fn remove_ban(&self, stamp: &Stamp, kind: BanKind, target: &str) -> Result<Ban>;
    /// The bans in force at `now`, newest first.
    async fn bans(&self, now: i64) -> Result<Vec<Ban>>;

    // ---- audit ----
    /// Records a change made outside the directory (a queue operation).
    async fn record_change(&self, stamp: &Stamp, change: &Change<'_>) -> Result<()>;
    /// Records newest first.
    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
}
