//! The directory in SQLite: a file in the data directory, WAL mode so that the CLI can
//! write while a server reads, the schema in `migrations/directory/` applied at open.
//!
//! Read-modify-write changes start with a no-op `UPDATE` of the row: a SQLite transaction
//! takes the write lock at its first write, so the row read next is still current when it
//! is written back (two concurrent changes serialise instead of losing one).

use super::audit::{json, AuditFilter, AuditRecord, Change};
use super::store::{DirectoryStore, NewKeyRow, NewUser, Stamp, UserRecord};
use super::{no_ban, Ban, BanKind};
use super::{no_key, no_tenant, no_user, split_list, ApiKey, DirectoryError, Domain, LegacyChanges, LegacySettings, Result, Tenant, User, UserChanges};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The directory's schema history (`migrations/directory/`), applied at open.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/directory");

/// Columns added to `tenants` before migrations were numbered: a database made then may
/// lack some, and gets them at open before the numbered migrations run.
const TENANT_COLUMNS: [(&str, &str); 5] = [
    ("allow_legacy_tls", "INTEGER NOT NULL DEFAULT 0"),
    ("legacy_until", "TEXT"),
    ("legacy_users", "TEXT NOT NULL DEFAULT ''"),
    ("legacy_networks", "TEXT NOT NULL DEFAULT ''"),
    ("forbid_legacy_tls", "INTEGER NOT NULL DEFAULT 0"),
];

const USER_SELECT_ALL: &str = "SELECT u.address, u.enabled, u.smtp_auth, t.name AS tenant FROM users u JOIN tenants t ON t.id = u.tenant_id ORDER BY t.name, u.address";
const USER_SELECT_BY_TENANT: &str = "SELECT u.address, u.enabled, u.smtp_auth, t.name AS tenant FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.tenant_id = ? ORDER BY u.address";
const USER_SELECT_ONE: &str = "SELECT u.address, u.enabled, u.smtp_auth, u.password_hash, t.name AS tenant FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.address = ?";
const BAN_SELECT: &str = "SELECT id, kind, target, reason, created_at, expires_at, created_by FROM bans";
const KEY_SELECT: &str = "SELECT id, secret_sha256, tenant, description, expires, allow_ips, created_at, created_by, revoked_at, last_used_at FROM api_keys";

/// The SQLite directory store.
#[derive(Clone)]
pub struct SqliteDirectory {
    pool: SqlitePool,
}

impl SqliteDirectory {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteDirectory> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| DirectoryError::Invalid(format!("cannot create {}: {e}", parent.display())))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file: a ping before each query (the default) tells nothing the query
            // would not, and costs a round trip to the connection's thread.
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        upgrade_unnumbered(&pool).await?;
        MIGRATOR.run(&pool).await.map_err(|e| DirectoryError::Migrate(e.to_string()))?;
        Ok(SqliteDirectory { pool })
    }

    async fn tenant_id(&self, name: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| no_tenant(name))
    }
}

#[async_trait::async_trait]
impl DirectoryStore for SqliteDirectory {
    async fn add_tenant(&self, stamp: &Stamp, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(stamp.now)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(DirectoryError::Exists(format!("tenant {name}")));
        }
        let after = serde_json::json!({ "name": name });
        audit(&mut tx, stamp, &Change::new(Some(name), "tenant.add", name).after(after)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM tenants ORDER BY name").fetch_all(&self.pool).await?)
    }

    async fn tenant(&self, name: &str) -> Result<Tenant> {
        let id = self.tenant_id(name).await?;
        let domains = sqlx::query_scalar("SELECT name FROM domains WHERE tenant_id = ? ORDER BY name")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let users = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = ?").bind(id).fetch_one(&self.pool).await?;
        let legacy = self.legacy_settings(name).await?;
        Ok(Tenant { name: name.to_string(), domains, users, legacy })
    }

