//! Tenants, accepted domains and users, and checking their credentials.
//!
//! This module owns the rules: names and addresses validated, passwords hashed with
//! argon2id (never logged, never in the audit log), the sentences an operator reads, the
//! caches, and who each change is recorded as. The rows live behind [`DirectoryStore`]
//! (`store.rs`): SQLite in the data directory today (`sqlite.rs`), and each write made
//! there carries its audit record in its own transaction.
//!
//! Two caches keep the database off the per-message path:
//! - [`CredentialCache`] remembers that a password was verified against a given stored
//!   hash (the argon2 verification is the costly part); a new password makes a new hash,
//!   so it can never let an old password in.
//! - [`LookupCache`] (servers only, `[directory] cache_ttl`, like Dovecot's auth cache)
//!   keeps the rows read at AUTH and RCPT: users, domain owners, legacy settings. Every
//!   write made through a `Directory` clears it, and the CLI tells a running server over
//!   its control socket after a change, so `mailgate user set`, `passwd`, `tenant set`...
//!   are in force on the next command of any session. Only a change made behind
//!   Mailgate's back (an SQL shell) waits for the TTL.
//!
//! The operations here (`add_tenant`, `add_user`, `set_user`, ...) are what the
//! operations layer (`crate::ops`) calls for the CLI and the admin API.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod audit;
mod bans;
mod keys;
pub mod sqlite;
pub mod store;

pub use audit::{AuditActor, AuditFilter, AuditRecord};
pub use bans::{normalize_target, Ban, BanKind};
pub use keys::{ApiKey, KeyRefusal, NewKey, KEY_PREFIX};
pub use sqlite::{SqliteDirectory, MIGRATOR};
pub use store::{DirectoryStore, Stamp};
use store::{NewUser, UserRecord};

/// A directory error; `Invalid` and `NotFound` carry a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    /// The operator's veto forbids the change.
    #[error("{0}")]
    Vetoed(String),
    #[error("directory database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("cannot bring the directory database up to date: {0}")]
    Migrate(String),
}

type Result<T> = std::result::Result<T, DirectoryError>;


/// A tenant's legacy-TLS opt-in, as the policy reads it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct LegacySettings {
    /// The tenant opted in (`--allow-legacy-tls on`).
    pub allowed: bool,
    /// Last day (inclusive) of the opt-in.
    pub until: Option<chrono::NaiveDate>,
    /// If not empty, only these users.
    pub users: Vec<String>,
    /// If not empty, only clients in these networks.
    #[schemars(with = "Vec<String>")]
    pub networks: Vec<ipnet::IpNet>,
    /// The operator's veto (`--forbid-legacy-tls on`): the tenant cannot opt in.
    pub forbidden: bool,
}

/// Changes to a tenant's legacy settings; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct LegacyChanges {
    pub allowed: Option<bool>,
    /// `Some(None)` clears the end date.
    pub until: Option<Option<chrono::NaiveDate>>,
    pub users: Option<Vec<String>>,
    pub networks: Option<Vec<ipnet::IpNet>>,
    pub forbidden: Option<bool>,
}

impl LegacyChanges {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_none() && self.until.is_none() && self.users.is_none() && self.networks.is_none() && self.forbidden.is_none()
    }

    /// The settings after these changes, or why they cannot be made (the veto).
    fn apply(&self, tenant: &str, mut s: LegacySettings) -> Result<LegacySettings> {
        if let Some(v) = self.forbidden {
            s.forbidden = v;
        }
        if let Some(v) = self.allowed {
            if v && s.forbidden {
                return Err(DirectoryError::Vetoed(format!(
                    "tenant {tenant} may not use legacy TLS: the operator forbade it (--forbid-legacy-tls on)"
                )));
            }
            s.allowed = v;
        }
        if let Some(v) = self.until {
            s.until = v;
        }
        if let Some(users) = &self.users {
            s.users = users.iter().map(|u| normalize_address(u)).collect::<Result<_>>()?;
        }
        if let Some(networks) = &self.networks {
            s.networks = networks.iter().map(|n| n.trunc()).collect();
        }
        Ok(s)
    }
}

/// A tenant: an organisation with its domains and users.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Tenant {
    pub name: String,
    pub domains: Vec<String>,
    pub users: i64,
    pub legacy: LegacySettings,
}

/// An accepted domain and the tenant that owns it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Domain {
    pub name: String,
    pub tenant: String,
}

