-- API tokens (`aiflow token create|list|revoke`, `/api/v1/tokens`). Only a SHA-256 hash of a
-- token's secret is kept; `id` is the public part of `afl_<id>_<secret>`.
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