    async fn tenant_exists(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, i64>("SELECT id FROM tenants WHERE name = ?").bind(name).fetch_optional(&self.pool).await?.is_some())
    }

    async fn legacy_settings(&self, tenant: &str) -> Result<LegacySettings> {
        let mut conn = self.pool.acquire().await?;
        read_legacy_settings(&mut conn, tenant).await
    }

    async fn set_legacy(&self, stamp: &Stamp, tenant: &str, changes: &LegacyChanges) -> Result<LegacySettings> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE name = ?").bind(tenant).execute(&mut *tx).await?;
        if locked.rows_affected() == 0 {
            return Err(no_tenant(tenant));
        }
        let before = read_legacy_settings(&mut tx, tenant).await?;
        let s = changes.apply(tenant, before.clone())?;
        sqlx::query(
            "UPDATE tenants SET allow_legacy_tls = ?, legacy_until = ?, legacy_users = ?, legacy_networks = ?, forbid_legacy_tls = ?
             WHERE name = ?",
        )
        .bind(s.allowed)
        .bind(s.until.map(|d| d.to_string()))
        .bind(s.users.join(","))
        .bind(s.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","))
        .bind(s.forbidden)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        let change = Change::new(Some(tenant), "tenant.legacy", tenant).before(json(&before)).after(json(&s));
        audit(&mut tx, stamp, &change).await?;
        tx.commit().await?;
        Ok(s)
    }

    async fn add_domain(&self, stamp: &Stamp, domain: &str, tenant: &str) -> Result<()> {
        let id = self.tenant_id(tenant).await?;
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("INSERT INTO domains (name, tenant_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(domain)
            .bind(id)
            .bind(stamp.now)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(DirectoryError::Exists(format!("accepted domain {domain}")));
        }
        let after = serde_json::json!({ "name": domain, "tenant": tenant });
        audit(&mut tx, stamp, &Change::new(Some(tenant), "domain.add", domain).after(after)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_domains(&self, tenant: Option<&str>) -> Result<Vec<Domain>> {
        let rows = sqlx::query(
            "SELECT d.name, t.name AS tenant FROM domains d JOIN tenants t ON t.id = d.tenant_id
             WHERE ?1 IS NULL OR t.name = ?1 ORDER BY d.name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| Domain { name: r.get("name"), tenant: r.get("tenant") }).collect())
    }

    async fn domain_tenant(&self, domain: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT t.name FROM domains d JOIN tenants t ON t.id = d.tenant_id WHERE d.name = ?")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn add_user(&self, stamp: &Stamp, new: &NewUser) -> Result<User> {
        let tenant_id = self.tenant_id(&new.tenant).await?;
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO users (tenant_id, address, password_hash, enabled, smtp_auth, created_at, updated_at)
             VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&new.address)
        .bind(&new.password_hash)
        .bind(new.smtp_auth)
        .bind(stamp.now)
        .bind(stamp.now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(DirectoryError::Exists(format!("user {}", new.address)));
        }
        let user = User { address: new.address.clone(), tenant: new.tenant.clone(), enabled: true, smtp_auth: new.smtp_auth };
        audit(&mut tx, stamp, &Change::new(Some(&user.tenant), "user.add", &user.address).after(json(&user))).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn list_users(&self, tenant: Option<&str>) -> Result<Vec<User>> {
        let rows = match tenant {
            Some(t) => {
                let id = self.tenant_id(t).await?;
                sqlx::query(USER_SELECT_BY_TENANT).bind(id).fetch_all(&self.pool).await?
            }
            None => sqlx::query(USER_SELECT_ALL).fetch_all(&self.pool).await?,
        };
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn user_record(&self, address: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(USER_SELECT_ONE).bind(address).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(|row| UserRecord { user: user_from_row(row), password_hash: row.get("password_hash") }))
    }

    async fn set_user(&self, stamp: &Stamp, address: &str, changes: &UserChanges) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query("UPDATE users SET updated_at = updated_at WHERE address = ?").bind(address).execute(&mut *tx).await?;
        if locked.rows_affected() == 0 {
            return Err(no_user(address));
        }
        let before = read_user(&mut tx, address).await?;
        sqlx::query(
            "UPDATE users SET enabled = COALESCE(?, enabled), smtp_auth = COALESCE(?, smtp_auth), updated_at = ?
             WHERE address = ?",
        )
        .bind(changes.enabled)
        .bind(changes.smtp_auth)
        .bind(stamp.now)
        .bind(address)
        .execute(&mut *tx)
        .await?;
        let after = read_user(&mut tx, address).await?;
        let change = Change::new(Some(&after.tenant), "user.set", address).before(json(&before)).after(json(&after));
        audit(&mut tx, stamp, &change).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn set_password_hash(&self, stamp: &Stamp, address: &str, password_hash: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE address = ?")
            .bind(password_hash)
            .bind(stamp.now)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(no_user(address));
        }
        let tenant = read_user(&mut tx, address).await?.tenant;
        audit(&mut tx, stamp, &Change::new(Some(&tenant), "user.passwd", address)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_api_key(&self, stamp: &Stamp, new: &NewKeyRow) -> Result<ApiKey> {
        if let Some(t) = &new.tenant {
            self.tenant_id(t).await?;
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, secret_sha256, tenant, description, expires, allow_ips, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(new.secret_sha256.to_vec())
        .bind(new.tenant.as_deref())
        .bind(&new.description)
        .bind(new.expires.map(|d| d.to_string()))
        .bind(new.allow_ips.join(","))
        .bind(stamp.now)
        .bind(&stamp.actor.actor)
        .execute(&mut *tx)
        .await?;
        let key = read_key(&mut tx, &new.id).await?.ok_or_else(|| no_key(&new.id))?.0;
        audit(&mut tx, stamp, &Change::new(new.tenant.as_deref(), "apikey.add", &new.id).after(json(&key))).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!("{KEY_SELECT} WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at DESC, id"))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| key_from_row(r).0).collect())
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, [u8; 32])>> {
        let mut conn = self.pool.acquire().await?;
        read_key(&mut conn, id).await
    }

    async fn revoke_api_key(&self, stamp: &Stamp, id: &str) -> Result<ApiKey> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(stamp.now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let Some((key, _)) = read_key(&mut tx, id).await? else { return Err(no_key(id)) };
        if r.rows_affected() == 0 {
            return Err(DirectoryError::Exists(format!("the revocation of API key {id}")));
        }
        let before = json(&ApiKey { revoked_at: None, ..key.clone() });
        audit(&mut tx, stamp, &Change::new(key.tenant.as_deref(), "apikey.revoke", id).before(before).after(json(&key))).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn mark_api_key_used(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?").bind(at).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn put_ban(&self, stamp: &Stamp, kind: BanKind, target: &str, reason: &str, expires_at: i64) -> Result<Ban> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bans WHERE expires_at <= ?").bind(stamp.now).execute(&mut *tx).await?;
        let before = read_ban(&mut tx, kind, target).await?;
        sqlx::query(
            "INSERT INTO bans (kind, target, reason, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, expires_at = excluded.expires_at",
        )
        .bind(kind.as_str())
        .bind(target)
        .bind(reason)
        .bind(stamp.now)
        .bind(expires_at)
        .bind(&stamp.actor.actor)
        .execute(&mut *tx)
        .await?;
        let ban = read_ban(&mut tx, kind, target).await?.ok_or_else(|| no_ban(kind, target))?;
        let mut change = Change::new(None, "ban.add", target).after(json(&ban));
        if let Some(b) = before {
            change = change.before(json(&b));
        }
        audit(&mut tx, stamp, &change).await?;
        tx.commit().await?;
        Ok(ban)
    }

    async fn remove_ban(&self, stamp: &Stamp, kind: BanKind, target: &str) -> Result<Ban> {
        let mut tx = self.pool.begin().await?;
        let ban = read_ban(&mut tx, kind, target).await?.filter(|b| b.expires_at > stamp.now).ok_or_else(|| no_ban(kind, target))?;
        sqlx::query("DELETE FROM bans WHERE id = ?").bind(ban.id).execute(&mut *tx).await?;
        audit(&mut tx, stamp, &Change::new(None, "ban.remove", target).before(json(&ban))).await?;
        tx.commit().await?;
        Ok(ban)
    }

    async fn bans(&self, now: i64) -> Result<Vec<Ban>> {
        let rows = sqlx::query(&format!("{BAN_SELECT} WHERE expires_at > ? ORDER BY created_at DESC, id DESC"))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ban_from_row).collect()
    }

    async fn record_change(&self, stamp: &Stamp, change: &Change<'_>) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        audit(&mut conn, stamp, change).await
    }

    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, time, actor, scope, tenant, action, object, before, after FROM audit
             WHERE (?1 IS NULL OR tenant = ?1) AND time >= ?2 ORDER BY id DESC LIMIT ?3",
        )
        .bind(filter.tenant.as_deref())
        .bind(filter.since)
        .bind(filter.limit.max(1) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }
}