/// A user as the session and the CLI see it (never the password hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct User {
    pub address: String,
    pub tenant: String,
    pub enabled: bool,
    pub smtp_auth: bool,
}

/// The result of checking a user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Ok(User),
    /// Unknown user or wrong password: the two are never told apart to the client.
    BadCredentials,
    /// The password was right but the account is disabled.
    AccountDisabled,
    /// The password was right but SMTP AUTH is off for this user.
    SmtpAuthDisabled,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub enabled: Option<bool>,
    pub smtp_auth: Option<bool>,
}

/// Lower-cases and checks an address `local@domain`.
pub fn normalize_address(addr: &str) -> Result<String> {
    let addr = addr.trim().to_lowercase();
    match addr.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && valid_domain(domain) && !local.contains(['/', '\\', ' ']) && local != "." && local != ".." => Ok(addr),
        _ => Err(DirectoryError::Invalid(format!("{addr:?} is not an address like user@example.com"))),
    }
}

/// Lower-cases and checks a domain name.
pub fn normalize_domain(domain: &str) -> Result<String> {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    if valid_domain(&d) {
        Ok(d)
    } else {
        Err(DirectoryError::Invalid(format!("{domain:?} is not a domain name like example.com")))
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}


/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DirectoryError::Hash(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Remembers passwords already verified against a stored hash, so that a device opening
/// many sessions pays argon2 once. Entries are keyed by address and hold a keyed digest of
/// (stored hash, password): a changed password changes the stored hash and misses.
#[derive(Default)]
pub struct CredentialCache {
    key: [u8; 32],
    entries: Mutex<HashMap<String, [u8; 32]>>,
}

impl CredentialCache {
    const MAX_ENTRIES: usize = 100_000;

    fn new() -> Self {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        Self { key, entries: Mutex::new(HashMap::new()) }
    }

    fn digest(&self, stored_hash: &str, password: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((stored_hash.len() as u64).to_le_bytes());
        h.update(stored_hash.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn hit(&self, address: &str, stored_hash: &str, password: &str) -> bool {
        let d = self.digest(stored_hash, password);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(address).is_some_and(|e| constant_time_eq(e, &d))
    }

    fn remember(&self, address: &str, stored_hash: &str, password: &str) {
        let d = self.digest(stored_hash, password);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(address.to_string(), d);
    }

    /// Forgets an address (after a password or state change made in this process).
    pub fn invalidate(&self, address: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }

    /// Number of cached verifications (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One map of [`LookupCache`]: values (found or not) with the time they were read.
struct TtlMap<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> TtlMap<T> {
    const MAX_ENTRIES: usize = 100_000;

    fn new() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &str, ttl: Duration) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
    }

    fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Directory rows read on the hot path (AUTH, RCPT, legacy opt-in), kept for `ttl`.
/// A value read while the cache was cleared is not stored: the generation taken before
/// the query must still be current when it is stored, so a stale row read during a
/// change never outlives it.
pub struct LookupCache {
    ttl: Duration,
    generation: AtomicU64,
    users: TtlMap<Option<UserRecord>>,
    domains: TtlMap<Option<String>>,
    legacy: TtlMap<LegacySettings>,
    /// The bans in force, under the one key `""`.
    bans: TtlMap<Vec<Ban>>,
}

impl LookupCache {
    fn new(ttl: Duration) -> Self {
        Self { ttl, generation: AtomicU64::new(0), users: TtlMap::new(), domains: TtlMap::new(), legacy: TtlMap::new(), bans: TtlMap::new() }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn put<T: Clone>(&self, map: &TtlMap<T>, key: &str, value: T, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut entries = map.entries.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        if entries.len() >= TtlMap::<T>::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key.to_string(), (Instant::now(), value));
    }

    /// Forgets everything (after any change to the directory).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.users.clear();
        self.domains.clear();
        self.legacy.clear();
        self.bans.clear();
    }
}

/// A stored hash used to spend the same time on unknown users as on known ones.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the hash verified for unknown users before any is made (the fuzz harness gives a
/// cheap one; verification takes its cost from the hash). Later calls change nothing.
pub(crate) fn preset_dummy_hash(phc: String) {
    let _ = DUMMY_HASH.set(phc);
}

/// The directory: its store and its caches.
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn DirectoryStore>,
    cache: Arc<CredentialCache>,
    lookups: Arc<LookupCache>,
    /// Set by every write: the CLI then tells a running server (`made_changes`).
    changed: Arc<AtomicBool>,
    /// At most one argon2 verification per core at a time (each takes ~19 MiB): a burst
    /// of logins queues here instead of exhausting memory and the blocking pool.
    argon2_slots: Arc<tokio::sync::Semaphore>,
    /// The time written into `created_at` / `updated_at` and the audit records.
    clock: crate::clock::Clock,
    /// Who the audit records of this handle's changes name (see [`Directory::acting_as`]).
    actor: Arc<AuditActor>,
}

impl Directory {
    /// Opens (creating if needed) the SQLite directory database at `path`.
    pub async fn open(path: &Path) -> Result<Directory> {
        Ok(Directory::with_store(Arc::new(SqliteDirectory::open(path).await?)))
    }

    /// A directory over any store (SQLite today; PostgreSQL is the next engine).
    pub fn with_store(store: Arc<dyn DirectoryStore>) -> Directory {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Directory {
            store,
            cache: Arc::new(CredentialCache::new()),
            lookups: Arc::new(LookupCache::new(Duration::ZERO)),
            changed: Arc::new(AtomicBool::new(false)),
            argon2_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            clock: crate::clock::system_clock(),
            actor: Arc::new(AuditActor::system()),
        }
    }

    /// The same directory, with its changes audited as made by `actor`. Every write of
    /// a handle writes its audit record in its own transaction: a change cannot be made
    /// without its record.
    pub fn acting_as(&self, actor: AuditActor) -> Directory {
        Directory { actor: Arc::new(actor), ..self.clone() }
    }

    /// Stamps changes with `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Directory {
        self.clock = clock;
        self
    }

    fn now_secs(&self) -> i64 {
        (self.clock)().timestamp()
    }

    /// The time and actor of a write about to be made.
    fn stamp(&self) -> Stamp {
        Stamp { now: self.now_secs(), actor: (*self.actor).clone() }
    }

    /// Keeps hot-path lookups for `ttl` (zero: read the database every time, the default
    /// for the CLI and tools). The server sets `[directory] cache_ttl`.
    pub fn with_lookup_cache(mut self, ttl: Duration) -> Directory {
        self.lookups = Arc::new(LookupCache::new(ttl));
        self
    }

    /// Forgets cached lookups: called for a change made by another process (the CLI,
    /// over the control socket).
    pub fn lookups_changed(&self) {
        self.lookups.clear();
    }

    /// Whether this handle has written to the directory.
    pub fn made_changes(&self) -> bool {
        self.changed.load(Ordering::SeqCst)
    }

    /// After every write: cached lookups are stale.
    fn note_change(&self) {
        self.changed.store(true, Ordering::SeqCst);
        self.lookups.clear();
    }

    /// The credentials cache (for metrics and tests).
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    // ---- tenants and domains ------------------------------------------------------------

    pub async fn add_tenant(&self, name: &str) -> Result<()> {
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(DirectoryError::Invalid(format!(
                "{name:?} is not a valid tenant name (letters, digits, '-', '_' and '.')"
            )));
        }
        if name.len() > 64 {
            return Err(DirectoryError::Invalid(format!("tenant names have at most 64 characters ({} given)", name.len())));
        }
        self.store.add_tenant(&self.stamp(), name).await?;
        self.note_change();
        Ok(())
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let mut out = Vec::new();
        for n in self.store.tenant_names().await? {
            out.push(self.store.tenant(&n).await?);
        }
        Ok(out)
    }

    pub async fn tenant(&self, name: &str) -> Result<Tenant> {
        self.store.tenant(name).await
    }

    /// A tenant's legacy-TLS settings (cached on a server; a CLI change applies at once).
    pub async fn legacy_settings(&self, tenant: &str) -> Result<LegacySettings> {
        self.cached(&self.lookups.legacy, tenant, self.store.legacy_settings(tenant)).await
    }

    /// Whether a tenant of this name exists (no error when it does not).
    pub async fn tenant_exists(&self, name: &str) -> Result<bool> {
        self.store.tenant_exists(name).await
    }

    /// Changes a tenant's legacy-TLS settings, all fields or none. Opting in a vetoed
    /// tenant is refused.
    pub async fn set_legacy(&self, tenant: &str, changes: &LegacyChanges) -> Result<LegacySettings> {
        let s = self.store.set_legacy(&self.stamp(), tenant, changes).await?;
        self.note_change();
        Ok(s)
    }

    pub async fn add_domain(&self, domain: &str, tenant: &str) -> Result<()> {
        let domain = normalize_domain(domain)?;
        self.store.add_domain(&self.stamp(), &domain, tenant).await?;
        self.note_change();
        Ok(())
    }

    /// Accepted domains, of one tenant or all, by name.
    pub async fn list_domains(&self, tenant: Option<&str>) -> Result<Vec<Domain>> {
        self.store.list_domains(tenant).await
    }

    /// The tenant that owns an accepted domain, if any.
    pub async fn domain_tenant(&self, domain: &str) -> Result<Option<String>> {
        let d = domain.trim_end_matches('.').to_lowercase();
        self.cached(&self.lookups.domains, &d, self.store.domain_tenant(&d)).await
    }

    // ---- users ------------------------------------------------------------------------------

    /// Adds a user in the tenant owning the address's domain.
    pub async fn add_user(&self, address: &str, password: &str, smtp_auth: bool) -> Result<User> {
        let address = normalize_address(address)?;
        check_password(password)?;
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let tenant = self.domain_tenant(domain).await?.ok_or_else(|| {
            DirectoryError::NotFound(format!(
                "{domain} is not an accepted domain; add it first with `mailgate domain add {domain} --tenant NAME`"
            ))
        })?;
        let password_hash = hash_blocking(password.to_string()).await?;
        self.add_user_with_hash(address, tenant, password_hash, smtp_auth).await
    }

    /// Stores a user whose password is already hashed (PHC string; `add_user` hashes with
    /// the default argon2id cost, the fuzz harness with a cheap one).
    pub(crate) async fn add_user_with_hash(&self, address: String, tenant: String, password_hash: String, smtp_auth: bool) -> Result<User> {
        let user = self.store.add_user(&self.stamp(), &NewUser { address, tenant, password_hash, smtp_auth }).await?;
        self.note_change();
        Ok(user)
    }

    pub async fn list_users(&self, tenant: Option<&str>) -> Result<Vec<User>> {
        self.store.list_users(tenant).await
    }

    /// A user by address (case-insensitive).
    pub async fn user(&self, address: &str) -> Result<Option<User>> {
        Ok(self.user_record(&address.to_lowercase()).await?.map(|r| r.user))
    }

    /// A user with the stored hash, by lower-case address: from the lookup cache or read.
    async fn user_record(&self, address: &str) -> Result<Option<UserRecord>> {
        self.cached(&self.lookups.users, address, self.store.user_record(address)).await
    }

    /// A hot-path read through the lookup cache: served from `map` within the TTL, else
    /// read by `read` (a future: it runs only on a miss) and kept unless the cache was
    /// cleared while it ran (the generation is taken before the read starts).
    async fn cached<T: Clone>(&self, map: &TtlMap<T>, key: &str, read: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        if let Some(v) = map.get(key, self.lookups.ttl) {
            return Ok(v);
        }
        let generation = self.lookups.generation();
        let value = read.await?;
        self.lookups.put(map, key, value.clone(), generation);
        Ok(value)
    }

    pub async fn set_user(&self, address: &str, changes: &UserChanges) -> Result<User> {
        let address = normalize_address(address)?;
        let user = self.store.set_user(&self.stamp(), &address, changes).await?;
        self.cache.invalidate(&address);
        self.note_change();
        Ok(user)
    }

    /// Sets a new password; the audit record says that it changed, never what to.
    pub async fn set_password(&self, address: &str, password: &str) -> Result<()> {
        let address = normalize_address(address)?;
        check_password(password)?;
        let hash = hash_blocking(password.to_string()).await?;
        self.store.set_password_hash(&self.stamp(), &address, &hash).await?;
        self.cache.invalidate(&address);
        self.note_change();
        Ok(())
    }

    // ---- authentication ------------------------------------------------------------------

    /// Checks a login against the user's row (see the module comment for when a change
    /// applies); runs argon2 only on a credentials-cache miss, off the async threads.
    pub async fn authenticate(&self, login: &str, password: &str) -> Result<AuthOutcome> {
        let address = login.trim().to_lowercase();
        let Some(UserRecord { user, password_hash: stored }) = self.user_record(&address).await? else {
            // Spend an argon2 verification anyway: the reply time must not tell that the
            // user does not exist.
            let _slot = self.argon2_slots.acquire().await;
            let dummy = match DUMMY_HASH.get() {
                Some(h) => h.clone(),
                None => {
                    let h = tokio::task::spawn_blocking(|| hash_password("mailgate-dummy").unwrap_or_default())
                        .await
                        .unwrap_or_default();
                    DUMMY_HASH.get_or_init(|| h).clone()
                }
            };
            verify_blocking(password.to_string(), dummy).await;
            return Ok(AuthOutcome::BadCredentials);
        };
        if !self.cache.hit(&address, &stored, password) {
            let _slot = self.argon2_slots.acquire().await;
            // Another session may have verified the same credentials while this one waited.
            if !self.cache.hit(&address, &stored, password) {
                if !verify_blocking(password.to_string(), stored.clone()).await {
                    return Ok(AuthOutcome::BadCredentials);
                }
                self.cache.remember(&address, &stored, password);
            }
        }
        Ok(if !user.enabled {
            AuthOutcome::AccountDisabled
        } else if !user.smtp_auth {
            AuthOutcome::SmtpAuthDisabled
        } else {
            AuthOutcome::Ok(user)
        })
    }
}

