-- Rule evaluations that changed something: what `execution why` explains from.
CREATE TABLE IF NOT EXISTS rule_evaluations (
    id BIGSERIAL PRIMARY KEY,
    execution_id TEXT NOT NULL,
    job_name TEXT NOT NULL,
    rule_index BIGINT NOT NULL,
    event_offset BIGINT,
    signal TEXT NOT NULL,
    met TEXT NOT NULL,
    fired TEXT,
    decision TEXT NOT NULL,
    explanation TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rule_evaluations_exec_job ON rule_evaluations (execution_id, job_name, id);
