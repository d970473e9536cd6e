//! Where usage events live: the [`UsageStore`] trait and its SQLite implementation.
//!
//! Two tables: `usage_events` (one row per connection, kept `raw_days`) and `usage_daily`
//! (one row per day, tenant, sender, endpoint, TLS version, suite, fingerprint and outcome, with
//! counts and the last device details seen, kept `rollup_days`). A batch of events is
//! written in one transaction: the raw rows and the rollup upserts together, so reports,
//! which read the rollups, are always current. A separate database file
//! (`usage.sqlite`) keeps this write load apart from the directory.

use super::{Outcome, UsageEvent};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// How long data is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw_days: u32,
    pub rollup_days: u32,
}

/// One rollup row: a day of one (tenant, sender, endpoint, version, cipher, fingerprint,
/// outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyRow {
    pub day: NaiveDate,
    /// Empty when no tenant is known (an attempt that never reached AUTH).
    pub tenant: String,
    /// The user or login; `[address]` when none is known.
    pub sender: String,
    pub endpoint: String,
    /// Negotiated version; empty when no handshake completed.
    pub version: String,
    /// Negotiated suite (IANA name); empty when no handshake completed.
    pub cipher: String,
    pub fingerprint: String,
    pub outcome: Outcome,
    pub sessions: i64,
    pub messages: i64,
    pub bytes: i64,
    pub last_seen: i64,
    pub ehlo: String,
    pub sni: String,
    pub client_ip: String,
    pub offered_max: String,
    /// The suites the latest hello offered (space-separated IANA names).
    pub offered_ciphers: String,
}

/// Which rollups a report reads.
#[derive(Debug, Clone)]
pub struct RollupFilter {
    pub tenant: Option<String>,
    pub from: NaiveDate,
    /// Inclusive.
    pub to: NaiveDate,
}

/// The storage behind usage recording and reports.
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// Stores a batch: raw events and rollups, in one transaction.
    async fn write_batch(&self, events: &[UsageEvent]) -> Result<()>;
    /// Deletes raw events and rollups older than the retention allows.
    async fn apply_retention(&self, now: DateTime<Utc>, retention: Retention) -> Result<(u64, u64)>;
    /// Rollup rows in a period, for one tenant or all.
    async fn rollups(&self, filter: &RollupFilter) -> Result<Vec<DailyRow>>;
    /// The period's rollups summed per (tenant, sender, endpoint, version, cipher, fingerprint,
    /// outcome), with the device details of the latest row: what reports read. `day` is
    /// the period's last day.
    async fn period_totals(&self, filter: &RollupFilter) -> Result<Vec<DailyRow>>;
    /// Raw events in a period (newest first, at most `limit`), for one tenant or all.
    async fn events(&self, filter: &RollupFilter, limit: u32) -> Result<Vec<UsageEvent>>;
}

/// The schema of migration 1, also used by [`upgrade`] to rebuild the rollups.
const SCHEMA: &str = include_str!("../../migrations/usage/0001_initial.sql");

/// The usage store's schema history (`migrations/usage/`), applied at open.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/usage");

/// Brings a store made before the suites were recorded up to [`SCHEMA`]: `usage_events`
/// gains `offered_ciphers`; `usage_daily` is rebuilt with `cipher` in its key (its old
/// rows keep an empty suite). One transaction; run before `SCHEMA`'s indexes are used.
const UPGRADE_DAILY: &str = r#"
ALTER TABLE usage_daily RENAME TO usage_daily_old;
DROP INDEX IF EXISTS usage_daily_day;
"#;

async fn has_column(pool: &SqlitePool, table: &str, column: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"))
        .fetch_one(pool)
        .await?;
    Ok(n > 0)
}

