//! The MLflow model registry over models, model versions, stages and aliases. Every change goes
//! through the store functions the native routes use, so `MODEL_VERSION_CREATED`,
//! `MODEL_ALIAS_MOVED`, `MODEL_VALIDATED`, `MODEL_DEPLOYED` and `MODEL_DEPRECATED` are written to
//! the outbox in the same transaction.

use std::collections::BTreeMap;

use aiflow_api::meta::{MetaUpdate, Model, ModelStage, ModelVersion, ModelVersionUpdate};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::filter::{self, Row, Space, Val};
use super::{
    MlError, MlResult, Req, description_update, max_results, new_model, new_version, paginate,
    parse_filter, parse_order, stage_from_mlflow, version_json, version_update,
};
use crate::Store;
use crate::error::{Error, Result};
use crate::store::models::{MV_SELECT, version_row};
use crate::store::sql::{Sql, now_us};

impl Store {
    /// Renames a live model.
    pub(crate) async fn ml_rename_model(&self, name: &str, new_name: &str) -> Result<()> {
        crate::tags::check_name(new_name, "new_name")?;
        let done = sqlx::query(
            "UPDATE meta_models SET name = $1, updated_at = $2 WHERE name = $3 AND deleted_at IS NULL",
        )
        .bind(new_name)
        .bind(now_us())
        .bind(name)
        .execute(&self.db.pool)
        .await
        .map_err(crate::store::dup("registered model", new_name))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("model", name));
        }
        tracing::info!(model = name, new_name, "model renamed");
        Ok(())
    }

    /// Deletes a version: its aliases first (each move recorded and announced), then its
    /// stage history, inputs, lineage edges and row. Version numbers are not reused.
    pub(crate) async fn ml_delete_model_version(&self, name: &str, version: i64) -> Result<()> {
        let mv = self.get_model_version(name, version).await?;
        for alias in &mv.aliases {
            self.delete_alias(name, alias).await?;
        }
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM meta_model_stage_history WHERE model_version_id = $1",
            "DELETE FROM meta_model_version_inputs WHERE model_version_id = $1",
        ] {
            sqlx::query(sql).bind(mv.id).execute(&mut *tx).await?;
        }
        let id = mv.id.to_string();
        sqlx::query(
            "DELETE FROM meta_lineage_edges WHERE (src_kind = 'model_version' AND src_id = $1) \
             OR (dst_kind = 'model_version' AND dst_id = $1)",
        )
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM meta_model_versions WHERE id = $1")
            .bind(mv.id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx, false).await?;
        tracing::info!(model = name, version, "model version deleted");
        Ok(())
    }

    /// Every version of every live model (of one model with `Some`).
    pub(crate) async fn ml_all_versions(&self, model: Option<&str>) -> Result<Vec<ModelVersion>> {
        let mut s = Sql::new(MV_SELECT);
        s.push(" WHERE m.deleted_at IS NULL");
        if let Some(m) = model {
            s.push(" AND m.name = ").bind(m);
        }
        s.push(" ORDER BY m.name, v.version");
        let rows = s.query().fetch_all(&self.db.pool).await?;
        let vs = rows.iter().map(version_row).collect::<Result<Vec<_>>>()?;
        self.complete_versions(vs).await
    }

    /// The names of live models.
    pub(crate) async fn ml_model_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM meta_models WHERE deleted_at IS NULL ORDER BY name",
        )
        .fetch_all(&self.db.pool)
        .await?)
    }

    pub(crate) async fn ml_run_exists(&self, id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_executions WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await?;
        Ok(n > 0)
    }
}

fn version_of(req: &Req) -> MlResult<i64> {
    let v = req.req("version")?;
    v.trim()
        .parse()
        .map_err(|_| MlError::invalid(format!("version {v:?} is not a version number")))
}

/// The latest version in each stage.
fn latest_versions(versions: &[ModelVersion], stages: &[String]) -> Vec<Value> {
    let mut by_stage: BTreeMap<&'static str, &ModelVersion> = BTreeMap::new();
    for v in versions {
        let st = super::stage_to_mlflow(v.stage);
        if !stages.is_empty() && !stages.iter().any(|s| s.eq_ignore_ascii_case(st)) {
            continue;
        }
        match by_stage.get(st) {
            Some(cur) if cur.version > v.version => {}
            _ => {
                by_stage.insert(st, v);
            }
        }
    }
    by_stage.values().map(|v| version_json(v)).collect()
}

async fn model_json(s: &Store, m: &Model) -> MlResult<Value> {
    let versions = s.ml_all_versions(Some(&m.name)).await?;
    let mut out = json!({
        "name": m.name,
        "creation_timestamp": m.created_at.timestamp_millis(),
        "last_updated_timestamp": m.updated_at.timestamp_millis(),
        "latest_versions": latest_versions(&versions, &[]),
        "tags": super::kv_json(&m.tags),
        "aliases": m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect::<Vec<_>>(),
    });
    if let Some(d) = &m.description {
        out["description"] = d.clone().into();
    }
    Ok(out)
}

