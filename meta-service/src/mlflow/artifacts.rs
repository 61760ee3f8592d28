//! The `mlflow-artifacts` proxy API. Embedded (SQLite): files under one directory
//! (`<data dir>/artifacts`). Distributed (PostgreSQL): rows of the database in chunks of 1 MiB,
//! so every replica serves every file. Uploads (`PUT`) and downloads (`GET`) are streamed; an
//! upload over the size limit is refused and leaves nothing behind; a path with `..`, `.`, an
//! empty part, a backslash or a NUL is refused. A run's artifact URI is
//! `mlflow-artifacts:/<experiment>/<run>/artifacts`.
//!
//! The same store keeps the content of AI Flow's own artifacts (`PUT|GET
//! /api/v1/artifacts/{name}/content`, [`crate::content`]) under a reserved top folder,
//! `.aiflow-artifacts/<artifact id>`, which the `mlflow-artifacts` API neither lists nor reaches.
//! Every upload computes the file's sha256 as it streams and can be refused on a mismatch before
//! anything is kept.

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Ml, MlError, MlResult, Req};
use crate::Store;
use crate::store::sql::{get_i, get_s, now_us};

/// The root of every artifact URI this server gives out.
pub(crate) const SCHEME_ROOT: &str = "mlflow-artifacts:";
/// Prefix of the temporary file of an upload in progress (hidden from listings).
const PARTIAL: &str = ".aiflow-upload-";
/// Top folder of the content of native artifacts (hidden from and refused by the MLflow API).
pub(crate) const NATIVE: &str = ".aiflow-artifacts";
/// Every name starting so is the store's own: refused in MLflow paths, hidden from listings.
const RESERVED: &str = ".aiflow-";

/// Bytes per stored chunk of the database store.
const CHUNK: usize = 1024 * 1024;

/// What an upload kept: its size and the sha256 of its bytes (64 lower-case hex digits).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// The artifact store.
#[derive(Debug)]
pub(crate) struct Artifacts {
    root: PathBuf,
    max_bytes: u64,
    /// The database store (PostgreSQL); `None`: files under `root`.
    db: Option<Store>,
}

impl Artifacts {
    pub(crate) fn new(root: PathBuf, max_bytes: u64, db: Option<Store>) -> Self {
        Self {
            root,
            max_bytes,
            db,
        }
    }

    /// The artifact path as stored in the database: checked parts joined by `/`.
    fn key(&self, path: &str) -> MlResult<String> {
        self.resolve(path)?;
        Ok(path.trim_matches('/').to_string())
    }

