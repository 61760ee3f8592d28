//! Lineage: edges between job executions, dataset versions and model versions; the graph
//! around a node; OpenLineage RunEvents mapped onto these records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use aiflow_api::meta::{
    DatasetVersionRef, LineageEdge, LineageGraph, LineageNode, NewDatasetVersion, NewLineage,
    NewModelVersion, OpenLineageDataset, OpenLineageResult, OpenLineageRunEvent,
};

use super::entities::MODELS;
use super::outbox::enqueue;
use super::sql::{get_i, get_s, now_us, to_us};
use super::{Store, Tx};
use crate::error::{Error, Result};

/// Largest number of nodes a lineage answer holds.
const MAX_NODES: usize = 2000;

/// A node as stored: (kind, id).
type Key = (String, String);

impl Store {
    /// Records an edge; an edge already stored is kept as is.
    pub(crate) async fn insert_edge(
        tx: &mut Tx,
        src: (&str, &str),
        dst: (&str, &str),
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta_lineage_edges (src_kind, src_id, dst_kind, dst_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(src.0)
        .bind(src.1)
        .bind(dst.0)
        .bind(dst.1)
        .bind(now_us())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Resolves a public node id (`dataset:NAME@V`, `model:NAME@V`, `job_execution:ID`) to
    /// its stored key; 400/422 naming `field` when malformed or unknown.
    async fn node_key(
        &self,
        conn: &mut sqlx::AnyConnection,
        node: &str,
        field: &str,
    ) -> Result<Key> {
        let bad = || {
            Error::invalid(
                field,
                format!(
                    "{field} {node:?} is not dataset:NAME@VERSION, model:NAME@VERSION or job_execution:ID"
                ),
            )
        };
        let (kind, rest) = node.split_once(':').ok_or_else(bad)?;
        match kind {
            "job_execution" | "job" => {
                Self::job_execution_ref(conn, rest, field).await?;
                Ok(("job_execution".into(), rest.into()))
            }
            "dataset" | "model" => {
                let (name, v) = rest.rsplit_once('@').ok_or_else(bad)?;
                let version: i64 = v.parse().map_err(|_| bad())?;
                let id = if kind == "dataset" {
                    self.dataset_version_id(
                        conn,
                        &DatasetVersionRef {
                            dataset: name.into(),
                            version,
                        },
                        field,
                    )
                    .await?
                } else {
                    let id: Option<i64> = sqlx::query_scalar(
                        "SELECT v.id FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id \
                         WHERE m.name = $1 AND m.deleted_at IS NULL AND v.version = $2",
                    )
                    .bind(name)
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
                    id.ok_or_else(|| {
                        Error::unknown(
                            field,
                            format!("{field}: model version {name}@{version} does not exist"),
                        )
                    })?
                };
                Ok((format!("{kind}_version"), id.to_string()))
            }
            _ => Err(bad()),
        }
    }

    /// The public id and name of a stored node.
    async fn describe(&self, key: &Key) -> Result<(String, String)> {
        let id: i64 = key.1.parse().unwrap_or(0);
        match key.0.as_str() {
            "dataset_version" => {
                let r = sqlx::query(
                    "SELECT d.name, v.version FROM meta_dataset_versions v \
                     JOIN meta_datasets d ON d.id = v.dataset_id WHERE v.id = $1",
                )
                .bind(id)
                .fetch_one(&self.db.pool)
                .await?;
                let name = get_s(&r, "name")?;
                Ok((format!("dataset:{name}@{}", get_i(&r, "version")?), name))
            }
            "model_version" => {
                let r = sqlx::query(
                    "SELECT m.name, v.version FROM meta_model_versions v \
                     JOIN meta_models m ON m.id = v.model_id WHERE v.id = $1",
                )
                .bind(id)
                .fetch_one(&self.db.pool)
                .await?;
                let name = get_s(&r, "name")?;
                Ok((format!("model:{name}@{}", get_i(&r, "version")?), name))
            }
            _ => {
                let name: Option<String> =
                    sqlx::query_scalar("SELECT job_name FROM job_executions WHERE id = $1")
                        .bind(&key.1)
                        .fetch_optional(&self.db.pool)
                        .await?;
                Ok((format!("job_execution:{}", key.1), name.unwrap_or_default()))
            }
        }
    }

    /// Records what a job execution read (`inputs`) and wrote (`outputs`).
    pub async fn add_lineage(&self, l: &NewLineage) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "add_lineage");
        let mut tx = self.begin().await?;
        // Take the SQLite write lock before reading.
        sqlx::query("UPDATE job_executions SET updated_at = updated_at WHERE id = $1")
            .bind(&l.job_execution)
            .execute(&mut *tx)
            .await?;
        Self::job_execution_ref(&mut tx, &l.job_execution, "job_execution").await?;
        let job = ("job_execution", l.job_execution.as_str());
        for (i, n) in l.inputs.iter().enumerate() {
            let k = self.node_key(&mut tx, n, &format!("inputs[{i}]")).await?;
            Self::insert_edge(&mut tx, (&k.0, &k.1), job).await?;
        }
        for (i, n) in l.outputs.iter().enumerate() {
            let k = self.node_key(&mut tx, n, &format!("outputs[{i}]")).await?;
            Self::insert_edge(&mut tx, job, (&k.0, &k.1)).await?;
        }
        self.commit(tx, false).await?;
        tracing::info!(job_execution = %l.job_execution, inputs = l.inputs.len(), outputs = l.outputs.len(), "lineage recorded");
        Ok(())
    }

