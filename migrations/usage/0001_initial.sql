-- Usage events and their daily rollups, as they stood when migrations were numbered.
-- Stores made before then are brought to this schema at open (store::upgrade) before the
-- numbered migrations run; IF NOT EXISTS makes this one a no-op for them.
CREATE TABLE IF NOT EXISTS usage_events (
    time INTEGER NOT NULL, node TEXT NOT NULL, endpoint TEXT NOT NULL, client_ip TEXT NOT NULL,
    offered_max TEXT, version TEXT, cipher TEXT, sni TEXT, fingerprint TEXT, ehlo TEXT,
    user TEXT, tenant TEXT, outcome TEXT NOT NULL, messages INTEGER NOT NULL, bytes INTEGER NOT NULL,
    offered_ciphers TEXT
);
CREATE INDEX IF NOT EXISTS usage_events_time ON usage_events(time);
CREATE INDEX IF NOT EXISTS usage_events_tenant_time ON usage_events(tenant, time);
CREATE TABLE IF NOT EXISTS usage_daily (
    tenant TEXT NOT NULL, day TEXT NOT NULL, sender TEXT NOT NULL, endpoint TEXT NOT NULL,
    version TEXT NOT NULL, fingerprint TEXT NOT NULL, outcome TEXT NOT NULL,
    sessions INTEGER NOT NULL, messages INTEGER NOT NULL, bytes INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    ehlo TEXT NOT NULL, sni TEXT NOT NULL, client_ip TEXT NOT NULL, offered_max TEXT NOT NULL,
    cipher TEXT NOT NULL DEFAULT '', offered_ciphers TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, day, sender, endpoint, version, cipher, fingerprint, outcome)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily(day);