    /// The file path of an artifact path, or 400 for an unsafe one.
    fn resolve(&self, path: &str) -> MlResult<PathBuf> {
        let mut out = self.root.clone();
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(out);
        }
        for part in trimmed.split('/') {
            if part.is_empty()
                || part == "."
                || part == ".."
                || part.contains(['\\', '\0'])
                || part.starts_with(RESERVED)
            {
                return Err(MlError::invalid(format!(
                    "artifact path {path:?} is refused: it must be relative, without '.', '..', empty parts or backslashes"
                )));
            }
            out.push(part);
        }
        Ok(out)
    }

    /// The largest upload, in bytes.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Stores `body` at `key` (a path already checked, or a [`NATIVE`] key), streaming it to a
    /// temporary file or into a transaction. With `expect`, a body whose sha256 differs is
    /// refused (422 `CHECKSUM_MISMATCH`) and nothing is kept; over the size limit, 413.
    pub(crate) async fn put(
        &self,
        key: &str,
        file_path: &FsPath,
        body: Body,
        expect: Option<&str>,
    ) -> MlResult<Stored> {
        let body = drained(body, self.max_bytes);
        if let Some(db) = &self.db {
            return db_upload(db, key, body, self.max_bytes, expect).await;
        }
        let dir = file_path
            .parent()
            .map_or_else(|| self.root.clone(), FsPath::to_path_buf);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotADirectory
                || e.kind() == std::io::ErrorKind::AlreadyExists
            {
                MlError::invalid(format!("artifact path {key:?}: a parent is a file"))
            } else {
                io_err(e)
            }
        })?;
        if tokio::fs::metadata(file_path)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(MlError::invalid(format!(
                "artifact path {key:?} is a directory"
            )));
        }
        let tmp = dir.join(format!("{PARTIAL}{}", uuid::Uuid::new_v4().simple()));
        let written = write_limited(&tmp, body, self.max_bytes)
            .await
            .and_then(|stored| check_sum(stored, expect));
        match written {
            Ok(stored) => {
                tokio::fs::rename(&tmp, file_path).await.map_err(io_err)?;
                tracing::debug!(path = key, bytes = stored.bytes, "artifact stored");
                Ok(stored)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// The stored content of native artifact `id`: its key and file path.
    pub(crate) fn native(&self, id: i64) -> (String, PathBuf) {
        let key = format!("{NATIVE}/{id}");
        let path = self.root.join(NATIVE).join(id.to_string());
        (key, path)
    }

    /// Streams the file at `key` (`file_path` in the file store); 404 when there is none.
    pub(crate) async fn get(&self, key: &str, file_path: &FsPath) -> MlResult<Response> {
        if let Some(db) = &self.db {
            return db_download(db, key).await;
        }
        file_download(file_path, key).await
    }
}

/// The most of a body over the limit that is read (and dropped) before the refusal.
pub(crate) const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// The longest time spent reading it.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// `body`, whose rest is read and dropped once it passes `max` bytes (up to [`DRAIN_MAX`] more,
/// for up to [`DRAIN_TIME`]) before the chunk that passes the limit is handed on: the upload is
/// then refused with the client listening for the answer, instead of a connection reset while
/// it still sends.
fn drained(body: Body, max: u64) -> Body {
    let stream = body.into_data_stream();
    let s = futures::stream::unfold((stream, 0u64, false), move |(mut s, n, over)| async move {
        if over {
            return None;
        }
        match s.next().await {
            None => None,
            Some(Err(e)) => Some((Err(e), (s, n, true))),
            Some(Ok(chunk)) => {
                let n = n + chunk.len() as u64;
                if n > max {
                    let _ = tokio::time::timeout(DRAIN_TIME, async {
                        let mut extra = 0u64;
                        while let Some(Ok(c)) = s.next().await {
                            extra += c.len() as u64;
                            if extra > DRAIN_MAX {
                                break;
                            }
                        }
                    })
                    .await;
                    return Some((Ok(chunk), (s, n, true)));
                }
                Some((Ok(chunk), (s, n, false)))
            }
        }
    });
    Body::from_stream(s)
}

/// Reads and drops `body` (up to [`DRAIN_MAX`] bytes, for up to [`DRAIN_TIME`]): an upload
/// refused before its body was read is answered with the client listening.
pub(crate) async fn drain(body: Body) {
    let mut s = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut n = 0u64;
        while let Some(Ok(c)) = s.next().await {
            n += c.len() as u64;
            if n > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// The sha256 of a finished upload against the one expected.
fn check_sum(stored: Stored, expect: Option<&str>) -> MlResult<Stored> {
    match expect {
        Some(want) if !want.eq_ignore_ascii_case(&stored.sha256) => Err(MlError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "CHECKSUM_MISMATCH",
            format!(
                "the uploaded bytes have sha256 {} but {want} was expected; nothing was stored",
                stored.sha256
            ),
        )),
        _ => Ok(stored),
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

/// `GET /api/2.0/mlflow-artifacts/artifacts?path=…`: the entries of a directory.
pub(super) async fn list_root(State(st): State<Ml>, method: Method, uri: Uri) -> Response {
    if method != Method::GET {
        return not_allowed(&method, "");
    }
    let req = match Req::parse(&uri, &[]) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match list(&st, req.s("path").as_deref().unwrap_or("")).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(st: &Ml, path: &str) -> MlResult<serde_json::Value> {
    if let Some(db) = &st.artifacts.db {
        return db_list(db, &st.artifacts.key(path)?).await;
    }
    let dir = st.artifacts.resolve(path)?;
    let mut files = Vec::new();
    let mut rd = match tokio::fs::read_dir(&dir).await {
        Ok(rd) => rd,
        // A missing directory or a file lists as empty, as MLflow's server does.
        Err(_) => return Ok(json!({"files": files})),
    };
    while let Some(e) = rd.next_entry().await.map_err(io_err)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(RESERVED) {
            continue;
        }
        let meta = e.metadata().await.map_err(io_err)?;
        if meta.is_dir() {
            files.push(json!({"path": name, "is_dir": true}));
        } else {
            files.push(json!({"path": name, "is_dir": false, "file_size": meta.len()}));
        }
    }
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(json!({"files": files}))
}

/// `PUT` (upload), `GET` (download), `DELETE` on `/api/2.0/mlflow-artifacts/artifacts/<path>`.
pub(super) async fn object(
    State(st): State<Ml>,
    Path(path): Path<String>,
    method: Method,
    body: Body,
) -> Response {
    let result = match method {
        Method::GET | Method::HEAD => download(&st, &path).await,
        Method::PUT => upload(&st, &path, body).await,
        Method::DELETE => delete(&st, &path).await,
        _ => return not_allowed(&method, &path),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn not_allowed(method: &Method, path: &str) -> Response {
    MlError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "ENDPOINT_NOT_FOUND",
        format!(
            "{method} is not allowed on mlflow-artifacts/artifacts/{path}: use GET, PUT or DELETE"
        ),
    )
    .into_response()
}

fn too_large(max: u64) -> MlError {
    MlError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "INVALID_PARAMETER_VALUE",
        format!("the artifact is over the limit of {max} bytes (--max-artifact-bytes)"),
    )
}

fn io_err(e: std::io::Error) -> MlError {
    if aiflow_db::storage_full_io(&e) {
        tracing::error!(error = %e, "artifact store is full");
        return MlError::storage_full("the artifact store");
    }
    tracing::error!(error = %e, "artifact store failure");
    MlError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        format!("artifact store: {e}"),
    )
}

async fn download(st: &Ml, path: &str) -> MlResult<Response> {
    if let Some(db) = &st.artifacts.db {
        return db_download(db, &st.artifacts.key(path)?).await;
    }
    file_download(&st.artifacts.resolve(path)?, path).await
}

async fn file_download(file_path: &FsPath, path: &str) -> MlResult<Response> {
    let meta = tokio::fs::metadata(file_path).await.ok();
    if !meta.as_ref().is_some_and(std::fs::Metadata::is_file) {
        return Err(MlError::not_found(format!(
            "artifact {path:?} does not exist"
        )));
    }
    let file = tokio::fs::File::open(file_path).await.map_err(io_err)?;
    let stream = futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let len = meta.map_or(0, |m| m.len());
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn upload(st: &Ml, path: &str, body: Body) -> MlResult<Response> {
    let file_path = st.artifacts.resolve(path)?;
    if path.trim_matches('/').is_empty() {
        return Err(MlError::invalid("an upload needs a file path"));
    }
    let key = st.artifacts.key(path)?;
    st.artifacts.put(&key, &file_path, body, None).await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn write_limited(tmp: &FsPath, body: Body, max: u64) -> MlResult<Stored> {
    let mut f = tokio::fs::File::create(tmp).await.map_err(io_err)?;
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    let mut sha = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| MlError::invalid(format!("upload interrupted: {e}")))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(too_large(max));
        }
        sha.update(&chunk);
        f.write_all(&chunk).await.map_err(io_err)?;
    }
    f.flush().await.map_err(io_err)?;
    f.sync_all().await.map_err(io_err)?;
    Ok(Stored {
        bytes: n,
        sha256: hex(&sha.finalize()),
    })
}

async fn delete(st: &Ml, path: &str) -> MlResult<Response> {
    let p = st.artifacts.resolve(path)?;
    if path.trim_matches('/').is_empty() {
        return Err(MlError::invalid("refusing to delete the artifact root"));
    }
    if let Some(db) = &st.artifacts.db {
        return db_delete(db, &st.artifacts.key(path)?).await;
    }
    let meta = tokio::fs::metadata(&p)
        .await
        .map_err(|_| MlError::not_found(format!("artifact {path:?} does not exist")))?;
    if meta.is_dir() {
        tokio::fs::remove_dir_all(&p).await.map_err(io_err)?;
    } else {
        tokio::fs::remove_file(&p).await.map_err(io_err)?;
    }
    tracing::info!(path, "artifact deleted");
    Ok(axum::Json(json!({})).into_response())
}

// ---- the database store (PostgreSQL)

/// `substr(path, 1, n) = prefix`: counts characters on both engines, unlike LIKE.
fn under(prefix: &str) -> String {
    format!("substr(path, 1, {}) = $1", prefix.chars().count())
}

async fn db_list(db: &Store, dir: &str) -> MlResult<serde_json::Value> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT path, size_bytes FROM meta_artifact_files WHERE {} ORDER BY path",
        under(&prefix)
    )))
    .bind(&prefix)
    .fetch_all(&db.db.pool)
    .await
    .map_err(crate::Error::Db)?;
    let mut files: Vec<serde_json::Value> = Vec::new();
    let mut last_dir: Option<String> = None;
    for r in rows {
        let path = get_s(&r, "path")?;
        let rest = &path[prefix.len()..];
        if rest.starts_with(RESERVED) {
            continue;
        }
        match rest.split_once('/') {
            Some((d, _)) => {
                if last_dir.as_deref() != Some(d) {
                    files.push(json!({"path": d, "is_dir": true}));
                    last_dir = Some(d.to_string());
                }
            }
            None => files.push(
                json!({"path": rest, "is_dir": false, "file_size": get_i(&r, "size_bytes")?}),
            ),
        }
    }
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(json!({"files": files}))
}

