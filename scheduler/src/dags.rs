//! The dags folder: every `*.json` AI graph or workflow document in it is submitted at start
//! and again whenever it changes (file events through `notify`, debounced). A file that does
//! not load is reported (a log line, and `GET /workflows` lists it under `load_errors`) and
//! never removes the last good version of its workflow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aiflow_api::meta::DagLoadError;
use chrono::Utc;
use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Scheduler;

/// Quiet time after the last file event before the folder is read again.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What one pass over the folder did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Files whose workflow got a new version.
    pub changed: Vec<PathBuf>,
    /// Files whose document was unchanged.
    pub unchanged: Vec<PathBuf>,
    /// Files that could not be loaded, with the reason.
    pub failed: BTreeMap<PathBuf, String>,
}

fn error_key(file: &Path) -> String {
    format!("dags.error.{}", file.display())
}

/// Key of the load error of a stored workflow (one an older version of the server accepted).
fn stored_error_key(name: &str) -> String {
    format!("dags.error.stored.{name}")
}

/// Records that the latest stored version of workflow `name` is refused by this version's
/// checks: `GET /workflows` lists it under `load_errors`, as a file of the dags folder.
pub(crate) async fn record_stored_error(store: &aiflow_meta::Store, name: &str, error: &str) {
    let record = DagLoadError {
        file: format!("(stored workflow {name})"),
        error: error.to_string(),
        at: Utc::now(),
    };
    let text = serde_json::to_string(&record).unwrap_or_default();
    if let Err(e) = crate::durable::kv_set(&store.db().pool, &stored_error_key(name), &text).await {
        tracing::warn!(error = %e, "cannot record a stored workflow's load error");
    }
}

/// Forgets the load error of stored workflow `name` (a new version was submitted).
pub(crate) async fn clear_stored_error(store: &aiflow_meta::Store, name: &str) {
    let r = sqlx::query("DELETE FROM aiflow_kv WHERE k = $1")
        .bind(stored_error_key(name))
        .execute(&store.db().pool)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot clear a stored workflow's load error");
    }
}

/// Largest document of the dags folder.
const MAX_DAG_BYTES: u64 = 16 * 1024 * 1024;

/// Reads `file` of the dags folder `root` (canonical): a symbolic link that leads out of the
/// folder is not followed, and a file over [`MAX_DAG_BYTES`] is not read.
fn read_inside(root: &Path, file: &Path) -> Result<String, String> {
    let real = std::fs::canonicalize(file).map_err(|e| format!("cannot read the file: {e}"))?;
    if !real.starts_with(root) {
        return Err(
            "a symbolic link that leads out of the dags folder; it is not followed".to_string(),
        );
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read the file: {e}"))?;
    if meta.len() > MAX_DAG_BYTES {
        return Err(format!(
            "the file is {} bytes, over the limit of {MAX_DAG_BYTES}",
            meta.len()
        ));
    }
    std::fs::read_to_string(&real).map_err(|e| format!("cannot read the file: {e}"))
}

/// Submits every `*.json` document of `dir` (sorted by name) and records load errors.
pub async fn load_dir(scheduler: &Scheduler, dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect(),
        Err(e) => {
            tracing::warn!(dags = %dir.display(), error = %e, "cannot read the dags folder");
            return report;
        }
    };
    files.sort();
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for file in files {
        let doc = read_inside(&root, &file).and_then(|t| {
            // A syntax error says where, never what (no content of the file in load_errors).
            serde_json::from_str::<serde_json::Value>(&t).map_err(|e| {
                format!(
                    "not JSON: {:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            })
        });
        let result = match doc {
            Ok(doc) => scheduler
                .submit(doc)
                .await
                .map_err(|e| e.to_string().replace("\n  ", "; ")),
            Err(e) => Err(e),
        };
        let key = error_key(&file);
        match result {
            Ok(s) => {
                tracing::info!(file = %file.display(), workflow = s.workflow, version = s.version, created = s.created, "dag loaded");
                clear_error(scheduler, &key).await;
                if s.created {
                    report.changed.push(file);
                } else {
                    report.unchanged.push(file);
                }
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "dag not loaded; its last good version stays");
                let record = DagLoadError {
                    file: file.display().to_string(),
                    error: e.clone(),
                    at: Utc::now(),
                };
                set_error(scheduler, &key, &record).await;
                report.failed.insert(file, e);
            }
        }
    }
    // Errors of files that are gone are forgotten.
    if let Ok(known) = scheduler.store().dag_load_errors().await {
        for e in known {
            let file = PathBuf::from(&e.file);
            if file.parent() == Some(dir) && !file.exists() {
                clear_error(scheduler, &error_key(&file)).await;
            }
        }
    }
    report
}

async fn set_error(scheduler: &Scheduler, key: &str, record: &DagLoadError) {
    let text = serde_json::to_string(record).unwrap_or_default();
    if let Err(e) = crate::durable::kv_set(&scheduler.store().db().pool, key, &text).await {
        tracing::warn!(error = %e, "cannot record a dag load error");
    }
}

async fn clear_error(scheduler: &Scheduler, key: &str) {
    let r = sqlx::query("DELETE FROM aiflow_kv WHERE k = $1")
        .bind(key)
        .execute(&scheduler.store().db().pool)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot clear a dag load error");
    }
}

/// Loads `dir` now, then again after every change to it, until `shutdown`.
///
/// # Errors
/// When the folder cannot be watched (it does not exist, or the system refuses a watch).
pub async fn watch(
    scheduler: Scheduler,
    dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(event) = r
            && event
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "json"))
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    load_dir(&scheduler, &dir).await;
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        break;
                    }
                    // Debounce: editors write a file in several steps.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    let report = load_dir(&scheduler, &dir).await;
                    tracing::info!(
                        changed = report.changed.len(),
                        failed = report.failed.len(),
                        "dags folder reloaded"
                    );
                }
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            }
        }
    }))
}
