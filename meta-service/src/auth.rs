//! API tokens: created, listed and revoked here, checked on every request when the server runs
//! with authentication on.
//!
//! - People's and scripts' tokens are `afl_<id>_<secret>`: `<id>` is the row of `api_tokens`,
//!   only a SHA-256 hash of `<secret>` is stored.
//! - A running job's token is `afj_<expiry>_<mac>_<execution>`: an HMAC-SHA256 under a key kept
//!   in `aiflow_kv`, so launching a job writes nothing; it is refused after its expiry and once
//!   its workflow execution has ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiflow_api::auth::{CreatedToken, Role, TokenInfo};
use aiflow_db::Db;
use chrono::Utc;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};
use crate::store::sql::{from_us, now_us};

/// The longest `expires_in_s` of a token: ten years (a token that should outlive it is made
/// without an expiry).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Prefix of people's and scripts' tokens.
pub const TOKEN_PREFIX: &str = "afl_";
/// Prefix of jobs' tokens.
pub const JOB_TOKEN_PREFIX: &str = "afj_";
/// How long a looked-up token or execution state is trusted before it is read again (a token
/// revoked through another server process is refused at the latest this much later).
const CACHE_FOR: Duration = Duration::from_secs(2);
const JOB_KEY: &str = "auth.job_token_key";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (a job token: `job:<execution>`); what per-token limits count by.
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Set for a job's token: the workflow execution it belongs to.
    pub execution: Option<String>,
}

/// Why a token was refused (401). Messages never repeat the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    #[error("the token is not an AI Flow token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token's workflow execution has ended")]
    ExecutionEnded,
    #[error("cannot check the token: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
struct TokenRow {
    name: String,
    role: Role,
    secret_sha256: String,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// Looked-up rows by id, with when they were read (`None`: no such token).
type TokenCache = HashMap<String, (Instant, Option<TokenRow>)>;

/// The token store. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    db: Db,
    job_key: Arc<Vec<u8>>,
    tokens: Arc<Mutex<TokenCache>>,
    /// execution id → (looked up at, still running).
    executions: Arc<Mutex<HashMap<String, (Instant, bool)>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex SHA-256 of a token secret.
fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Random lower-case hex from the OS generator (through UUID v4: 122 random bits each).
fn random_hex(uuids: usize) -> String {
    (0..uuids)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect()
}

/// Equality in time that does not depend on where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn info_of(row: &AnyRow) -> Result<TokenInfo> {
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))?,
        created_at: from_us(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(from_us),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_us),
    })
}

impl Tokens {
    /// The token store of `db`; creates the job token key on first use of the database.
    pub async fn open(db: Db) -> Result<Self> {
        sqlx::query(
            "INSERT INTO aiflow_kv (k, v, updated_at) VALUES ($1, $2, $3) ON CONFLICT (k) DO NOTHING",
        )
        .bind(JOB_KEY)
        .bind(random_hex(2))
        .bind(now_us())
        .execute(&db.pool)
        .await?;
        let key: String = sqlx::query_scalar("SELECT v FROM aiflow_kv WHERE k = $1")
            .bind(JOB_KEY)
            .fetch_one(&db.pool)
            .await?;
        Ok(Self {
            db,
            job_key: Arc::new(key.into_bytes()),
            tokens: Arc::default(),
            executions: Arc::default(),
        })
    }

