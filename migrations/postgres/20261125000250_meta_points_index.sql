-- A covering index for metric points: a key's history and its downsampled curve are read from
-- the index alone, in step order, without visiting the table.
DROP INDEX IF EXISTS meta_metric_points_key_step;
CREATE INDEX IF NOT EXISTS meta_metric_points_history
    ON meta_metric_points (metric_id, key, step, value, ts, model_version, job_execution_id);
