-- OpenLineage RunEvents of the server's own job attempts (`--openlineage-url`,
-- docs/meta.md): built from the JOB_STATUS events of the event bus and kept here until the
-- backend took them. One row per run (attempt) and event type, so replicas and replays add no
-- duplicate. `cursor` keeps the offset of the last event bus event looked at.
CREATE TABLE IF NOT EXISTS openlineage_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    claimed_until BIGINT,
    sent_at BIGINT,
    last_error TEXT,
    UNIQUE (run_id, event_type)
);
CREATE INDEX IF NOT EXISTS openlineage_outbox_unsent ON openlineage_outbox (sent_at, next_at);

CREATE TABLE IF NOT EXISTS openlineage_cursor (
    name TEXT PRIMARY KEY NOT NULL,
    event_offset BIGINT NOT NULL
);
