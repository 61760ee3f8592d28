//! OpenLineage RunEvents of the server's own job attempts (`--openlineage-url`).
//!
//! A component of its own beside the scheduler, fed by the `JOB_STATUS` events the scheduler
//! publishes on the event bus:
//! - the collector follows the bus from a durable cursor (`openlineage_cursor`) and turns each
//!   attempt's RUNNING into START and its SUCCEEDED, FAILED (or RETRYING: that attempt failed)
//!   and STOPPED into COMPLETE, FAIL and ABORT, written to `openlineage_outbox` with the cursor
//!   in one transaction (one row per run and event type: replays and replicas add nothing);
//! - the sender posts the rows in order to the backend, retrying with backoff. A backend that is
//!   down keeps the rows waiting; no job waits for it.
//!
//! One runId per attempt (a UUID derived from execution, job and attempt), the workflow
//! execution as the parent run, the job named `<workflow>.<job>` in the AI Flow namespace, and
//! the inputs and outputs from the lineage the attempt recorded.

use std::sync::Arc;
use std::time::Duration;

use aiflow_api::{Event, EventFilter, Offset};
use aiflow_db::Db;
use aiflow_notification::EventBus;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The `producer` of every event.
pub(crate) const PRODUCER: &str = concat!(
    "https://example.invalid/aiflow/v",
    env!("CARGO_PKG_VERSION")
);
/// The RunEvent schema the events follow.
pub(crate) const SCHEMA_URL: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const PARENT_SCHEMA_URL: &str =
    "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet";
/// The cursor's row.
const CURSOR: &str = "job_status";
/// Longest wait between two tries of an event the backend refused or did not take.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and as what the events go.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    /// The backend's endpoint (`http://marquez:5000/api/v1/lineage`).
    pub(crate) url: String,
    /// The job namespace (`openlineage_namespace`, default `aiflow`).
    pub(crate) namespace: String,
}

/// Starts the collector and the sender; both end with `shutdown`.
pub(crate) fn spawn(
    emitter: Emitter,
    db: Db,
    store: aiflow_meta::Store,
    bus: Arc<dyn EventBus>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (wake_tx, wake_rx) = watch::channel(());
    let collector = {
        let (emitter, db, shutdown) = (emitter.clone(), db.clone(), shutdown.clone());
        tokio::spawn(async move { collect(emitter, db, store, bus, wake_tx, shutdown).await })
    };
    let sender = tokio::spawn(send_loop(emitter, db, wake_rx, shutdown));
    tokio::spawn(async move {
        let _ = collector.await;
        let _ = sender.await;
    })
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A UUID (version 8, RFC 9562: derived) of `parts`: the same attempt always has the same runId.
pub(crate) fn run_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// ---- the collector

async fn collect(
    emitter: Emitter,
    db: Db,
    store: aiflow_meta::Store,
    bus: Arc<dyn EventBus>,
    wake: watch::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let filter = EventFilter {
        event_types: vec![aiflow_scheduler::service::JOB_STATUS.to_string()],
        ..EventFilter::default()
    };
    loop {
        let after = match cursor(&db).await {
            Ok(Some(o)) => Offset(o),
            // First start: from now on (history is not reported), kept at once.
            Ok(None) => match bus.latest_offset().await {
                Ok(o) => {
                    if let Err(e) = set_cursor(&db, o.0).await {
                        tracing::warn!(error = %e, "openlineage: cannot keep the cursor");
                    }
                    o
                }
                Err(e) => {
                    tracing::warn!(error = %e, "openlineage: cannot read the event bus; retrying");
                    if pause(&mut shutdown, Duration::from_secs(2)).await {
                        return;
                    }
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "openlineage: cannot read the cursor; retrying");
                if pause(&mut shutdown, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        let mut stream = match bus.subscribe(filter.clone(), after).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "openlineage: cannot follow the event bus; retrying");
                if pause(&mut shutdown, Duration::from_secs(2)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                n = stream.next() => n,
            };
            let Some(Ok(event)) = next else {
                tracing::warn!("openlineage: the event bus subscription ended; following it again");
                break;
            };
            if let Err(e) = take(&emitter, &db, &store, &event).await {
                tracing::warn!(offset = event.offset.0, error = %e, "openlineage: cannot record a run event; retrying");
                if pause(&mut shutdown, Duration::from_secs(2)).await {
                    return;
                }
                break;
            }
            let _ = wake.send(());
        }
    }
}

/// `true` when shutting down.
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|s| *s) => true,
        () = tokio::time::sleep(d) => false,
    }
}

async fn set_cursor(db: &Db, offset: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO openlineage_cursor (name, event_offset) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(CURSOR)
    .bind(offset)
    .execute(&db.pool)
    .await
    .map(|_| ())
}

async fn cursor(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_offset FROM openlineage_cursor WHERE name = $1")
        .bind(CURSOR)
        .fetch_optional(&db.pool)
        .await
}

