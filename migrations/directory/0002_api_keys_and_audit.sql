-- Admin API keys and the audit log.

-- A key is `mgk_<id>_<secret>`: `id` is public (lists, audit records, revocation), the
-- secret is stored only as its SHA-256 (a random 190-bit secret needs no slow hash).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    -- NULL: an operator key; else the tenant whose admin holds it.
    tenant TEXT REFERENCES tenants(name),
    description TEXT NOT NULL DEFAULT '',
    -- Last day (inclusive, UTC) the key works, YYYY-MM-DD; NULL: no end.
    expires TEXT,
    -- Comma-separated networks the key may be used from; '' means any.
    allow_ips TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys(tenant);

-- One record per change, written in the change's own transaction.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    -- `cli:<os user>`, `key:<id>`, `system` (the demo's seeding, tests).
    actor TEXT NOT NULL,
    -- `operator`, or the tenant whose admin acted.
    scope TEXT NOT NULL,
    -- The tenant the changed object belongs to; NULL for operator-wide objects.
    tenant TEXT,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    -- JSON values before and after (never a password or a key's secret).
    before TEXT,
    after TEXT
);
CREATE INDEX audit_tenant_time ON audit(tenant, time);
CREATE INDEX audit_time ON audit(time);
