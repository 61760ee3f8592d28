-- Who created a named meta record: `execution:<id>` when a job's token did (the job may then
-- delete or rename it), NULL otherwise. A job's token may not delete or rename a record it did
-- not create (docs/security.md).
ALTER TABLE meta_projects ADD COLUMN created_by TEXT;
ALTER TABLE meta_datasets ADD COLUMN created_by TEXT;
ALTER TABLE meta_models ADD COLUMN created_by TEXT;
ALTER TABLE meta_metrics ADD COLUMN created_by TEXT;
ALTER TABLE meta_artifacts ADD COLUMN created_by TEXT;