    /// The graph within `depth` hops of `node`, following edges both ways.
    pub async fn lineage(&self, node: &str, depth: u32) -> Result<LineageGraph> {
        let _timer = aiflow_db::QueryTimer::new("meta", "lineage");
        if !(1..=10).contains(&depth) {
            return Err(Error::invalid("depth", "depth must be 1 to 10"));
        }
        let root = {
            let mut conn = self.db.pool.acquire().await?;
            self.node_key(&mut conn, node, "node").await?
        };
        let mut dist: BTreeMap<Key, u32> = BTreeMap::from([(root.clone(), 0)]);
        let mut edges: BTreeSet<(Key, Key)> = BTreeSet::new();
        let mut queue = VecDeque::from([root.clone()]);
        while let Some(k) = queue.pop_front() {
            let d = dist[&k];
            if d >= depth || dist.len() >= MAX_NODES {
                continue;
            }
            let rows = sqlx::query(
                "SELECT src_kind, src_id, dst_kind, dst_id FROM meta_lineage_edges \
                 WHERE src_kind = $1 AND src_id = $2 \
                 UNION SELECT src_kind, src_id, dst_kind, dst_id FROM meta_lineage_edges \
                 WHERE dst_kind = $1 AND dst_id = $2",
            )
            .bind(&k.0)
            .bind(&k.1)
            .fetch_all(&self.db.pool)
            .await?;
            for r in rows {
                let src = (get_s(&r, "src_kind")?, get_s(&r, "src_id")?);
                let dst = (get_s(&r, "dst_kind")?, get_s(&r, "dst_id")?);
                let other = if src == k { dst.clone() } else { src.clone() };
                if !dist.contains_key(&other) {
                    dist.insert(other.clone(), d + 1);
                    queue.push_back(other);
                }
                edges.insert((src, dst));
            }
        }
        let mut names = BTreeMap::new();
        let mut nodes = Vec::with_capacity(dist.len());
        for (k, d) in &dist {
            let (id, name) = self.describe(k).await?;
            names.insert(k.clone(), id.clone());
            nodes.push(LineageNode {
                id,
                kind: k.0.clone(),
                name,
                distance: *d,
            });
        }
        nodes.sort_by(|a, b| a.distance.cmp(&b.distance).then(a.id.cmp(&b.id)));
        let mut out_edges: Vec<LineageEdge> = edges
            .iter()
            .filter_map(|(s, d)| {
                Some(LineageEdge {
                    from: names.get(s)?.clone(),
                    to: names.get(d)?.clone(),
                })
            })
            .collect();
        out_edges.sort();
        Ok(LineageGraph {
            root: names[&root].clone(),
            nodes,
            edges: out_edges,
        })
    }

