-- The scheduling leader of a distributed deployment (see the PostgreSQL migration); the
-- embedded shape has one scheduler and records itself here too.
CREATE TABLE IF NOT EXISTS scheduler_leader (
    id INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    holder TEXT NOT NULL,
    url TEXT,
    since INTEGER NOT NULL
);
