-- Meta service: projects, datasets, workflows and their runs, models, metrics, artifacts,
-- lineage and the outbox of meta events. Times are microseconds since the Unix epoch (UTC);
-- JSON is TEXT. Named rows are soft-deleted (`deleted_at`); names are unique among live rows
-- only, so a deleted name can be reused.

CREATE TABLE IF NOT EXISTS meta_projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS meta_projects_live_name ON meta_projects (name) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS meta_datasets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    project_id BIGINT REFERENCES meta_projects (id),
    uri TEXT,
    format TEXT,
    schema_fields TEXT NOT NULL DEFAULT '[]',
    kind TEXT NOT NULL DEFAULT 'batch',
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS meta_datasets_live_name ON meta_datasets (name) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS meta_datasets_project ON meta_datasets (project_id);

-- Workflows and their runs: written by the scheduler, read by the meta routes.
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    project_id BIGINT REFERENCES meta_projects (id),
    namespace TEXT NOT NULL DEFAULT 'default',
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    paused BIGINT NOT NULL DEFAULT 0,
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS workflows_live_name ON workflows (name) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS workflow_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id BIGINT NOT NULL REFERENCES workflows (id),
    version BIGINT NOT NULL,
    graph TEXT,
    workflow TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (workflow_id, version)
);

CREATE TABLE IF NOT EXISTS workflow_executions (
    id TEXT PRIMARY KEY NOT NULL,
    workflow_id BIGINT NOT NULL REFERENCES workflows (id),
    workflow_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    trigger_info TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflow_executions_workflow ON workflow_executions (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS workflow_executions_state ON workflow_executions (state, created_at);

CREATE TABLE IF NOT EXISTS job_executions (
    id TEXT PRIMARY KEY NOT NULL,
    workflow_execution_id TEXT REFERENCES workflow_executions (id),
    job_name TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    exit_code BIGINT,
    worker TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_executions_execution ON job_executions (workflow_execution_id, created_at);

CREATE TABLE IF NOT EXISTS meta_dataset_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id BIGINT NOT NULL REFERENCES meta_datasets (id),
    version BIGINT NOT NULL,
    uri TEXT,
    row_count BIGINT,
    produced_by TEXT REFERENCES job_executions (id),
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (dataset_id, version)
);

CREATE TABLE IF NOT EXISTS meta_models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    project_id BIGINT REFERENCES meta_projects (id),
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS meta_models_live_name ON meta_models (name) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS meta_models_project ON meta_models (project_id);

CREATE TABLE IF NOT EXISTS meta_model_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id BIGINT NOT NULL REFERENCES meta_models (id),
    version BIGINT NOT NULL,
    uri TEXT,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    source_job_execution TEXT REFERENCES job_executions (id),
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (model_id, version)
);

CREATE TABLE IF NOT EXISTS meta_model_version_inputs (
    model_version_id BIGINT NOT NULL REFERENCES meta_model_versions (id),
    dataset_version_id BIGINT NOT NULL REFERENCES meta_dataset_versions (id),
    PRIMARY KEY (model_version_id, dataset_version_id)
);

CREATE TABLE IF NOT EXISTS meta_model_stage_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_version_id BIGINT NOT NULL REFERENCES meta_model_versions (id),
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    reason TEXT,
    changed_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS meta_model_stage_history_version ON meta_model_stage_history (model_version_id, id);

CREATE TABLE IF NOT EXISTS meta_model_aliases (
    model_id BIGINT NOT NULL REFERENCES meta_models (id),
    alias TEXT NOT NULL,
    model_version_id BIGINT NOT NULL REFERENCES meta_model_versions (id),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model_id, alias)
);

CREATE TABLE IF NOT EXISTS meta_model_alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id BIGINT NOT NULL REFERENCES meta_models (id),
    alias TEXT NOT NULL,
    from_version BIGINT,
    to_version BIGINT,
    moved_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS meta_model_alias_history_alias ON meta_model_alias_history (model_id, alias, moved_at);

CREATE TABLE IF NOT EXISTS meta_metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    project_id BIGINT REFERENCES meta_projects (id),
    kind TEXT NOT NULL,
    subject TEXT,
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS meta_metrics_live_name ON meta_metrics (name) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS meta_metric_points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    metric_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    step BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    model_version BIGINT,
    job_execution_id TEXT
);
CREATE INDEX IF NOT EXISTS meta_metric_points_key_step ON meta_metric_points (metric_id, key, step);

CREATE TABLE IF NOT EXISTS meta_artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    project_id BIGINT REFERENCES meta_projects (id),
    uri TEXT NOT NULL,
    kind TEXT,
    sha256 TEXT,
    size_bytes BIGINT,
    description TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS meta_artifacts_live_name ON meta_artifacts (name) WHERE deleted_at IS NULL;

-- One row per (entity, tag) for tag-subset filters.
CREATE TABLE IF NOT EXISTS meta_tags (
    entity TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    k TEXT NOT NULL,
    v TEXT NOT NULL,
    PRIMARY KEY (entity, entity_id, k)
);
CREATE INDEX IF NOT EXISTS meta_tags_lookup ON meta_tags (entity, k, v);

-- Lineage: directed edges between nodes (`job_execution`, `dataset_version`, `model_version`).
CREATE TABLE IF NOT EXISTS meta_lineage_edges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    src_kind TEXT NOT NULL,
    src_id TEXT NOT NULL,
    dst_kind TEXT NOT NULL,
    dst_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (src_kind, src_id, dst_kind, dst_id)
);
CREATE INDEX IF NOT EXISTS meta_lineage_edges_dst ON meta_lineage_edges (dst_kind, dst_id);

-- Meta events written in the same transaction as the change; a relay publishes them to the bus
-- (idempotency key `meta-outbox-<id>`) and stamps `sent_at`.
CREATE TABLE IF NOT EXISTS meta_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    event_type TEXT NOT NULL,
    context TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    event_offset BIGINT
);
CREATE INDEX IF NOT EXISTS meta_outbox_unsent ON meta_outbox (id) WHERE sent_at IS NULL;
