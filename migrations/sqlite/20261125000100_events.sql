-- Events of the embedded bus. `seq` is the event's offset: assigned by the bus from
-- `event_log.last_offset`, strictly increasing in commit order, never reused (retention deletes
-- rows but never renumbers them, and the counter never goes back).
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT PRIMARY KEY NOT NULL,
    namespace TEXT NOT NULL,
    event_key TEXT NOT NULL,
    value TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT,
    context TEXT,
    created_at BIGINT NOT NULL,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key ON events (idempotency_key);
CREATE INDEX IF NOT EXISTS events_namespace_key ON events (namespace, event_key, seq);
CREATE INDEX IF NOT EXISTS events_type ON events (event_type, seq);
CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at);

-- The offset counter: one row. Its row lock also orders writers of several processes.
CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY NOT NULL,
    last_offset BIGINT NOT NULL
);
INSERT INTO event_log (id, last_offset) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
