-- The scheduler's durable state: what it needs to resume every running execution after a
-- restart. Written in one transaction together with the committed event offset, before any
-- action (a process started or stopped, a status event published) takes effect.
CREATE TABLE IF NOT EXISTS scheduler_executions (
    execution_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    stopping BIGINT NOT NULL DEFAULT 0,
    trigger_event TEXT,
    updated_at BIGINT NOT NULL
);
-- One row per job of a running execution: its current attempt and state.
CREATE TABLE IF NOT EXISTS scheduler_jobs (
    execution_id TEXT NOT NULL,
    job TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    row_id TEXT,
    -- bit 1: restart after the stop; bit 2: a stop was asked for
    flags BIGINT NOT NULL DEFAULT 0,
    cause TEXT,
    retry_at BIGINT,
    PRIMARY KEY (execution_id, job)
);
-- Rule memory (times fired, all_of parts met) of running executions.
CREATE TABLE IF NOT EXISTS scheduler_rules (
    execution_id TEXT NOT NULL,
    rule_index BIGINT NOT NULL,
    memory TEXT NOT NULL,
    PRIMARY KEY (execution_id, rule_index)
);
-- Status events committed with the state they announce, deleted once published.
CREATE TABLE IF NOT EXISTS scheduler_outbox (
    id BIGSERIAL PRIMARY KEY,
    event TEXT NOT NULL
);
-- Event-triggered starts waiting for their delay_s.
CREATE TABLE IF NOT EXISTS scheduler_delayed (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    fire_at BIGINT NOT NULL,
    trig TEXT NOT NULL,
    event TEXT NOT NULL
);
