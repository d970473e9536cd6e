-- Tenants, accepted domains and users: the schema as it stood before migrations were
-- numbered. Databases made before then already hold these tables (IF NOT EXISTS); the
-- columns added to `tenants` over time are added at open before this runs
-- (directory::upgrade_unnumbered).
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    allow_legacy_tls INTEGER NOT NULL DEFAULT 0,
    legacy_until TEXT,
    legacy_users TEXT NOT NULL DEFAULT '',
    legacy_networks TEXT NOT NULL DEFAULT '',
    forbid_legacy_tls INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    address TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    smtp_auth INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS users_tenant ON users(tenant_id);