async fn upgrade(pool: &SqlitePool) -> Result<()> {
    let events_exist: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage_events'")
        .fetch_one(pool)
        .await?;
    if events_exist == 0 {
        return Ok(());
    }
    // Asked before the transaction: the pool has one connection.
    let events_new = has_column(pool, "usage_events", "offered_ciphers").await?;
    let daily_old = !has_column(pool, "usage_daily", "cipher").await? && has_column(pool, "usage_daily", "day").await?;
    let mut tx = pool.begin().await?;
    if !events_new {
        sqlx::query("ALTER TABLE usage_events ADD COLUMN offered_ciphers TEXT").execute(&mut *tx).await?;
    }
    if daily_old {
        sqlx::Executor::execute(&mut *tx, UPGRADE_DAILY).await?;
        sqlx::Executor::execute(&mut *tx, SCHEMA).await?;
        sqlx::query(
            "INSERT INTO usage_daily (tenant, day, sender, endpoint, version, fingerprint, outcome, sessions, messages, bytes, \
             last_seen, ehlo, sni, client_ip, offered_max) SELECT tenant, day, sender, endpoint, version, fingerprint, outcome, \
             sessions, messages, bytes, last_seen, ehlo, sni, client_ip, offered_max FROM usage_daily_old",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DROP TABLE usage_daily_old").execute(&mut *tx).await?;
        tracing::info!("usage store upgraded: rollups now keep the negotiated cipher suite");
    }
    tx.commit().await
}

/// SQLite usage store.
#[derive(Clone)]
pub struct SqliteUsageStore {
    pool: SqlitePool,
}

impl SqliteUsageStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One connection: the writer is the only writer, and PRAGMAs then hold for all use.
        let pool = SqlitePoolOptions::new().max_connections(1).test_before_acquire(false).connect_with(opts).await?;
        upgrade(&pool).await?;
        MIGRATOR.run(&pool).await.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(SqliteUsageStore { pool })
    }

    /// Opens for a bulk load (synthetic data): no fsync per transaction.
    pub async fn open_bulk(path: &Path) -> Result<Self> {
        let store = Self::open(path).await?;
        sqlx::query("PRAGMA synchronous = OFF").execute(&store.pool).await?;
        Ok(store)
    }

    /// Adds rollup rows (synthetic data for benchmarks), with the writer's own upsert.
    pub async fn insert_rollups(&self, rows: &[DailyRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        upsert_rollups(&mut tx, rows).await?;
        tx.commit().await
    }

    /// Inserts raw events only (synthetic data for benchmarks).
    pub async fn insert_raw(&self, events: &[UsageEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_raw(&mut tx, events).await?;
        tx.commit().await
    }
}

fn day_of(time: i64) -> NaiveDate {
    DateTime::from_timestamp(time, 0).unwrap_or_default().date_naive()
}

async fn insert_raw(tx: &mut sqlx::Transaction<'_, Sqlite>, events: &[UsageEvent]) -> Result<()> {
    for chunk in events.chunks(500) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO usage_events (time, node, endpoint, client_ip, offered_max, version, cipher, sni, fingerprint, ehlo, user, tenant, outcome, messages, bytes, offered_ciphers, session) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.time)
                .push_bind(&e.node)
                .push_bind(&e.endpoint)
                .push_bind(&e.client_ip)
                .push_bind(&e.offered_max)
                .push_bind(&e.version)
                .push_bind(&e.cipher)
                .push_bind(&e.sni)
                .push_bind(&e.fingerprint)
                .push_bind(&e.ehlo)
                .push_bind(&e.user)
                .push_bind(&e.tenant)
                .push_bind(e.outcome.as_str())
                .push_bind(e.messages as i64)
                .push_bind(e.bytes as i64)
                .push_bind(&e.offered_ciphers)
                .push_bind(&e.session);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Of several events of one session in a batch, the last: it says all the earlier did.
fn latest_per_session(events: &[UsageEvent]) -> Vec<&UsageEvent> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(k) = &e.session {
            last.insert(k, i);
        }
    }
    events.iter().enumerate().filter(|(i, e)| e.session.as_deref().is_none_or(|k| last[k] == *i)).map(|(_, e)| e).collect()
}

