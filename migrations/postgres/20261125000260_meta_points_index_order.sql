-- The covering index of metric points with `id` right after `step`, so a key's history in
-- (step, id) order is read straight from the index with no sort.
DROP INDEX IF EXISTS meta_metric_points_history;
CREATE INDEX IF NOT EXISTS meta_metric_points_by_step
    ON meta_metric_points (metric_id, key, step, id, value, ts, model_version, job_execution_id);