/// Writes the record of `change` on `conn` (the change's own transaction).
async fn audit(conn: &mut SqliteConnection, stamp: &Stamp, change: &Change<'_>) -> Result<()> {
    let text = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    sqlx::query("INSERT INTO audit (time, actor, scope, tenant, action, object, before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(stamp.now)
        .bind(&stamp.actor.actor)
        .bind(&stamp.actor.scope)
        .bind(change.tenant)
        .bind(change.action)
        .bind(change.object)
        .bind(text(&change.before))
        .bind(text(&change.after))
        .execute(conn)
        .await?;
    Ok(())
}

fn audit_from_row(r: &SqliteRow) -> Result<AuditRecord> {
    let value = |s: Option<String>| -> Result<Option<serde_json::Value>> {
        s.map(|s| serde_json::from_str(&s).map_err(|e| DirectoryError::Invalid(format!("unreadable audit record: {e}"))))
            .transpose()
    };
    Ok(AuditRecord {
        id: r.get("id"),
        time: r.get("time"),
        actor: r.get("actor"),
        scope: r.get("scope"),
        tenant: r.get("tenant"),
        action: r.get("action"),
        object: r.get("object"),
        before: value(r.get("before"))?,
        after: value(r.get("after"))?,
    })
}

/// Reads a tenant's legacy settings on `conn` (the pool's, or a change's transaction).
async fn read_legacy_settings(conn: &mut SqliteConnection, tenant: &str) -> Result<LegacySettings> {
    let row = sqlx::query(
        "SELECT allow_legacy_tls, legacy_until, legacy_users, legacy_networks, forbid_legacy_tls FROM tenants WHERE name = ?",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| no_tenant(tenant))?;
    let until: Option<String> = row.get("legacy_until");
    let users: String = row.get("legacy_users");
    let networks: String = row.get("legacy_networks");
    // Values are validated when set; one that no longer parses fails closed (an error,
    // so a session gets a temporary failure) rather than widening the opt-in.
    let unreadable = |what: &str| DirectoryError::Invalid(format!("tenant {tenant}: stored {what} is unreadable; set it again"));
    let until = match until {
        Some(u) => Some(chrono::NaiveDate::parse_from_str(&u, "%Y-%m-%d").map_err(|_| unreadable("legacy_until"))?),
        None => None,
    };
    let networks = split_list(&networks)
        .map(|n| n.parse().map_err(|_| unreadable("legacy_networks")))
        .collect::<Result<Vec<ipnet::IpNet>>>()?;
    Ok(LegacySettings {
        allowed: row.get("allow_legacy_tls"),
        until,
        users: split_list(&users).map(String::from).collect(),
        networks,
        forbidden: row.get("forbid_legacy_tls"),
    })
}

/// A user on `conn`; `NotFound` if there is none.
async fn read_user(conn: &mut SqliteConnection, address: &str) -> Result<User> {
    let row = sqlx::query(USER_SELECT_ONE).bind(address).fetch_optional(&mut *conn).await?;
    row.as_ref().map(user_from_row).ok_or_else(|| no_user(address))
}

fn user_from_row(row: &SqliteRow) -> User {
    User { address: row.get("address"), tenant: row.get("tenant"), enabled: row.get("enabled"), smtp_auth: row.get("smtp_auth") }
}

async fn read_key(conn: &mut SqliteConnection, id: &str) -> Result<Option<(ApiKey, [u8; 32])>> {
    let row = sqlx::query(&format!("{KEY_SELECT} WHERE id = ?")).bind(id).fetch_optional(&mut *conn).await?;
    Ok(row.as_ref().map(key_from_row))
}

fn key_from_row(r: &SqliteRow) -> (ApiKey, [u8; 32]) {
    let tenant: Option<String> = r.get("tenant");
    let expires: Option<String> = r.get("expires");
    let allow: String = r.get("allow_ips");
    let digest: Vec<u8> = r.get("secret_sha256");
    let key = ApiKey {
        id: r.get("id"),
        scope: if tenant.is_some() { "tenant" } else { "operator" }.to_string(),
        tenant,
        description: r.get("description"),
        expires: expires.and_then(|e| chrono::NaiveDate::parse_from_str(&e, "%Y-%m-%d").ok()),
        allow_ips: split_list(&allow).map(String::from).collect(),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        revoked_at: r.get("revoked_at"),
        last_used_at: r.get("last_used_at"),
    };
    // A digest of the wrong length matches no secret.
    (key, digest.try_into().unwrap_or([0u8; 32]))
}

async fn read_ban(conn: &mut SqliteConnection, kind: BanKind, target: &str) -> Result<Option<Ban>> {
    let row = sqlx::query(&format!("{BAN_SELECT} WHERE kind = ? AND target = ?")).bind(kind.as_str()).bind(target).fetch_optional(&mut *conn).await?;
    row.as_ref().map(ban_from_row).transpose()
}

fn ban_from_row(r: &SqliteRow) -> Result<Ban> {
    let kind: String = r.get("kind");
    Ok(Ban {
        id: r.get("id"),
        kind: BanKind::parse(&kind).ok_or_else(|| DirectoryError::Invalid(format!("unreadable ban kind {kind:?}")))?,
        target: r.get("target"),
        reason: r.get("reason"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        created_by: r.get("created_by"),
    })
}

/// Brings a database made before migrations were numbered to migration 1: adds the
/// tenant columns it lacks (a new database has no `tenants` table yet: nothing to do).
async fn upgrade_unnumbered(pool: &SqlitePool) -> Result<()> {
    let existing: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('tenants')").fetch_all(pool).await?;
    if existing.is_empty() {
        return Ok(());
    }
    for (column, decl) in TENANT_COLUMNS {
        if !existing.iter().any(|c| c == column) {
            sqlx::query(&format!("ALTER TABLE tenants ADD COLUMN {column} {decl}")).execute(pool).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{AuditActor, Directory, NewKey};
    use std::sync::Arc;

    #[tokio::test]
    async fn changes_are_stamped_with_the_injected_clock() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("d.sqlite");
        let at = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let d = Directory::open(&path).await.unwrap().with_clock(Arc::new(move || at));
        d.add_tenant("contoso").await.unwrap();
        d.add_domain("contoso.test", "contoso").await.unwrap();
        let store = SqliteDirectory::open(&path).await.unwrap();
        let stamps: Vec<i64> = sqlx::query_scalar("SELECT created_at FROM tenants UNION ALL SELECT created_at FROM domains UNION ALL SELECT time FROM audit")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(stamps, vec![1_900_000_000; 4]);
    }

    #[tokio::test]
    async fn a_database_made_before_numbered_migrations_is_upgraded() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("d.sqlite");
        {
            let pool = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);
                 INSERT INTO tenants (name, created_at) VALUES ('old', 1);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let d = Directory::open(&path).await.unwrap();
        assert_eq!(d.legacy_settings("old").await.unwrap(), LegacySettings::default());
        d.add_api_key(&NewKey { tenant: Some("old".into()), ..Default::default() }).await.unwrap();
        let store = SqliteDirectory::open(&path).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&store.pool).await.unwrap();
        assert_eq!(versions, vec![1, 2, 3]);
    }

    /// The store alone, without the `Directory` in front: a failed write leaves no audit
    /// record, a successful one exactly one, stamped with its `Stamp`.
    #[tokio::test]
    async fn every_store_write_carries_its_own_audit_record() {
        let t = tempfile::tempdir().unwrap();
        let store = SqliteDirectory::open(&t.path().join("d.sqlite")).await.unwrap();
        let stamp = Stamp { now: 42, actor: AuditActor { actor: "key:k1".into(), scope: "operator".into() } };
        store.add_tenant(&stamp, "contoso").await.unwrap();
        assert!(matches!(store.add_tenant(&stamp, "contoso").await, Err(DirectoryError::Exists(_))));
        assert!(matches!(store.add_domain(&stamp, "x.test", "nope").await, Err(DirectoryError::NotFound(_))));
        assert!(matches!(store.set_user(&stamp, "no@x.test", &UserChanges::default()).await, Err(DirectoryError::NotFound(_))));
        let vetoed = LegacyChanges { forbidden: Some(true), allowed: Some(true), ..Default::default() };
        assert!(matches!(store.set_legacy(&stamp, "contoso", &vetoed).await, Err(DirectoryError::Vetoed(_))));
        let records = store.audit_list(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].time, records[0].actor.as_str(), records[0].action.as_str()), (42, "key:k1", "tenant.add"));
        assert_eq!(store.legacy_settings("contoso").await.unwrap(), LegacySettings::default(), "the vetoed change left nothing");
    }
}