/// Removes the stored event of `session`, if any, and its share of the rollups: the event
/// about to be stored replaces it.
async fn retract_session(tx: &mut sqlx::Transaction<'_, Sqlite>, session: &str) -> Result<()> {
    let Some(row) = sqlx::query("SELECT rowid, * FROM usage_events WHERE session = ?").bind(session).fetch_optional(&mut **tx).await? else {
        return Ok(());
    };
    let old = event_from_sql(&row);
    let rowid: i64 = row.get("rowid");
    sqlx::query("DELETE FROM usage_events WHERE rowid = ?").bind(rowid).execute(&mut **tx).await?;
    for r in rollup(std::slice::from_ref(&old)) {
        const UPDATE: &str = "UPDATE usage_daily SET sessions = sessions - ?, messages = messages - ?, bytes = bytes - ? \
             WHERE tenant = ? AND day = ? AND sender = ? AND endpoint = ? AND version = ? AND cipher = ? AND fingerprint = ? AND outcome = ?";
        const DELETE: &str = "DELETE FROM usage_daily WHERE sessions <= 0 AND messages <= 0 \
             AND tenant = ? AND day = ? AND sender = ? AND endpoint = ? AND version = ? AND cipher = ? AND fingerprint = ? AND outcome = ?";
        let day = r.day.to_string();
        let update = sqlx::query(UPDATE).bind(r.sessions).bind(r.messages).bind(r.bytes);
        let delete = sqlx::query(DELETE);
        for q in [update, delete] {
            q.bind(&r.tenant)
                .bind(&day)
                .bind(&r.sender)
                .bind(&r.endpoint)
                .bind(&r.version)
                .bind(&r.cipher)
                .bind(&r.fingerprint)
                .bind(r.outcome.as_str())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Adds rows into `usage_daily`: counts summed, device details from the latest row.
async fn upsert_rollups(tx: &mut sqlx::Transaction<'_, Sqlite>, rows: &[DailyRow]) -> Result<()> {
    for chunk in rows.chunks(500) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO usage_daily (tenant, day, sender, endpoint, version, cipher, fingerprint, outcome, sessions, messages, bytes, last_seen, ehlo, sni, client_ip, offered_max, offered_ciphers) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.tenant)
                .push_bind(r.day.to_string())
                .push_bind(&r.sender)
                .push_bind(&r.endpoint)
                .push_bind(&r.version)
                .push_bind(&r.cipher)
                .push_bind(&r.fingerprint)
                .push_bind(r.outcome.as_str())
                .push_bind(r.sessions)
                .push_bind(r.messages)
                .push_bind(r.bytes)
                .push_bind(r.last_seen)
                .push_bind(&r.ehlo)
                .push_bind(&r.sni)
                .push_bind(&r.client_ip)
                .push_bind(&r.offered_max)
                .push_bind(&r.offered_ciphers);
        });
        q.push(
            " ON CONFLICT DO UPDATE SET sessions = sessions + excluded.sessions, messages = messages + excluded.messages, \
             bytes = bytes + excluded.bytes, \
             ehlo = CASE WHEN excluded.last_seen >= last_seen THEN excluded.ehlo ELSE ehlo END, \
             sni = CASE WHEN excluded.last_seen >= last_seen THEN excluded.sni ELSE sni END, \
             client_ip = CASE WHEN excluded.last_seen >= last_seen THEN excluded.client_ip ELSE client_ip END, \
             offered_max = CASE WHEN excluded.last_seen >= last_seen THEN excluded.offered_max ELSE offered_max END, \
             offered_ciphers = CASE WHEN excluded.last_seen >= last_seen THEN excluded.offered_ciphers ELSE offered_ciphers END, \
             last_seen = MAX(last_seen, excluded.last_seen)",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Folds events into rollup rows (one per key), as the writer upserts them.
pub fn rollup(events: &[UsageEvent]) -> Vec<DailyRow> {
    /// (tenant, day, sender, endpoint, version, cipher, fingerprint, outcome): the rollup key.
    type Key = (String, NaiveDate, String, String, String, String, String, Outcome);
    let mut rows: HashMap<Key, DailyRow> = HashMap::new();
    for e in events {
        let key = (
            e.tenant.clone().unwrap_or_default(),
            day_of(e.time),
            e.sender(),
            e.endpoint.clone(),
            e.version.clone().unwrap_or_default(),
            e.cipher.clone().unwrap_or_default(),
            e.fingerprint.clone().unwrap_or_default(),
            e.outcome,
        );
        let row = rows.entry(key.clone()).or_insert_with(|| DailyRow {
            day: key.1,
            tenant: key.0.clone(),
            sender: key.2.clone(),
            endpoint: key.3.clone(),
            version: key.4.clone(),
            cipher: key.5.clone(),
            fingerprint: key.6.clone(),
            outcome: key.7,
            sessions: 0,
            messages: 0,
            bytes: 0,
            last_seen: 0,
            ehlo: String::new(),
            sni: String::new(),
            client_ip: String::new(),
            offered_max: String::new(),
            offered_ciphers: String::new(),
        });
        row.sessions += 1;
        row.messages += e.messages as i64;
        row.bytes += e.bytes as i64;
        if e.time >= row.last_seen {
            row.last_seen = e.time;
            row.ehlo = e.ehlo.clone().unwrap_or_default();
            row.sni = e.sni.clone().unwrap_or_default();
            row.client_ip = e.client_ip.clone();
            row.offered_max = e.offered_max.clone().unwrap_or_default();
            row.offered_ciphers = e.offered_ciphers.clone().unwrap_or_default();
        }
    }
    rows.into_values().collect()
}

fn event_from_sql(r: &sqlx::sqlite::SqliteRow) -> UsageEvent {
    let outcome: String = r.get("outcome");
    UsageEvent {
        time: r.get("time"),
        node: r.get("node"),
        endpoint: r.get("endpoint"),
        client_ip: r.get("client_ip"),
        offered_max: r.get("offered_max"),
        version: r.get("version"),
        cipher: r.get("cipher"),
        offered_ciphers: r.get("offered_ciphers"),
        sni: r.get("sni"),
        fingerprint: r.get("fingerprint"),
        ehlo: r.get("ehlo"),
        user: r.get("user"),
        tenant: r.get("tenant"),
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Other),
        messages: r.get::<i64, _>("messages") as u32,
        bytes: r.get::<i64, _>("bytes") as u64,
        session: r.get("session"),
    }
}

fn row_from_sql(r: &sqlx::sqlite::SqliteRow) -> DailyRow {
    let day: String = r.get("day");
    let outcome: String = r.get("outcome");
    DailyRow {
        day: NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap_or_default(),
        tenant: r.get("tenant"),
        sender: r.get("sender"),
        endpoint: r.get("endpoint"),
        version: r.get("version"),
        cipher: r.get("cipher"),
        fingerprint: r.get("fingerprint"),
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Other),
        sessions: r.get("sessions"),
        messages: r.get("messages"),
        bytes: r.get("bytes"),
        last_seen: r.get("last_seen"),
        ehlo: r.get("ehlo"),
        sni: r.get("sni"),
        client_ip: r.get("client_ip"),
        offered_max: r.get("offered_max"),
        offered_ciphers: r.get("offered_ciphers"),
    }
}