async fn db_download(db: &Store, path: &str) -> MlResult<Response> {
    let row = sqlx::query("SELECT size_bytes, chunks FROM meta_artifact_files WHERE path = $1")
        .bind(path)
        .fetch_optional(&db.db.pool)
        .await
        .map_err(crate::Error::Db)?
        .ok_or_else(|| MlError::not_found(format!("artifact {path:?} does not exist")))?;
    let (size, chunks) = (get_i(&row, "size_bytes")?, get_i(&row, "chunks")?);
    let pool = db.db.pool.clone();
    let path = path.to_string();
    // One chunk in memory at a time.
    let stream = futures::stream::unfold(0i64, move |seq| {
        let (pool, path) = (pool.clone(), path.clone());
        async move {
            if seq >= chunks {
                return None;
            }
            let data: Result<Vec<u8>, sqlx::Error> = sqlx::query_scalar(
                "SELECT data FROM meta_artifact_chunks WHERE path = $1 AND seq = $2",
            )
            .bind(&path)
            .bind(seq)
            .fetch_one(&pool)
            .await;
            Some((
                data.map(axum::body::Bytes::from)
                    .map_err(std::io::Error::other),
                seq + 1,
            ))
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn db_upload(
    db: &Store,
    path: &str,
    body: Body,
    max: u64,
    expect: Option<&str>,
) -> MlResult<Stored> {
    let mut tx = db.begin().await?;
    // A file cannot sit where a directory is, nor under a file.
    let dir: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM meta_artifact_files WHERE {}",
        under(&format!("{path}/"))
    )))
    .bind(format!("{path}/"))
    .fetch_one(&mut *tx)
    .await
    .map_err(crate::Error::Db)?;
    if dir > 0 {
        return Err(MlError::invalid(format!(
            "artifact path {path:?} is a directory"
        )));
    }
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta_artifact_files WHERE path = $1")
            .bind(p)
            .fetch_one(&mut *tx)
            .await
            .map_err(crate::Error::Db)?;
        if n > 0 {
            return Err(MlError::invalid(format!(
                "artifact path {path:?}: {p:?} is a file"
            )));
        }
        parent = p;
    }
    sqlx::query("DELETE FROM meta_artifact_chunks WHERE path = $1")
        .bind(path)
        .execute(&mut *tx)
        .await
        .map_err(crate::Error::Db)?;
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let (mut n, mut seq) = (0u64, 0i64);
    let mut sha = Sha256::new();
    loop {
        let next = stream.next().await;
        if let Some(chunk) = &next {
            let chunk = chunk
                .as_ref()
                .map_err(|e| MlError::invalid(format!("upload interrupted: {e}")))?;
            n += chunk.len() as u64;
            if n > max {
                // Dropping the transaction rolls it back: nothing is kept.
                return Err(too_large(max));
            }
            sha.update(chunk);
            buf.extend_from_slice(chunk);
        }
        while buf.len() >= CHUNK || (next.is_none() && !buf.is_empty()) {
            let rest = buf.split_off(buf.len().min(CHUNK));
            sqlx::query("INSERT INTO meta_artifact_chunks (path, seq, data) VALUES ($1, $2, $3)")
                .bind(path)
                .bind(seq)
                .bind(std::mem::replace(&mut buf, rest))
                .execute(&mut *tx)
                .await
                .map_err(crate::Error::Db)?;
            seq += 1;
        }
        if next.is_none() {
            break;
        }
    }
    // A mismatch drops the transaction: nothing is kept.
    let stored = check_sum(
        Stored {
            bytes: n,
            sha256: hex(&sha.finalize()),
        },
        expect,
    )?;
    sqlx::query(
        "INSERT INTO meta_artifact_files (path, size_bytes, chunks, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (path) DO UPDATE SET size_bytes = excluded.size_bytes, chunks = excluded.chunks, \
         created_at = excluded.created_at",
    )
    .bind(path)
    .bind(n as i64)
    .bind(seq)
    .bind(now_us())
    .execute(&mut *tx)
    .await
    .map_err(crate::Error::Db)?;
    db.commit(tx, false).await?;
    tracing::debug!(path, bytes = n, "artifact stored in the database");
    Ok(stored)
}