/// One JOB_STATUS event: its RunEvent (if any) into the outbox, and the cursor past it.
async fn take(
    emitter: &Emitter,
    db: &Db,
    store: &aiflow_meta::Store,
    event: &Event,
) -> anyhow::Result<()> {
    let run_event = build(emitter, db, store, event).await?;
    let mut tx = db.pool.begin().await?;
    if let Some((run_id, event_type, body)) = run_event {
        // An end without a START (a job stopped before it ran) is not reported.
        let started: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM openlineage_outbox WHERE run_id = $1 AND event_type = 'START'",
        )
        .bind(&run_id)
        .fetch_one(&mut *tx)
        .await?;
        if event_type == "START" || started > 0 {
            let now = now_us();
            sqlx::query(
                "INSERT INTO openlineage_outbox (run_id, event_type, body, created_at, next_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (run_id, event_type) DO NOTHING",
            )
            .bind(&run_id)
            .bind(&event_type)
            .bind(body.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "INSERT INTO openlineage_cursor (name, event_offset) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET event_offset = excluded.event_offset \
         WHERE excluded.event_offset > openlineage_cursor.event_offset",
    )
    .bind(CURSOR)
    .bind(event.offset.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The RunEvent of a JOB_STATUS event: `(runId, eventType, body)`, or `None` for states that
/// are not an attempt's start or end.
async fn build(
    emitter: &Emitter,
    db: &Db,
    store: &aiflow_meta::Store,
    event: &Event,
) -> anyhow::Result<Option<(String, String, Value)>> {
    let event_type = match event.value.as_str() {
        "RUNNING" => "START",
        "SUCCEEDED" => "COMPLETE",
        "FAILED" | "RETRYING" => "FAIL",
        "STOPPED" => "ABORT",
        _ => return Ok(None),
    };
    let ctx = event.context.clone().unwrap_or(Value::Null);
    let (Some(execution), Some(workflow), Some(job)) = (
        ctx["execution"].as_str(),
        ctx["workflow"].as_str(),
        ctx["job"].as_str(),
    ) else {
        return Ok(None);
    };
    let attempt = ctx["attempt"].as_i64().unwrap_or(1);
    let run_id = run_uuid(&[execution, job, &attempt.to_string()]);
    let parent_run = run_uuid(&[execution]);
    let mut run_facets = json!({
        "parent": {
            "_producer": PRODUCER,
            "_schemaURL": PARENT_SCHEMA_URL,
            "run": {"runId": parent_run},
            "job": {"namespace": emitter.namespace, "name": workflow},
        }
    });
    let job_execution = job_execution_id(db, execution, job, attempt).await?;
    if let Some(id) = &job_execution {
        run_facets["aiflow"] = json!({
            "_producer": PRODUCER,
            "_schemaURL": format!("{PRODUCER}#AiflowRunFacet"),
            "jobExecution": id, "execution": execution, "attempt": attempt,
        });
    }
    let (inputs, outputs) = match (&job_execution, event_type) {
        (Some(id), "COMPLETE" | "FAIL" | "ABORT") => lineage(emitter, store, id).await,
        _ => (Vec::new(), Vec::new()),
    };
    let body = json!({
        "eventType": event_type,
        "eventTime": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "run": {"runId": run_id, "facets": run_facets},
        "job": {"namespace": emitter.namespace, "name": format!("{workflow}.{job}")},
        "inputs": inputs,
        "outputs": outputs,
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    });
    Ok(Some((run_id, event_type.to_string(), body)))
}

async fn job_execution_id(
    db: &Db,
    execution: &str,
    job: &str,
    attempt: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM job_executions WHERE workflow_execution_id = $1 AND job_name = $2 \
         AND attempt = $3 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(execution)
    .bind(job)
    .bind(attempt)
    .fetch_optional(&db.pool)
    .await
}

/// What the attempt read and wrote, as OpenLineage datasets: a dataset named
/// `scheme://authority/name` (from an OpenLineage namespace) splits back into namespace and name;
/// others are in the AI Flow namespace; a model is `model/NAME`.
async fn lineage(
    emitter: &Emitter,
    store: &aiflow_meta::Store,
    job_execution: &str,
) -> (Vec<Value>, Vec<Value>) {
    let node = format!("job_execution:{job_execution}");
    let graph = match store.lineage(&node, 1).await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(job_execution, error = %e, "openlineage: no lineage for the attempt");
            return (Vec::new(), Vec::new());
        }
    };
    let dataset = |id: &str| -> Option<Value> {
        let (kind, rest) = id.split_once(':')?;
        let (name, version) = rest.rsplit_once('@')?;
        let (namespace, name) = match kind {
            "dataset" => split_namespace(name).map_or_else(
                || (emitter.namespace.clone(), name.to_string()),
                |(ns, n)| (ns.to_string(), n.to_string()),
            ),
            "model" => (emitter.namespace.clone(), format!("model/{name}")),
            _ => return None,
        };
        Some(json!({
            "namespace": namespace,
            "name": name,
            "facets": {"version": {
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                "datasetVersion": version,
            }},
        }))
    };
    let inputs = graph
        .edges
        .iter()
        .filter(|e| e.to == node)
        .filter_map(|e| dataset(&e.from))
        .collect();
    let outputs = graph
        .edges
        .iter()
        .filter(|e| e.from == node)
        .filter_map(|e| dataset(&e.to))
        .collect();
    (inputs, outputs)
}

/// `s3://bucket/a/b` → `("s3://bucket", "a/b")`.
fn split_namespace(name: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = name.split_once("://")?;
    if scheme.is_empty() {
        return None;
    }
    let slash = rest.find('/')?;
    let cut = scheme.len() + 3 + slash;
    Some((&name[..cut], &name[cut + 1..]))
}

// ---- the sender

async fn send_loop(
    emitter: Emitter,
    db: Db,
    mut wake: watch::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    // HTTPS trusts the system roots and the CA of AIFLOW_CA_CERT, as every client here does.
    let http = match aiflow_sdk::tls::http_builder(aiflow_sdk::tls::ca_cert_from_env().as_deref())
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())
        }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "openlineage: no HTTP client; nothing is sent (the outbox keeps the events)");
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
    };
    loop {
        let idle = match send_due(&emitter, &db, &http).await {
            Ok(sent) => sent == 0,
            Err(e) => {
                tracing::warn!(error = %e, "openlineage: cannot read the outbox");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = wake.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else if *shutdown.borrow() {
            return;
        }
    }
}

/// Sends the due rows in order; stops at the first the backend does not take (it is tried
/// again after a backoff). Returns how many were sent.
async fn send_due(emitter: &Emitter, db: &Db, http: &reqwest::Client) -> anyhow::Result<usize> {
    let now = now_us();
    // The oldest unsent rows, in order: one that waits for its retry (or is being sent by
    // another replica) holds back those after it.
    let rows: Vec<(i64, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, body, attempts, next_at, claimed_until FROM openlineage_outbox \
         WHERE sent_at IS NULL ORDER BY id LIMIT 100",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut sent = 0;
    for (id, body, attempts, next_at, claimed_until) in rows {
        if next_at > now || claimed_until.is_some_and(|c| c >= now) {
            break;
        }
        // Another replica may send the same row: the one that claims it does.
        let claimed = sqlx::query(
            "UPDATE openlineage_outbox SET claimed_until = $1 WHERE id = $2 AND sent_at IS NULL \
             AND (claimed_until IS NULL OR claimed_until < $3)",
        )
        .bind(now + 30_000_000)
        .bind(id)
        .bind(now_us())
        .execute(&db.pool)
        .await?;
        if claimed.rows_affected() == 0 {
            break;
        }
        let result = http
            .post(&emitter.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let failure = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the backend answered {}", r.status())),
            Err(e) => Some(format!("cannot reach the backend: {e}")),
        };
        match failure {
            None => {
                sqlx::query("UPDATE openlineage_outbox SET sent_at = $1, claimed_until = NULL WHERE id = $2")
                    .bind(now_us())
                    .bind(id)
                    .execute(&db.pool)
                    .await?;
                sent += 1;
            }
            Some(err) => {
                let backoff =
                    Duration::from_millis(500u64.saturating_mul(1 << attempts.clamp(0, 10)))
                        .min(MAX_BACKOFF);
                tracing::warn!(id, attempts = attempts + 1, retry_in_ms = backoff.as_millis() as u64, error = %err, url = %emitter.url, "openlineage: event not delivered; kept for a retry");
                sqlx::query(
                    "UPDATE openlineage_outbox SET attempts = attempts + 1, next_at = $1, \
                     claimed_until = NULL, last_error = $2 WHERE id = $3",
                )
                .bind(now_us() + backoff.as_micros() as i64)
                .bind(err)
                .bind(id)
                .execute(&db.pool)
                .await?;
                // In order: nothing after it goes before it.
                break;
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuids_one_per_attempt() {
        let a = run_uuid(&["e1", "train", "1"]);
        assert_eq!(a, run_uuid(&["e1", "train", "1"]));
        assert_ne!(a, run_uuid(&["e1", "train", "2"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "RFC variant");
    }

    #[test]
    fn dataset_names_split_back_into_namespace_and_name() {
        assert_eq!(
            split_namespace("s3://bucket/a/b"),
            Some(("s3://bucket", "a/b"))
        );
        assert_eq!(
            split_namespace("postgres://a/orders"),
            Some(("postgres://a", "orders"))
        );
        assert_eq!(split_namespace("features"), None);
        assert_eq!(split_namespace("s3://bucket"), None);
    }
}
