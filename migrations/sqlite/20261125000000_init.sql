-- Bookkeeping shared by every part: one row per named value (schema facts, leader lease, ...).
CREATE TABLE IF NOT EXISTS aiflow_kv (
    k TEXT PRIMARY KEY NOT NULL,
    v TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
