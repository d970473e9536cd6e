-- Bans made by the failed-AUTH limits ([auth_limits]) or by `mailgate ban add`.
-- They live with the directory so that every node sharing it enforces them.
CREATE TABLE bans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- `address`: `target` is a network in CIDR form (a /32 or /64 for one address);
    -- `login`: `target` is a lower-case login name.
    kind TEXT NOT NULL CHECK (kind IN ('address', 'login')),
    target TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    -- Unix seconds; the ban is not in force from then on (and is deleted later).
    expires_at INTEGER NOT NULL,
    -- `auth-limits` for an automatic ban, else the actor (`cli:<os user>`, `key:<id>`).
    created_by TEXT NOT NULL,
    UNIQUE (kind, target)
);
CREATE INDEX bans_expires ON bans(expires_at);