async fn db_delete(db: &Store, path: &str) -> MlResult<Response> {
    let mut tx = db.begin().await?;
    let prefix = format!("{path}/");
    let mut gone = 0;
    for table in ["meta_artifact_chunks", "meta_artifact_files"] {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE path = $2 OR {}",
            under(&prefix)
        )))
        .bind(&prefix)
        .bind(path)
        .execute(&mut *tx)
        .await
        .map_err(crate::Error::Db)?;
        gone = done.rows_affected();
    }
    if gone == 0 {
        return Err(MlError::not_found(format!(
            "artifact {path:?} does not exist"
        )));
    }
    db.commit(tx, false).await?;
    tracing::info!(path, "artifact deleted");
    Ok(axum::Json(json!({})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsafe_paths() {
        let a = Artifacts::new(PathBuf::from("/data/artifacts"), 10, None);
        assert_eq!(
            a.resolve("1/abc/artifacts/model/m.pkl").unwrap(),
            PathBuf::from("/data/artifacts/1/abc/artifacts/model/m.pkl")
        );
        for bad in [
            "1/../../etc/passwd",
            "..",
            "1/./x",
            "1//x",
            "1\\..\\x",
            "a/\0b",
            "1/.aiflow-upload-x",
            ".aiflow-artifacts/1",
        ] {
            let e = a.resolve(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    /// A file write on a full disk (`/dev/full` answers every write with ENOSPC) is a 507,
    /// which the content route answers as `storage_full`.
    #[tokio::test]
    async fn a_content_write_on_a_full_disk_is_507() {
        if !FsPath::new("/dev/full").exists() {
            eprintln!("no /dev/full here; the ENOSPC write was not tried");
            return;
        }
        let e = write_limited(
            FsPath::new("/dev/full"),
            Body::from(vec![7u8; 256 * 1024]),
            1 << 20,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE, "{}", e.message);
        assert_eq!(e.code, "RESOURCE_EXHAUSTED");
        let http = crate::content::http_error(e, "body");
        assert_eq!(http.status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(http.error.code, "storage_full");
    }
}