    /// Maps an OpenLineage RunEvent: the run becomes a job execution (id = runId); inputs are
    /// the latest versions of the named datasets (registered on first sight); on COMPLETE each
    /// output becomes a new dataset version, or a new model version for `model/NAME` outputs.
    pub async fn openlineage(&self, ev: &OpenLineageRunEvent) -> Result<OpenLineageResult> {
        let _timer = aiflow_db::QueryTimer::new("meta", "openlineage");
        let state = match ev.event_type.to_ascii_uppercase().as_str() {
            "START" | "RUNNING" => "RUNNING",
            "COMPLETE" => "SUCCEEDED",
            "FAIL" => "FAILED",
            "ABORT" => "STOPPED",
            "OTHER" => "RUNNING",
            other => {
                return Err(Error::unprocessable(
                    "eventType",
                    format!(
                        "eventType {other:?} is not START, RUNNING, COMPLETE, ABORT, FAIL or OTHER"
                    ),
                ));
            }
        };
        let run_id = ev.run.run_id.trim();
        if run_id.is_empty() || run_id.len() > 200 {
            return Err(Error::unprocessable(
                "run.runId",
                "run.runId must be 1 to 200 characters",
            ));
        }
        if ev.job.name.is_empty() {
            return Err(Error::unprocessable(
                "job.name",
                "job.name must not be empty",
            ));
        }
        let t = to_us(ev.event_time);
        let now = now_us();
        let ended = matches!(state, "SUCCEEDED" | "FAILED" | "STOPPED");
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE job_executions SET state = $1, updated_at = $2, \
             ended_at = CASE WHEN $3 = 1 THEN $4 ELSE ended_at END WHERE id = $5",
        )
        .bind(state)
        .bind(now)
        .bind(i64::from(ended))
        .bind(t)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let props = serde_json::json!({"openlineage": {"namespace": ev.job.namespace, "producer": ev.producer}});
            sqlx::query(
                "INSERT INTO job_executions (id, workflow_execution_id, job_name, attempt, state, \
                 properties, created_at, started_at, ended_at, updated_at) \
                 VALUES ($1, NULL, $2, 1, $3, $4, $5, $5, $6, $7)",
            )
            .bind(run_id)
            .bind(&ev.job.name)
            .bind(state)
            .bind(props.to_string())
            .bind(t)
            .bind(if ended { Some(t) } else { None })
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let job = ("job_execution", run_id);
        let mut inputs = Vec::new();
        for (i, d) in ev.inputs.iter().enumerate() {
            let field = format!("inputs[{i}]");
            let (kind, name) = ol_target(d, &field)?;
            let key = if kind == "model" {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT v.id FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id \
                     WHERE m.name = $1 AND m.deleted_at IS NULL AND v.version = m.latest_version",
                )
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?;
                let id = v.ok_or_else(|| {
                    Error::unknown(&field, format!("{field}: model {name:?} has no version"))
                })?;
                ("model_version", id)
            } else {
                (
                    "dataset_version",
                    self.ol_dataset_version(&mut tx, d, &name, None, false)
                        .await?,
                )
            };
            Self::insert_edge(&mut tx, (key.0, &key.1.to_string()), job).await?;
            inputs.push(self.describe_in(&mut tx, key.0, key.1).await?);
        }
        let mut outputs = Vec::new();
        if state == "SUCCEEDED" {
            for (i, d) in ev.outputs.iter().enumerate() {
                let field = format!("outputs[{i}]");
                let (kind, name) = ol_target(d, &field)?;
                let key = if kind == "model" {
                    self.ensure_named(&mut tx, MODELS.table, &name).await?;
                    let v = NewModelVersion {
                        uri: Some(format!("{}/{}", d.namespace, d.name)),
                        status: aiflow_api::meta::ModelStatus::Ready,
                        source_job_execution: Some(run_id.to_string()),
                        ..NewModelVersion::default()
                    };
                    let version = self.insert_model_version(&mut tx, &name, &v, "{}").await?;
                    let id: i64 = sqlx::query_scalar(
                        "SELECT v.id FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id \
                         WHERE m.name = $1 AND m.deleted_at IS NULL AND v.version = $2",
                    )
                    .bind(&name)
                    .bind(version)
                    .fetch_one(&mut *tx)
                    .await?;
                    ("model_version", id)
                } else {
                    let id = self
                        .ol_dataset_version(&mut tx, d, &name, Some(run_id), true)
                        .await?;
                    ("dataset_version", id)
                };
                Self::insert_edge(&mut tx, job, (key.0, &key.1.to_string())).await?;
                outputs.push(self.describe_in(&mut tx, key.0, key.1).await?);
            }
        }
        self.commit(tx, true).await?;
        tracing::info!(run = run_id, job = %ev.job.name, event_type = %ev.event_type, "openlineage event mapped");
        Ok(OpenLineageResult {
            job_execution: run_id.to_string(),
            state: state.to_string(),
            inputs,
            outputs,
        })
    }

    async fn describe_in(&self, tx: &mut Tx, kind: &str, id: i64) -> Result<String> {
        let (table, parent, pk) = if kind == "model_version" {
            ("meta_model_versions", "meta_models", "model_id")
        } else {
            ("meta_dataset_versions", "meta_datasets", "dataset_id")
        };
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.name, v.version FROM {table} v JOIN {parent} p ON p.id = v.{pk} WHERE v.id = $1"
        )))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        let prefix = if kind == "model_version" {
            "model"
        } else {
            "dataset"
        };
        Ok(format!(
            "{prefix}:{}@{}",
            get_s(&r, "name")?,
            get_i(&r, "version")?
        ))
    }

    /// The id of a live named row, created (bare) when missing.
    async fn ensure_named(&self, tx: &mut Tx, table: &'static str, name: &str) -> Result<i64> {
        let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table} WHERE name = $1 AND deleted_at IS NULL"
        )))
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = found {
            return Ok(id);
        }
        let now = now_us();
        let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (name, properties, tags, created_at, updated_at) \
             VALUES ($1, '{{\"source\":\"openlineage\"}}', '{{}}', $2, $2) RETURNING id"
        )))
        .bind(name)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        Ok(id)
    }

    /// The dataset an OpenLineage dataset stands for (`name` from [`ol_target`]: qualified by
    /// its namespace), registered on first sight with its namespace and name in its
    /// properties. A dataset registered under the bare name before namespaces were kept, whose
    /// latest version has the URI `<namespace>/<name>`, is still that dataset. The schema facet
    /// fills the dataset's schema and the documentation facet its description.
    async fn ol_dataset(&self, tx: &mut Tx, d: &OpenLineageDataset, name: &str) -> Result<i64> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM meta_datasets WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        let legacy = if found.is_none() && name != d.name {
            sqlx::query_scalar(
                "SELECT d.id FROM meta_datasets d JOIN meta_dataset_versions v                  ON v.dataset_id = d.id AND v.version = d.latest_version                  WHERE d.name = $1 AND d.deleted_at IS NULL AND v.uri = $2",
            )
            .bind(&d.name)
            .bind(format!("{}/{}", d.namespace, d.name))
            .fetch_optional(&mut **tx)
            .await?
        } else {
            None
        };
        let id = match found.or(legacy) {
            Some(id) => id,
            None => {
                let props = serde_json::json!({
                    "source": "openlineage",
                    "openlineage": {"namespace": d.namespace, "name": d.name},
                });
                sqlx::query_scalar(
                    "INSERT INTO meta_datasets (name, properties, tags, created_at, updated_at)                      VALUES ($1, $2, '{}', $3, $3) RETURNING id",
                )
                .bind(name)
                .bind(props.to_string())
                .bind(now_us())
                .fetch_one(&mut **tx)
                .await?
            }
        };
        let (schema, description) = ol_facets(d);
        if let Some(fields) = schema {
            sqlx::query("UPDATE meta_datasets SET schema_fields = $1 WHERE id = $2")
                .bind(serde_json::to_string(&fields).unwrap_or_else(|_| "[]".into()))
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        if let Some(text) = description {
            sqlx::query("UPDATE meta_datasets SET description = $1 WHERE id = $2")
                .bind(text)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(id)
    }

    /// The dataset version an OpenLineage dataset stands for: a new one (`create`) or the
    /// latest (made when the dataset has none).
    async fn ol_dataset_version(
        &self,
        tx: &mut Tx,
        d: &OpenLineageDataset,
        name: &str,
        produced_by: Option<&str>,
        create: bool,
    ) -> Result<i64> {
        let dataset_id = self.ol_dataset(tx, d, name).await?;
        if !create {
            let latest: Option<i64> = sqlx::query_scalar(
                "SELECT v.id FROM meta_dataset_versions v JOIN meta_datasets d ON d.id = v.dataset_id \
                 WHERE d.id = $1 AND v.version = d.latest_version",
            )
            .bind(dataset_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(id) = latest {
                return Ok(id);
            }
        }
        let version: i64 = sqlx::query_scalar(
            "UPDATE meta_datasets SET latest_version = latest_version + 1, updated_at = $1 \
             WHERE id = $2 RETURNING latest_version",
        )
        .bind(now_us())
        .bind(dataset_id)
        .fetch_one(&mut **tx)
        .await?;
        let uri = format!("{}/{}", d.namespace, d.name);
        let v = NewDatasetVersion {
            uri: Some(uri.clone()),
            produced_by: produced_by.map(str::to_string),
            ..NewDatasetVersion::default()
        };
        let id = Self::insert_dataset_version(tx, dataset_id, version, &v, "{}").await?;
        enqueue(
            tx,
            &format!("dataset/{name}"),
            &version.to_string(),
            aiflow_api::meta::DATASET_VERSION_CREATED,
            serde_json::json!({"dataset": name, "version": version, "uri": uri}),
        )
        .await?;
        Ok(id)
    }
}

/// The OpenLineage namespace of AI Flow's own datasets (their names stay bare).
pub(crate) const OPENLINEAGE_NAMESPACE: &str = "aiflow";

/// The schema facet (`facets.schema.fields[].name|type`) and the documentation facet
/// (`facets.documentation.description`) of a dataset.
fn ol_facets(
    d: &OpenLineageDataset,
) -> (Option<Vec<aiflow_api::meta::SchemaField>>, Option<String>) {
    let Some(facets) = d.facets.as_ref() else {
        return (None, None);
    };
    let schema = facets["schema"]["fields"].as_array().map(|fields| {
        fields
            .iter()
            .filter_map(|f| {
                Some(aiflow_api::meta::SchemaField {
                    name: f["name"].as_str()?.to_string(),
                    data_type: f["type"].as_str().unwrap_or("").to_string(),
                })
            })
            .collect()
    });
    let description = facets["documentation"]["description"]
        .as_str()
        .map(str::to_string);
    (schema, description)
}

/// `("model", NAME)` for `model/NAME` names or the `aiflow.model` namespace, else
/// `("dataset", NAME)`. A dataset keeps its namespace in its name, `<namespace>/<name>`
/// (`orders` in `postgres://a` is `postgres://a/orders`, a dataset apart from `s3://b/orders`),
/// except in the namespace `aiflow` (AI Flow's own datasets) or an empty one. Characters names
/// may not hold are replaced by `_`.
fn ol_target(d: &OpenLineageDataset, field: &str) -> Result<(&'static str, String)> {
    let ns = d.namespace.trim().trim_end_matches('/');
    let qualified;
    let (kind, raw) = if let Some(n) = d.name.strip_prefix("model/") {
        ("model", n)
    } else if d.namespace == "aiflow.model" {
        ("model", d.name.as_str())
    } else if ns.is_empty() || ns == OPENLINEAGE_NAMESPACE {
        ("dataset", d.name.as_str())
    } else {
        qualified = format!("{ns}/{}", d.name.trim_start_matches('/'));
        ("dataset", qualified.as_str())
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_whitespace()
                || aiflow_api::is_deceptive_char(c)
                || matches!(c, '?' | '&' | '=' | '@' | ',' | '%')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    while name.starts_with(['/', '.']) {
        name.remove(0);
    }
    crate::tags::check_name(&name, &format!("{field}.name"))?;
    Ok((kind, name))
}