struct ModelRow<'a>(&'a Model);

impl Row for ModelRow<'_> {
    fn get(&self, space: Space, key: &str) -> Option<Val> {
        match (space, key) {
            (Space::Tag, k) => self.0.tags.get(k).cloned().map(Val::S),
            (Space::Attribute, "name") => Some(Val::S(self.0.name.clone())),
            (Space::Attribute, "creation_timestamp") => {
                Some(Val::N(self.0.created_at.timestamp_millis() as f64))
            }
            (Space::Attribute, "last_updated_timestamp") => {
                Some(Val::N(self.0.updated_at.timestamp_millis() as f64))
            }
            _ => None,
        }
    }
}

struct VersionRow<'a>(&'a ModelVersion);

impl Row for VersionRow<'_> {
    fn get(&self, space: Space, key: &str) -> Option<Val> {
        let v = self.0;
        match (space, key) {
            (Space::Tag, k) => v.tags.get(k).cloned().map(Val::S),
            (Space::Attribute, "name") => Some(Val::S(v.model.clone())),
            (Space::Attribute, "version_number" | "version") => Some(Val::N(v.version as f64)),
            (Space::Attribute, "run_id") => version_json(v)["run_id"]
                .as_str()
                .map(|r| Val::S(r.to_string())),
            (Space::Attribute, "source_path" | "source") => v.uri.clone().map(Val::S),
            (Space::Attribute, "current_stage") => {
                Some(Val::S(super::stage_to_mlflow(v.stage).into()))
            }
            (Space::Attribute, "creation_timestamp") => {
                Some(Val::N(v.created_at.timestamp_millis() as f64))
            }
            (Space::Attribute, "last_updated_timestamp") => {
                Some(Val::N(v.updated_at.timestamp_millis() as f64))
            }
            _ => None,
        }
    }
}

fn with_next(mut out: Value, next: Option<String>) -> Value {
    if let Some(n) = next {
        out["next_page_token"] = n.into();
    }
    out
}

