-- A session whose outcome is recorded before it ends (a refusal at AUTH, messages of a long
-- session) carries a key; its later event replaces the earlier one, in the raw events and
-- in the rollups, so that one session still counts once.
ALTER TABLE usage_events ADD COLUMN session TEXT;
CREATE UNIQUE INDEX usage_events_session ON usage_events(session) WHERE session IS NOT NULL;
