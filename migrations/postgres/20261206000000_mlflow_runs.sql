-- MLflow-compatible tracking (`/api/2.0/mlflow/…`, docs/mlflow.md). A run is a job execution
-- (`job_executions`, no workflow execution) plus this row: its experiment (a project), its
-- artifact root and its lifecycle. Params and tags are key/value rows of the run; metric
-- points are `meta_metric_points` rows whose `job_execution_id` is the run.
CREATE TABLE IF NOT EXISTS meta_run_info (
    run_id TEXT PRIMARY KEY NOT NULL REFERENCES job_executions (id),
    project_id BIGINT NOT NULL REFERENCES meta_projects (id),
    user_id TEXT,
    artifact_uri TEXT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX IF NOT EXISTS meta_run_info_project ON meta_run_info (project_id);

CREATE TABLE IF NOT EXISTS meta_run_params (
    run_id TEXT NOT NULL REFERENCES job_executions (id),
    k TEXT NOT NULL,
    v TEXT NOT NULL,
    PRIMARY KEY (run_id, k)
);

CREATE TABLE IF NOT EXISTS meta_run_tags (
    run_id TEXT NOT NULL REFERENCES job_executions (id),
    k TEXT NOT NULL,
    v TEXT NOT NULL,
    PRIMARY KEY (run_id, k)
);

-- A run's metric history and latest values.
CREATE INDEX IF NOT EXISTS meta_metric_points_job ON meta_metric_points (job_execution_id, key, step);
