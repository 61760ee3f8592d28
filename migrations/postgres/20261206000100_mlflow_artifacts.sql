-- MLflow artifacts kept in the database, for the distributed shape (PostgreSQL): every server
-- replica reads the same files. The embedded server (SQLite) keeps them as files under its data
-- folder instead; these tables stay empty there. A file is its row and its chunks of 1 MiB.
CREATE TABLE IF NOT EXISTS meta_artifact_files (
    path TEXT PRIMARY KEY NOT NULL,
    size_bytes BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS meta_artifact_chunks (
    path TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (path, seq)
);