#[async_trait::async_trait]
impl UsageStore for SqliteUsageStore {
    async fn write_batch(&self, events: &[UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if events.iter().any(|e| e.session.is_some()) {
            let events: Vec<UsageEvent> = latest_per_session(events).into_iter().cloned().collect();
            for key in events.iter().filter_map(|e| e.session.as_deref()) {
                retract_session(&mut tx, key).await?;
            }
            insert_raw(&mut tx, &events).await?;
            upsert_rollups(&mut tx, &rollup(&events)).await?;
        } else {
            insert_raw(&mut tx, events).await?;
            upsert_rollups(&mut tx, &rollup(events)).await?;
        }
        tx.commit().await
    }

    async fn apply_retention(&self, now: DateTime<Utc>, r: Retention) -> Result<(u64, u64)> {
        let raw_cutoff = now.timestamp() - i64::from(r.raw_days) * 86_400;
        let day_cutoff = (now.date_naive() - chrono::Days::new(u64::from(r.rollup_days))).to_string();
        let raw = sqlx::query("DELETE FROM usage_events WHERE time < ?").bind(raw_cutoff).execute(&self.pool).await?;
        let daily = sqlx::query("DELETE FROM usage_daily WHERE day < ?").bind(day_cutoff).execute(&self.pool).await?;
        Ok((raw.rows_affected(), daily.rows_affected()))
    }

    async fn rollups(&self, f: &RollupFilter) -> Result<Vec<DailyRow>> {
        let (from, to) = (f.from.to_string(), f.to.to_string());
        let rows = match &f.tenant {
            Some(t) => {
                sqlx::query("SELECT * FROM usage_daily WHERE tenant = ? AND day >= ? AND day <= ?")
                    .bind(t)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM usage_daily WHERE day >= ? AND day <= ?")
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(row_from_sql).collect())
    }

    async fn period_totals(&self, f: &RollupFilter) -> Result<Vec<DailyRow>> {
        // SQLite: with MAX(), bare columns come from the row holding the maximum
        // (https://sqlite.org/lang_select.html#bare_columns_in_an_aggregate_query).
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT tenant, ",
        );
        q.push_bind(f.to.to_string()).push(
            " AS day, sender, endpoint, version, cipher, fingerprint, outcome, SUM(sessions) AS sessions, \
             SUM(messages) AS messages, SUM(bytes) AS bytes, MAX(last_seen) AS last_seen, ehlo, sni, client_ip, offered_max, \
             offered_ciphers \
             FROM usage_daily WHERE ",
        );
        if let Some(t) = &f.tenant {
            q.push("tenant = ").push_bind(t).push(" AND ");
        }
        q.push("day >= ").push_bind(f.from.to_string()).push(" AND day <= ").push_bind(f.to.to_string());
        q.push(" GROUP BY tenant, sender, endpoint, version, cipher, fingerprint, outcome");
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row_from_sql).collect())
    }

    async fn events(&self, f: &RollupFilter, limit: u32) -> Result<Vec<UsageEvent>> {
        let from = f.from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp();
        let to = f.to.and_hms_opt(23, 59, 59).unwrap_or_default().and_utc().timestamp();
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM usage_events WHERE time >= ");
        q.push_bind(from).push(" AND time <= ").push_bind(to);
        if let Some(t) = &f.tenant {
            q.push(" AND tenant = ").push_bind(t);
        }
        q.push(" ORDER BY time DESC LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(event_from_sql).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time: i64, user: Option<&str>, version: Option<&str>, outcome: Outcome, messages: u32) -> UsageEvent {
        let mut e = UsageEvent::new("n1", "std", "10.0.0.7".parse().unwrap());
        e.time = time;
        e.user = user.map(String::from);
        e.tenant = user.map(|_| "contoso".to_string());
        e.version = version.map(String::from);
        e.outcome = outcome;
        e.messages = messages;
        e.bytes = 100 * messages as u64;
        e.ehlo = Some(format!("host{time}"));
        e
    }

    /// A session recorded early (its 535, then more) and again at its end counts once,
    /// under its last outcome, whether the two events are in one batch or two.
    #[tokio::test]
    async fn a_session_recorded_early_is_replaced_by_its_later_event() {
        let t = tempfile::tempdir().unwrap();
        let store = SqliteUsageStore::open(&t.path().join("u.sqlite")).await.unwrap();
        let day = 1_795_000_000;
        let keyed = |mut e: UsageEvent, k: &str| {
            e.session = Some(k.to_string());
            e
        };
        let a = Some("a@contoso.test");
        // Another session of the same key stays as it is.
        store.write_batch(&[ev(day, a, Some("TLSv1.0"), Outcome::AuthFailed, 0)]).await.unwrap();
        store.write_batch(&[keyed(ev(day + 1, a, Some("TLSv1.0"), Outcome::AuthFailed, 0), "n1:s1")]).await.unwrap();
        let d = day_of(day);
        let f = RollupFilter { tenant: None, from: d, to: d };
        let sessions = |rows: &[DailyRow], o: Outcome| rows.iter().filter(|r| r.outcome == o).map(|r| (r.sessions, r.messages)).next();
        let rows = store.rollups(&f).await.unwrap();
        assert_eq!(sessions(&rows, Outcome::AuthFailed), Some((2, 0)), "the early event is in the reports at once");
        // The session then logs in and sends 2 messages: one session, delivered.
        store.write_batch(&[keyed(ev(day + 5, a, Some("TLSv1.0"), Outcome::Delivered, 2), "n1:s1")]).await.unwrap();
        let rows = store.rollups(&f).await.unwrap();
        assert_eq!(sessions(&rows, Outcome::AuthFailed), Some((1, 0)), "the other session is untouched");
        assert_eq!(sessions(&rows, Outcome::Delivered), Some((1, 2)));
        // In one batch: the last event of the session wins; a row emptied by its retraction goes.
        store
            .write_batch(&[
                keyed(ev(day + 9, a, Some("TLSv1.0"), Outcome::Banned, 0), "n1:s2"),
                keyed(ev(day + 10, a, Some("TLSv1.0"), Outcome::NotOptedIn, 0), "n1:s2"),
            ])
            .await
            .unwrap();
        store.write_batch(&[keyed(ev(day + 20, a, Some("TLSv1.0"), Outcome::Delivered, 1), "n1:s2")]).await.unwrap();
        let rows = store.rollups(&f).await.unwrap();
        assert_eq!(sessions(&rows, Outcome::NotOptedIn), None, "no row of 0 sessions is left");
        assert_eq!(sessions(&rows, Outcome::Banned), None);
        assert_eq!(sessions(&rows, Outcome::Delivered), Some((2, 3)));
        let raw = store.events(&f, 100).await.unwrap();
        assert_eq!(raw.len(), 3, "one raw event per session: {raw:?}");
    }

    #[tokio::test]
    async fn batches_roll_up_and_retention_applies() {
        let t = tempfile::tempdir().unwrap();
        let store = SqliteUsageStore::open(&t.path().join("u.sqlite")).await.unwrap();
        let day = 1_795_000_000; // 2026-11-18
        store
            .write_batch(&[
                ev(day, Some("a@contoso.test"), Some("TLSv1.0"), Outcome::Delivered, 2),
                ev(day + 60, Some("a@contoso.test"), Some("TLSv1.0"), Outcome::Delivered, 1),
                ev(day + 30, None, None, Outcome::RefusedAtHandshake, 0),
            ])
            .await
            .unwrap();
        store.write_batch(&[ev(day + 90, Some("a@contoso.test"), Some("TLSv1.0"), Outcome::Delivered, 4)]).await.unwrap();
        let d = day_of(day);
        let all = store.rollups(&RollupFilter { tenant: None, from: d, to: d }).await.unwrap();
        assert_eq!(all.len(), 2);
        let a = all.iter().find(|r| r.sender == "a@contoso.test").unwrap();
        assert_eq!((a.sessions, a.messages, a.bytes, a.last_seen), (3, 7, 700, day + 90));
        assert_eq!(a.ehlo, format!("host{}", day + 90));
        let unknown = all.iter().find(|r| r.tenant.is_empty()).unwrap();
        assert_eq!(unknown.sender, "[10.0.0.7]");
        let only = store.rollups(&RollupFilter { tenant: Some("contoso".into()), from: d, to: d }).await.unwrap();
        assert_eq!(only.len(), 1, "a tenant filter excludes rows of no tenant");
        // A second day for the same key: period totals sum the days, details of the latest.
        let next = day + 86_400;
        store.write_batch(&[ev(next, Some("a@contoso.test"), Some("TLSv1.0"), Outcome::Delivered, 1)]).await.unwrap();
        let f = RollupFilter { tenant: Some("contoso".into()), from: d, to: day_of(next) };
        let totals = store.period_totals(&f).await.unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!((totals[0].sessions, totals[0].messages, totals[0].last_seen), (4, 8, next));
        assert_eq!(totals[0].ehlo, format!("host{next}"));
        let now = DateTime::from_timestamp(day + 31 * 86_400, 0).unwrap();
        let (raw, daily) = store.apply_retention(now, Retention { raw_days: 30, rollup_days: 400 }).await.unwrap();
        assert_eq!((raw, daily), (4, 0));
        let now = DateTime::from_timestamp(day + 402 * 86_400, 0).unwrap();
        let (_, daily) = store.apply_retention(now, Retention { raw_days: 30, rollup_days: 400 }).await.unwrap();
        assert_eq!(daily, 3);
    }

    #[tokio::test]
    async fn a_store_from_before_the_suites_were_recorded_is_upgraded_and_keeps_its_rows() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("u.sqlite");
        {
            // The schema as it was before `cipher` and `offered_ciphers`.
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap().create_if_missing(true);
            let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
            let old = SCHEMA
                .replace(",\n    offered_ciphers TEXT\n", "\n")
                .replace("\n    cipher TEXT NOT NULL DEFAULT '', offered_ciphers TEXT NOT NULL DEFAULT '',", "")
                .replace("version, cipher, fingerprint", "version, fingerprint");
            assert!(!old.contains("offered_ciphers") && old != SCHEMA, "{old}");
            sqlx::raw_sql(&old).execute(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO usage_daily VALUES ('contoso', '2026-11-18', 'a@contoso.test', 'std', 'TLSv1.0', 'fp', 'delivered', 2, 3, 300, 1795000000, 'h', '', '10.0.0.7', 'TLSv1.0')",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = SqliteUsageStore::open(&path).await.unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 11, 18).unwrap();
        let rows = store.rollups(&RollupFilter { tenant: None, from: d, to: d }).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].sessions, rows[0].messages, rows[0].cipher.as_str()), (2, 3, ""));
        // New events with a suite land beside it, in their own row.
        let mut e = ev(1_795_000_100, Some("a@contoso.test"), Some("TLSv1.0"), Outcome::Delivered, 1);
        e.cipher = Some("TLS_RSA_WITH_AES_128_CBC_SHA".into());
        e.offered_ciphers = Some("TLS_RSA_WITH_AES_128_CBC_SHA".into());
        e.endpoint = "std".into();
        e.fingerprint = Some("fp".into());
        store.write_batch(&[e]).await.unwrap();
        let rows = store.rollups(&RollupFilter { tenant: None, from: d, to: d }).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(rows.iter().any(|r| r.cipher == "TLS_RSA_WITH_AES_128_CBC_SHA" && r.offered_ciphers == "TLS_RSA_WITH_AES_128_CBC_SHA"));
        drop(store);
        // Opening again changes nothing.
        let store = SqliteUsageStore::open(&path).await.unwrap();
        assert_eq!(store.rollups(&RollupFilter { tenant: None, from: d, to: d }).await.unwrap().len(), 2);
    }
}