pub(super) async fn dispatch(
    s: &Store,
    method: &Method,
    endpoint: &str,
    req: &Req,
) -> MlResult<Value> {
    match endpoint {
        "registered-models/create" => {
            let m = s
                .create_model(&new_model(req)?)
                .await
                .map_err(|e| match e {
                    Error::Conflict { .. } => MlError::new(
                        StatusCode::BAD_REQUEST,
                        "RESOURCE_ALREADY_EXISTS",
                        format!(
                            "Registered Model (name={}) already exists.",
                            req.s("name").unwrap_or_default()
                        ),
                    ),
                    e => e.into(),
                })?;
            Ok(json!({"registered_model": model_json(s, &m).await?}))
        }
        "registered-models/get" => {
            let m = s.get_model(&req.req("name")?).await?;
            Ok(json!({"registered_model": model_json(s, &m).await?}))
        }
        "registered-models/rename" => {
            let name = req.req("name")?;
            let new_name = req.req("new_name")?;
            s.ml_rename_model(&name, &new_name).await?;
            let m = s.get_model(&new_name).await?;
            Ok(json!({"registered_model": model_json(s, &m).await?}))
        }
        "registered-models/update" => {
            let name = req.req("name")?;
            let m = match req.s("description") {
                Some(d) => s.update_model(&name, &description_update(d)).await?,
                None => s.get_model(&name).await?,
            };
            Ok(json!({"registered_model": model_json(s, &m).await?}))
        }
        "registered-models/delete" => {
            s.delete_model(&req.req("name")?).await?;
            Ok(json!({}))
        }
        "registered-models/search" | "registered-models/list" => {
            let allowed = ["name", "creation_timestamp", "last_updated_timestamp"];
            let f = parse_filter(req, &allowed, "registered models")?;
            let order = parse_order(req, &allowed, "registered models")?;
            let max = max_results(req, 100, 1000)?;
            let mut models = Vec::new();
            for n in s.ml_model_names().await? {
                if let Ok(m) = s.get_model(&n).await
                    && f.matches(&ModelRow(&m))
                {
                    models.push(m);
                }
            }
            models.sort_by(|a, b| {
                filter::compare(&order, &ModelRow(a), &ModelRow(b))
                    .then_with(|| a.name.cmp(&b.name))
            });
            let (page, next) = paginate(models, max, req.s("page_token").as_deref())?;
            let mut out = Vec::new();
            for m in &page {
                out.push(model_json(s, m).await?);
            }
            Ok(with_next(json!({"registered_models": out}), next))
        }
        "registered-models/get-latest-versions" => {
            let name = req.req("name")?;
            s.get_model(&name).await?;
            let versions = s.ml_all_versions(Some(&name)).await?;
            Ok(json!({"model_versions": latest_versions(&versions, &req.strings("stages"))}))
        }
        "registered-models/set-tag" | "registered-models/delete-tag" => {
            let name = req.req("name")?;
            let key = req.req("key")?;
            let mut m = s.get_model(&name).await?;
            if endpoint.ends_with("set-tag") {
                m.tags.insert(key, req.s("value").unwrap_or_default());
            } else if m.tags.remove(&key).is_none() {
                return Err(MlError::not_found(format!(
                    "no tag {key:?} on registered model {name:?}"
                )));
            }
            let u = MetaUpdate {
                description: None,
                properties: None,
                tags: Some(m.tags),
            };
            s.update_model(&name, &u).await?;
            Ok(json!({}))
        }
        "registered-models/alias" => {
            let name = req.req("name")?;
            let alias = req.req("alias")?;
            match *method {
                Method::POST | Method::PUT => {
                    s.set_alias(&name, &alias, version_of(req)?).await?;
                    Ok(json!({}))
                }
                Method::DELETE => {
                    s.delete_alias(&name, &alias).await?;
                    Ok(json!({}))
                }
                _ => {
                    let a = s.get_alias(&name, &alias, None).await?;
                    let v = s.get_model_version(&name, a.version).await?;
                    Ok(json!({"model_version": version_json(&v)}))
                }
            }
        }
        "model-versions/create" => {
            let name = req.req("name")?;
            let run_known = match req.s("run_id").filter(|r| !r.is_empty()) {
                Some(r) => s.ml_run_exists(&r).await?,
                None => false,
            };
            let v = s
                .create_model_version(&name, &new_version(req, run_known)?)
                .await?;
            Ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/get" => {
            let v = s
                .get_model_version(&req.req("name")?, version_of(req)?)
                .await?;
            Ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/update" => {
            let name = req.req("name")?;
            let version = version_of(req)?;
            let v = match req.s("description") {
                Some(d) => {
                    let mut u = version_update();
                    u.description = Some(d);
                    s.update_model_version(&name, version, &u).await?
                }
                None => s.get_model_version(&name, version).await?,
            };
            Ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/delete" => {
            s.ml_delete_model_version(&req.req("name")?, version_of(req)?)
                .await?;
            Ok(json!({}))
        }
        "model-versions/search" => {
            let allowed = [
                "name",
                "version_number",
                "run_id",
                "source_path",
                "current_stage",
                "creation_timestamp",
                "last_updated_timestamp",
            ];
            let f = parse_filter(req, &allowed, "model versions")?;
            let order = parse_order(req, &allowed, "model versions")?;
            let max = max_results(req, 10_000, 200_000)?;
            let mut vs: Vec<ModelVersion> = s
                .ml_all_versions(None)
                .await?
                .into_iter()
                .filter(|v| f.matches(&VersionRow(v)))
                .collect();
            vs.sort_by(|a, b| {
                filter::compare(&order, &VersionRow(a), &VersionRow(b))
                    .then_with(|| a.model.cmp(&b.model))
                    .then_with(|| b.version.cmp(&a.version))
            });
            let (page, next) = paginate(vs, max, req.s("page_token").as_deref())?;
            Ok(with_next(
                json!({"model_versions": page.iter().map(version_json).collect::<Vec<_>>()}),
                next,
            ))
        }
        "model-versions/set-tag" | "model-versions/delete-tag" => {
            let name = req.req("name")?;
            let version = version_of(req)?;
            let key = req.req("key")?;
            let mut tags = s.get_model_version(&name, version).await?.tags;
            if endpoint.ends_with("set-tag") {
                tags.insert(key, req.s("value").unwrap_or_default());
            } else if tags.remove(&key).is_none() {
                return Err(MlError::not_found(format!(
                    "no tag {key:?} on model version {name}@{version}"
                )));
            }
            let mut u = version_update();
            u.tags = Some(tags);
            s.update_model_version(&name, version, &u).await?;
            Ok(json!({}))
        }
        "model-versions/transition-stage" => {
            let name = req.req("name")?;
            let version = version_of(req)?;
            let to = stage_from_mlflow(&req.req("stage")?)?;
            let archive = req.b("archive_existing_versions");
            let v = s
                .update_model_version(
                    &name,
                    version,
                    &ModelVersionUpdate {
                        stage: Some(to),
                        reason: Some("mlflow transition-stage".into()),
                        ..ModelVersionUpdate::default()
                    },
                )
                .await?;
            if archive && matches!(to, ModelStage::Validated | ModelStage::Deployed) {
                for other in s.ml_all_versions(Some(&name)).await? {
                    if other.version != version && other.stage == to {
                        s.update_model_version(
                            &name,
                            other.version,
                            &ModelVersionUpdate {
                                stage: Some(ModelStage::Deprecated),
                                reason: Some(format!(
                                    "archived: version {version} moved to {}",
                                    super::stage_to_mlflow(to)
                                )),
                                ..ModelVersionUpdate::default()
                            },
                        )
                        .await?;
                    }
                }
            }
            Ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/get-download-uri" => {
            let v = s
                .get_model_version(&req.req("name")?, version_of(req)?)
                .await?;
            Ok(json!({"artifact_uri": v.uri.unwrap_or_default()}))
        }
        _ => Err(MlError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!(
                "{method} /api/2.0/mlflow/{endpoint} is not part of AI Flow's MLflow API (docs/mlflow.md lists what is)"
            ),
        )),
    }
}
