-- The scheduling leader of a distributed deployment. The leader holds a PostgreSQL advisory
-- lock on a connection of its own; on taking the lock it raises `epoch`, and every commit of
-- scheduler state checks that `epoch` is still its own (fencing: a paused old leader cannot
-- commit after a new one took over).
CREATE TABLE IF NOT EXISTS scheduler_leader (
    id INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    url TEXT,
    since BIGINT NOT NULL
);