/// The sentence for a tenant that does not exist (every engine and operation says it alike).
pub(crate) fn no_tenant(name: &str) -> DirectoryError {
    DirectoryError::NotFound(format!("no tenant named {name:?}; see `mailgate tenant list`"))
}

pub(crate) fn no_user(address: &str) -> DirectoryError {
    DirectoryError::NotFound(format!("no user {address}"))
}

pub(crate) fn no_key(id: &str) -> DirectoryError {
    DirectoryError::NotFound(format!("no API key {id:?}; see `mailgate apikey list`"))
}

pub(crate) fn no_ban(kind: BanKind, target: &str) -> DirectoryError {
    DirectoryError::NotFound(format!("no {} ban of {target}; see `mailgate ban list`", kind.as_str()))
}

pub(crate) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}
/// Checks a new password's length and characters.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        return Err(DirectoryError::Invalid("the password must have at least 8 characters".into()));
    }
    if password.len() > 1024 || password.contains(['\0', '\r', '\n']) {
        return Err(DirectoryError::Invalid("the password must be at most 1024 octets, without NUL, CR or LF".into()));
    }
    Ok(())
}

async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| DirectoryError::Hash(e.to_string()))?
}

async fn verify_blocking(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc)).await.unwrap_or(false)
}

/// A random password for generated accounts: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn dir() -> (tempfile::TempDir, Directory) {
        let t = tempfile::tempdir().unwrap();
        let d = Directory::open(&t.path().join("d.sqlite")).await.unwrap();
        d.add_tenant("contoso").await.unwrap();
        d.add_domain("Contoso.TEST", "contoso").await.unwrap();
        (t, d)
    }

    #[tokio::test]
    async fn auth_outcomes_and_cache() {
        let (_t, d) = dir().await;
        d.add_user("Alice@contoso.test", "correct horse", true).await.unwrap();
        assert_eq!(d.authenticate("nobody@contoso.test", "x").await.unwrap(), AuthOutcome::BadCredentials);
        assert_eq!(d.authenticate("alice@contoso.test", "wrong one").await.unwrap(), AuthOutcome::BadCredentials);
        assert!(d.cache().is_empty());
        assert!(matches!(d.authenticate("ALICE@contoso.test", "correct horse").await.unwrap(), AuthOutcome::Ok(_)));
        assert_eq!(d.cache().len(), 1);
        // The cache never admits an old password after a change.
        d.set_password("alice@contoso.test", "battery staple").await.unwrap();
        assert_eq!(d.authenticate("alice@contoso.test", "correct horse").await.unwrap(), AuthOutcome::BadCredentials);
        assert!(matches!(d.authenticate("alice@contoso.test", "battery staple").await.unwrap(), AuthOutcome::Ok(_)));
        d.set_user("alice@contoso.test", &UserChanges { smtp_auth: Some(false), ..Default::default() }).await.unwrap();
        assert_eq!(d.authenticate("alice@contoso.test", "battery staple").await.unwrap(), AuthOutcome::SmtpAuthDisabled);
        d.set_user("alice@contoso.test", &UserChanges { enabled: Some(false), smtp_auth: Some(true) }).await.unwrap();
        assert_eq!(d.authenticate("alice@contoso.test", "battery staple").await.unwrap(), AuthOutcome::AccountDisabled);
    }

    /// A server's handle with a lookup cache of `ttl`, and the CLI's: another handle on the
    /// same database, with no cache of its own.
    async fn server_and_cli(ttl: Duration) -> (tempfile::TempDir, Directory, Directory) {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("d.sqlite");
        let server = Directory::open(&path).await.unwrap().with_lookup_cache(ttl);
        let cli = Directory::open(&path).await.unwrap();
        (t, server, cli)
    }

    #[tokio::test]
    async fn lookup_cache_serves_reads_and_is_cleared_by_changes() {
        let (_t, server, cli) = server_and_cli(Duration::from_secs(3600)).await;
        cli.add_tenant("contoso").await.unwrap();
        cli.add_domain("contoso.test", "contoso").await.unwrap();
        cli.add_user("alice@contoso.test", "correct horse", true).await.unwrap();
        assert!(cli.made_changes() && !server.made_changes());
        assert!(matches!(server.authenticate("alice@contoso.test", "correct horse").await.unwrap(), AuthOutcome::Ok(_)));
        assert_eq!(server.domain_tenant("contoso.test").await.unwrap().as_deref(), Some("contoso"));
        assert!(server.user("bob@contoso.test").await.unwrap().is_none());

        // Changed by the CLI: the server keeps what it read until told...
        cli.set_user("alice@contoso.test", &UserChanges { smtp_auth: Some(false), ..Default::default() }).await.unwrap();
        cli.add_user("bob@contoso.test", "long enough", true).await.unwrap();
        assert!(matches!(server.authenticate("alice@contoso.test", "correct horse").await.unwrap(), AuthOutcome::Ok(_)));
        assert!(server.user("bob@contoso.test").await.unwrap().is_none(), "a negative answer is cached too");
        // ...and reads again once told (the control socket's `directory-changed`).
        server.lookups_changed();
        assert_eq!(server.authenticate("alice@contoso.test", "correct horse").await.unwrap(), AuthOutcome::SmtpAuthDisabled);
        assert!(server.user("bob@contoso.test").await.unwrap().is_some());

        // A change made through the server's own handle clears its cache at once.
        server.set_password("alice@contoso.test", "battery staple").await.unwrap();
        server.set_user("alice@contoso.test", &UserChanges { smtp_auth: Some(true), ..Default::default() }).await.unwrap();
        assert_eq!(server.authenticate("alice@contoso.test", "correct horse").await.unwrap(), AuthOutcome::BadCredentials);
        assert!(matches!(server.authenticate("alice@contoso.test", "battery staple").await.unwrap(), AuthOutcome::Ok(_)));

        // A row read before a clear is not stored after it (the generation moved on).
        let before = server.lookups.generation();
        server.lookups_changed();
        server.lookups.put(&server.lookups.domains, "stale.test", Some("contoso".into()), before);
        assert!(server.lookups.domains.get("stale.test", Duration::from_secs(3600)).is_none());

        // With a zero TTL (the CLI's), nothing is kept.
        cli.domain_tenant("contoso.test").await.unwrap();
        assert!(cli.lookups.domains.get("contoso.test", Duration::from_secs(3600)).is_none());
    }

    #[tokio::test]
    async fn lookup_cache_entries_expire() {
        let (_t, server, cli) = server_and_cli(Duration::from_secs(3600)).await;
        cli.add_tenant("contoso").await.unwrap();
        assert_eq!(server.domain_tenant("contoso.test").await.unwrap(), None);
        let kept = |ttl| server.lookups.domains.get("contoso.test", ttl);
        assert_eq!(kept(Duration::from_secs(3600)), Some(None), "the negative answer is kept within its TTL");
        assert_eq!(kept(Duration::ZERO), None, "an entry as old as its TTL is not served");
    }

    #[tokio::test]
    async fn operations_validate_input() {
        let (_t, d) = dir().await;
        assert!(matches!(d.add_tenant("contoso").await, Err(DirectoryError::Exists(_))));
        assert!(matches!(d.add_tenant("bad name").await, Err(DirectoryError::Invalid(_))));
        assert!(matches!(d.add_domain("x.test", "nope").await, Err(DirectoryError::NotFound(_))));
        assert!(matches!(d.add_user("bob@other.test", "long enough", true).await, Err(DirectoryError::NotFound(_))));
        assert!(matches!(d.add_user("bob@contoso.test", "short", true).await, Err(DirectoryError::Invalid(_))));
        assert!(matches!(d.add_user("not-an-address", "long enough", true).await, Err(DirectoryError::Invalid(_))));
        assert_eq!(d.domain_tenant("CONTOSO.test").await.unwrap().as_deref(), Some("contoso"));
        let t = d.tenant("contoso").await.unwrap();
        assert_eq!(t.domains, vec!["contoso.test".to_string()]);
        assert_eq!(t.legacy, LegacySettings::default());
    }

    #[tokio::test]
    async fn legacy_settings_round_trip_and_veto() {
        let (_t, d) = dir().await;
        let until = chrono::NaiveDate::from_ymd_opt(2027, 3, 31);
        let s = d
            .set_legacy(
                "contoso",
                &LegacyChanges {
                    allowed: Some(true),
                    until: Some(until),
                    users: Some(vec!["Scanner@Contoso.test".into()]),
                    networks: Some(vec!["10.1.2.3/16".parse().unwrap()]),
                    forbidden: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(s.users, vec!["scanner@contoso.test".to_string()]);
        assert_eq!(s.networks[0].to_string(), "10.1.0.0/16");
        assert_eq!(d.legacy_settings("contoso").await.unwrap(), s);
        let vetoed = d.set_legacy("contoso", &LegacyChanges { forbidden: Some(true), ..Default::default() }).await.unwrap();
        assert!(vetoed.forbidden);
        let err = d.set_legacy("contoso", &LegacyChanges { allowed: Some(true), ..Default::default() }).await;
        assert!(matches!(err, Err(DirectoryError::Vetoed(m)) if m.contains("forbade")));
        assert!(matches!(d.legacy_settings("nope").await, Err(DirectoryError::NotFound(_))));
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;

    #[tokio::test]
    async fn every_change_is_one_audit_record_with_its_actor() {
        let t = tempfile::tempdir().unwrap();
        let d = Directory::open(&t.path().join("d.sqlite")).await.unwrap();
        let admin = d.acting_as(AuditActor { actor: "key:abc".into(), scope: "contoso".into() });
        d.add_tenant("contoso").await.unwrap();
        d.add_domain("contoso.test", "contoso").await.unwrap();
        admin.add_user("scanner@contoso.test", "long enough", true).await.unwrap();
        admin.set_user("scanner@contoso.test", &UserChanges { smtp_auth: Some(false), ..Default::default() }).await.unwrap();
        admin.set_password("scanner@contoso.test", "secret password 1").await.unwrap();
        let until = chrono::NaiveDate::from_ymd_opt(2027, 3, 31);
        admin.set_legacy("contoso", &LegacyChanges { allowed: Some(true), until: Some(until), ..Default::default() }).await.unwrap();
        // Refused changes leave no record.
        assert!(admin.add_user("scanner@contoso.test", "long enough", true).await.is_err());
        assert!(d.add_tenant("contoso").await.is_err());
        let all = d.audit_list(&AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
        let actions: Vec<(&str, &str, &str)> = all.iter().rev().map(|r| (r.action.as_str(), r.actor.as_str(), r.object.as_str())).collect();
        assert_eq!(
            actions,
            [
                ("tenant.add", "system", "contoso"),
                ("domain.add", "system", "contoso.test"),
                ("user.add", "key:abc", "scanner@contoso.test"),
                ("user.set", "key:abc", "scanner@contoso.test"),
                ("user.passwd", "key:abc", "scanner@contoso.test"),
                ("tenant.legacy", "key:abc", "contoso"),
            ]
        );
        let legacy = &all[0];
        assert_eq!(legacy.before.as_ref().unwrap()["allowed"], false);
        assert_eq!(legacy.after.as_ref().unwrap()["until"], "2027-03-31");
        let text = serde_json::to_string(&all).unwrap();
        assert!(!text.contains("secret password") && !text.contains("argon2"), "no password nor hash in the log");
        assert_eq!(all[2].before.as_ref().unwrap()["smtp_auth"], true);
        assert_eq!(all[2].after.as_ref().unwrap()["smtp_auth"], false);
        let mine = d.audit_list(&AuditFilter { tenant: Some("other".into()), limit: 100, ..Default::default() }).await.unwrap();
        assert!(mine.is_empty());
    }
}