    /// Creates a token; the answer holds its secret, which is not stored.
    pub async fn create(
        &self,
        role: Role,
        name: Option<&str>,
        expires_in: Option<Duration>,
    ) -> Result<CreatedToken> {
        let name = name.unwrap_or("token").trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::unprocessable(
                "name",
                "name must be 1 to 200 characters",
            ));
        }
        if let Some(c) = name.chars().find(|c| aiflow_api::is_deceptive_char(*c)) {
            return Err(Error::unprocessable(
                "name",
                format!(
                    "name must not hold control, invisible or bidirectional characters (it holds U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        let id = random_hex(1)[..12].to_string();
        let secret = random_hex(2);
        let now = now_us();
        let expires_at = match expires_in {
            Some(d) => {
                if d > MAX_TOKEN_LIFETIME {
                    return Err(Error::unprocessable(
                        "expires_in_s",
                        format!(
                            "expires_in_s {} is over the longest token lifetime of {} s (10 years); leave it out for a token that does not expire",
                            d.as_secs(),
                            MAX_TOKEN_LIFETIME.as_secs()
                        ),
                    ));
                }
                let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
                if us <= 0 {
                    return Err(Error::unprocessable(
                        "expires_in_s",
                        "expires_in_s must be at least 1",
                    ));
                }
                Some(now.saturating_add(us))
            }
            None => None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(role.as_str())
        .bind(sha256_hex(&secret))
        .bind(now)
        .bind(expires_at)
        .execute(&self.db.pool)
        .await?;
        tracing::info!(token = %id, role = %role, name, "api token created");
        Ok(CreatedToken {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            info: TokenInfo {
                id,
                name: name.to_string(),
                role,
                created_at: from_us(now),
                expires_at: expires_at.map(from_us),
                revoked_at: None,
            },
        })
    }

    /// Every token, newest first (revoked and expired ones too).
    pub async fn list(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens \
             ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(info_of).collect()
    }

    /// Revokes a token (again: no change); 404 for an unknown id.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo> {
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_us())
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        self.tokens.lock().expect("token cache").remove(id);
        let row = sqlx::query(
            "SELECT id, name, role, created_at, expires_at, revoked_at FROM api_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(r) => {
                tracing::info!(token = %id, "api token revoked");
                info_of(&r)
            }
            None => Err(Error::not_found("token", id)),
        }
    }

    /// A job's token for `execution`, valid for `ttl` and while the execution runs.
    #[must_use]
    pub fn job_token(&self, execution: &str, ttl: Duration) -> String {
        let expiry = Utc::now()
            .timestamp()
            .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        format!(
            "{JOB_TOKEN_PREFIX}{expiry}_{}_{execution}",
            self.job_mac(expiry, execution)
        )
    }

    fn job_mac(&self, expiry: i64, execution: &str) -> String {
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.job_key).expect("HMAC takes any key");
        mac.update(format!("{expiry}\n{execution}").as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Who `token` belongs to, or why it is refused.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        if let Some(rest) = token.strip_prefix(JOB_TOKEN_PREFIX) {
            return self.authenticate_job(rest).await;
        }
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(AuthError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
        let row = self.token_row(id).await?.ok_or(AuthError::Unknown)?;
        if !same(&sha256_hex(secret), &row.secret_sha256) {
            return Err(AuthError::Unknown);
        }
        if row.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if row.expires_at.is_some_and(|e| e <= now_us()) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            token_id: id.to_string(),
            name: row.name,
            role: row.role,
            execution: None,
        })
    }

    async fn token_row(&self, id: &str) -> std::result::Result<Option<TokenRow>, AuthError> {
        if let Some((at, row)) = self.tokens.lock().expect("token cache").get(id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(row.clone());
        }
        let row = sqlx::query(
            "SELECT name, role, secret_sha256, expires_at, revoked_at FROM api_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        let row = match row {
            Some(r) => {
                let role: String = r.try_get("role")?;
                Some(TokenRow {
                    name: r.try_get("name")?,
                    role: role.parse().map_err(|_| AuthError::Unknown)?,
                    secret_sha256: r.try_get("secret_sha256")?,
                    expires_at: r.try_get("expires_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            }
            None => None,
        };
        let mut cache = self.tokens.lock().expect("token cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (Instant::now(), row.clone()));
        Ok(row)
    }

    async fn authenticate_job(&self, rest: &str) -> std::result::Result<Principal, AuthError> {
        let mut parts = rest.splitn(3, '_');
        let (Some(expiry), Some(mac), Some(execution)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let expiry: i64 = expiry.parse().map_err(|_| AuthError::Malformed)?;
        if !same(mac, &self.job_mac(expiry, execution)) {
            return Err(AuthError::Unknown);
        }
        if expiry <= Utc::now().timestamp() {
            return Err(AuthError::Expired);
        }
        if !self.execution_running(execution).await? {
            return Err(AuthError::ExecutionEnded);
        }
        Ok(Principal {
            token_id: format!("job:{execution}"),
            name: format!("job of execution {execution}"),
            role: Role::Operator,
            execution: Some(execution.to_string()),
        })
    }

    async fn execution_running(&self, id: &str) -> std::result::Result<bool, AuthError> {
        if let Some((at, running)) = self.executions.lock().expect("execution cache").get(id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(*running);
        }
        let row = sqlx::query("SELECT ended_at FROM workflow_executions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        let running = match row {
            Some(r) => r.try_get::<Option<i64>, _>("ended_at")?.is_none(),
            None => false,
        };
        let mut cache = self.executions.lock().expect("execution cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (Instant::now(), running));
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashes_stable() {
        assert_ne!(random_hex(2), random_hex(2));
        assert_eq!(random_hex(2).len(), 64);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}

// ---- routes ------------------------------------------------------------------------------------

mod routes {
    use aiflow_api::ErrorBody;
    use aiflow_api::auth::{CreatedToken, NewToken, TokenInfo};
    use aiflow_api::server::HttpError;
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::Tokens;
    use crate::routes::Body;

    /// `/tokens` (admin only when authentication is on).
    pub fn token_routes(tokens: Tokens) -> OpenApiRouter {
        OpenApiRouter::new()
            .routes(routes!(list_tokens, create_token))
            .routes(routes!(revoke_token))
            .with_state(tokens)
    }

    /// Every API token, newest first, revoked and expired ones too (never a secret).
    #[utoipa::path(get, path = "/tokens", tag = "tokens",
        responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
    async fn list_tokens(State(t): State<Tokens>) -> Result<Json<Vec<TokenInfo>>, HttpError> {
        Ok(Json(t.list().await?))
    }

    /// Creates a token. The answer is the only place its secret ever appears.
    #[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken,
        responses((status = 201, body = CreatedToken), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
    async fn create_token(
        State(t): State<Tokens>,
        Body(b): Body<NewToken>,
    ) -> Result<(StatusCode, Json<CreatedToken>), HttpError> {
        let created = t
            .create(
                b.role,
                b.name.as_deref(),
                b.expires_in_s.map(std::time::Duration::from_secs),
            )
            .await?;
        Ok((StatusCode::CREATED, Json(created)))
    }

    /// Revokes a token: it is refused from now on (by other server processes within 2 s).
    #[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
        responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
    async fn revoke_token(
        State(t): State<Tokens>,
        Path(id): Path<String>,
    ) -> Result<Json<TokenInfo>, HttpError> {
        Ok(Json(t.revoke(&id).await?))
    }
}

pub use routes::token_routes;
