//! Models, model versions, stages with history, aliases with history.

use std::collections::BTreeMap;

use aiflow_api::meta::{
    AliasMove, DatasetVersionRef, ListQuery, MODEL_ALIAS_MOVED, MetaUpdate, Model, ModelAlias,
    ModelStage, ModelVersion, ModelVersionUpdate, NewModel, NewModelVersion, StageChange,
};
use aiflow_api::{Page, PageQuery};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::entities::{DATASETS, MODELS};
use super::outbox::enqueue;
use super::sql::{
    Sql, decode_id_cursor, get_i, get_json, get_oi, get_os, get_s, get_tags, get_time, now_us,
    page_limit, to_us,
};
use super::{Store, Tx, dup, page_cursor};
use crate::error::{Error, Result};
use crate::tags::{check_name, check_tags, properties_text};

pub(crate) const MV_SELECT: &str = "SELECT v.id, m.name AS model_name, v.version, v.uri, v.status, v.stage, \
    v.source_job_execution, v.description, v.properties, v.tags, v.created_at, v.updated_at \
    FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id";

fn model_row(r: &AnyRow) -> Result<Model> {
    Ok(Model {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        project: get_os(r, "project_name")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        latest_version: get_i(r, "latest_version")?,
        aliases: BTreeMap::new(),
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

fn decode_err(e: String) -> Error {
    Error::Db(sqlx::Error::Decode(e.into()))
}

pub(crate) fn version_row(r: &AnyRow) -> Result<ModelVersion> {
    Ok(ModelVersion {
        id: get_i(r, "id")?,
        model: get_s(r, "model_name")?,
        version: get_i(r, "version")?,
        uri: get_os(r, "uri")?,
        status: get_s(r, "status")?.parse().map_err(decode_err)?,
        stage: get_s(r, "stage")?.parse().map_err(decode_err)?,
        source_job_execution: get_os(r, "source_job_execution")?,
        input_dataset_versions: Vec::new(),
        aliases: Vec::new(),
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

/// `1,2,3` for an `IN (…)` list of our own integer ids.
fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

impl Store {
    // ---- models

    pub async fn create_model(&self, m: &NewModel) -> Result<Model> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_model");
        check_name(&m.name, "name")?;
        check_tags(&m.tags)?;
        let props = properties_text(m.properties.as_ref())?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let project = self
            .project_ref(&mut tx, m.project.as_deref(), "project")
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_models (name, project_id, description, properties, tags, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(&m.name)
        .bind(project)
        .bind(m.description.clone())
        .bind(props)
        .bind(serde_json::to_string(&m.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(dup("model", &m.name))?;
        Self::write_tags(&mut tx, MODELS, id, &m.tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(model = %m.name, "model created");
        self.get_model(&m.name).await
    }

    async fn with_aliases(&self, mut models: Vec<Model>) -> Result<Vec<Model>> {
        if models.is_empty() {
            return Ok(models);
        }
        let sql = format!(
            "SELECT a.model_id, a.alias, v.version FROM meta_model_aliases a \
             JOIN meta_model_versions v ON v.id = a.model_version_id WHERE a.model_id IN ({})",
            id_list(models.iter().map(|m| m.id))
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.db.pool)
            .await?;
        for r in rows {
            let model_id = get_i(&r, "model_id")?;
            if let Some(m) = models.iter_mut().find(|m| m.id == model_id) {
                m.aliases.insert(get_s(&r, "alias")?, get_i(&r, "version")?);
            }
        }
        Ok(models)
    }

    pub async fn get_model(&self, name: &str) -> Result<Model> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_model");
        let m = self.get_named(MODELS, name, model_row).await?;
        Ok(self.with_aliases(vec![m]).await?.remove(0))
    }

    pub async fn list_models(&self, q: &ListQuery) -> Result<Page<Model>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_models");
        let (rows, next) = self.list_named(MODELS, q, |_| {}).await?;
        let items = rows.iter().map(model_row).collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items: self.with_aliases(items).await?,
            next_cursor: next,
        })
    }

    pub async fn update_model(&self, name: &str, u: &MetaUpdate) -> Result<Model> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_model");
        self.update_named_pub(MODELS, name, u).await?;
        self.get_model(name).await
    }

    pub async fn delete_model(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_model");
        self.soft_delete(MODELS, name).await
    }

    // ---- versions

    /// Registers the next version of a model with its inputs, lineage edges and the
    /// `MODEL_VERSION_CREATED` event, all in one transaction.
    pub async fn create_model_version(
        &self,
        name: &str,
        v: &NewModelVersion,
    ) -> Result<ModelVersion> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_model_version");
        check_tags(&v.tags)?;
        let props = properties_text(v.properties.as_ref())?;
        let mut tx = self.begin().await?;
        let version = self.insert_model_version(&mut tx, name, v, &props).await?;
        self.commit(tx, true).await?;
        tracing::info!(model = name, version, "model version created");
        self.get_model_version(name, version).await
    }

    /// The body of [`Self::create_model_version`], for callers that own the transaction.
    pub(crate) async fn insert_model_version(
        &self,
        tx: &mut Tx,
        name: &str,
        v: &NewModelVersion,
        props: &str,
    ) -> Result<i64> {
        let now = now_us();
        let row = sqlx::query(
            "UPDATE meta_models SET latest_version = latest_version + 1, updated_at = $1 \
             WHERE name = $2 AND deleted_at IS NULL RETURNING id, latest_version",
        )
        .bind(now)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("model", name))?;
        let (model_id, version) = (get_i(&row, "id")?, get_i(&row, "latest_version")?);
        if let Some(job) = &v.source_job_execution {
            Self::job_execution_ref(tx, job, "source_job_execution").await?;
        }
        let mut inputs = Vec::with_capacity(v.input_dataset_versions.len());
        for (i, r) in v.input_dataset_versions.iter().enumerate() {
            let field = format!("input_dataset_versions[{i}]");
            inputs.push(self.dataset_version_id(tx, r, &field).await?);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_model_versions (model_id, version, uri, status, stage, \
             source_job_execution, description, properties, tags, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(model_id)
        .bind(version)
        .bind(v.uri.clone())
        .bind(v.status.as_str())
        .bind(ModelStage::Generated.as_str())
        .bind(v.source_job_execution.clone())
        .bind(v.description.clone())
        .bind(props.to_string())
        .bind(serde_json::to_string(&v.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO meta_model_stage_history (model_version_id, from_stage, to_stage, reason, \
             changed_at) VALUES ($1, NULL, $2, $3, $4)",
        )
        .bind(id)
        .bind(ModelStage::Generated.as_str())
        .bind("registered")
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let mv = id.to_string();
        for dsv in &inputs {
            sqlx::query(
                "INSERT INTO meta_model_version_inputs (model_version_id, dataset_version_id) \
                 VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(*dsv)
            .execute(&mut **tx)
            .await?;
            let target = match &v.source_job_execution {
                Some(job) => ("job_execution", job.as_str()),
                None => ("model_version", mv.as_str()),
            };
            Self::insert_edge(tx, ("dataset_version", &dsv.to_string()), target).await?;
        }
        if let Some(job) = &v.source_job_execution {
            Self::insert_edge(tx, ("job_execution", job), ("model_version", &mv)).await?;
        }
        enqueue(
            tx,
            &format!("model/{name}"),
            &version.to_string(),
            aiflow_api::meta::MODEL_VERSION_CREATED,
            serde_json::json!({"model": name, "version": version, "uri": v.uri}),
        )
        .await?;
        Ok(version)
    }

    /// The id of a dataset version named in a request (422 naming `field`).
    pub(crate) async fn dataset_version_id(
        &self,
        conn: &mut sqlx::AnyConnection,
        r: &DatasetVersionRef,
        field: &str,
    ) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT v.id FROM meta_dataset_versions v JOIN meta_datasets d ON d.id = v.dataset_id \
             WHERE d.name = $1 AND d.deleted_at IS NULL AND v.version = $2",
        )
        .bind(&r.dataset)
        .bind(r.version)
        .fetch_optional(&mut *conn)
        .await?;
        let _ = DATASETS;
        id.ok_or_else(|| {
            Error::unknown(
                field,
                format!(
                    "{field}: dataset version {}@{} does not exist",
                    r.dataset, r.version
                ),
            )
        })
    }

    pub(crate) async fn complete_versions(
        &self,
        mut vs: Vec<ModelVersion>,
    ) -> Result<Vec<ModelVersion>> {
        if vs.is_empty() {
            return Ok(vs);
        }
        let ids = id_list(vs.iter().map(|v| v.id));
        let inputs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT i.model_version_id, d.name AS dataset_name, dv.version FROM meta_model_version_inputs i \
             JOIN meta_dataset_versions dv ON dv.id = i.dataset_version_id \
             JOIN meta_datasets d ON d.id = dv.dataset_id WHERE i.model_version_id IN ({ids}) \
             ORDER BY i.dataset_version_id"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        for r in inputs {
            let id = get_i(&r, "model_version_id")?;
            if let Some(v) = vs.iter_mut().find(|v| v.id == id) {
                v.input_dataset_versions.push(DatasetVersionRef {
                    dataset: get_s(&r, "dataset_name")?,
                    version: get_i(&r, "version")?,
                });
            }
        }
        let aliases = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT model_version_id, alias FROM meta_model_aliases WHERE model_version_id IN ({ids}) \
             ORDER BY alias"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        for r in aliases {
            let id = get_i(&r, "model_version_id")?;
            if let Some(v) = vs.iter_mut().find(|v| v.id == id) {
                v.aliases.push(get_s(&r, "alias")?);
            }
        }
        Ok(vs)
    }

    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_model_version");
        let mut s = Sql::new(MV_SELECT);
        s.push(" WHERE m.name = ")
            .bind(name)
            .push(" AND m.deleted_at IS NULL AND v.version = ")
            .bind(version);
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => Ok(self
                .complete_versions(vec![version_row(&r)?])
                .await?
                .remove(0)),
            None => Err(Error::not_found(
                "model version",
                format!("{name}@{version}"),
            )),
        }
    }

    /// Versions of a model, oldest first; optionally only those in `stage`.
    pub async fn list_model_versions(
        &self,
        name: &str,
        stage: Option<ModelStage>,
        page: &PageQuery,
    ) -> Result<Page<ModelVersion>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_model_versions");
        let limit = page_limit(
            page.limit,
            aiflow_api::page::DEFAULT_LIMIT,
            aiflow_api::page::MAX_LIMIT,
        )?;
        let after = page.cursor.as_deref().map(decode_id_cursor).transpose()?;
        let model_id = {
            let mut conn = self.db.pool.acquire().await?;
            self.live_id(&mut conn, MODELS, name).await?
        };
        let mut s = Sql::new(MV_SELECT);
        s.push(" WHERE v.model_id = ").bind(model_id);
        if let Some(st) = stage {
            s.push(" AND v.stage = ").bind(st.as_str());
        }
        if let Some(a) = after {
            s.push(" AND v.id > ").bind(a);
        }
        s.push(" ORDER BY v.id LIMIT ").bind(limit + 1);
        let mut rows = s.query().fetch_all(&self.db.pool).await?;
        let next = page_cursor(&mut rows, limit)?;
        let items = rows.iter().map(version_row).collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items: self.complete_versions(items).await?,
            next_cursor: next,
        })
    }

    /// Updates a version; a stage change is checked, recorded in the history and announced
    /// (`MODEL_VALIDATED`, `MODEL_DEPLOYED`, `MODEL_DEPRECATED`) in the same transaction.
    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        u: &ModelVersionUpdate,
    ) -> Result<ModelVersion> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_model_version");
        if let Some(t) = &u.tags {
            check_tags(t)?;
        }
        let props = u
            .properties
            .as_ref()
            .map(|p| properties_text(Some(p)))
            .transpose()?;
        let now = now_us();
        let mut tx = self.begin().await?;
        // A write first, so the SQLite lock is taken before any read.
        let row = sqlx::query(
            "UPDATE meta_model_versions SET updated_at = $1 WHERE version = $2 AND model_id IN \
             (SELECT id FROM meta_models WHERE name = $3 AND deleted_at IS NULL) RETURNING id, stage",
        )
        .bind(now)
        .bind(version)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("model version", format!("{name}@{version}")))?;
        let id = get_i(&row, "id")?;
        let current: ModelStage = get_s(&row, "stage")?.parse().map_err(decode_err)?;
        let mut s = Sql::new("UPDATE meta_model_versions SET updated_at = ");
        s.bind(now);
        if let Some(v) = u.status {
            s.push(", status = ").bind(v.as_str());
        }
        if let Some(v) = &u.uri {
            s.push(", uri = ").bind(v);
        }
        if let Some(v) = &u.description {
            s.push(", description = ").bind(v);
        }
        if let Some(v) = props {
            s.push(", properties = ").bind(v);
        }
        if let Some(t) = &u.tags {
            s.push(", tags = ")
                .bind(serde_json::to_string(t).unwrap_or_default());
        }
        let mut events = false;
        if let Some(to) = u.stage
            && to != current
        {
            if !current.can_move_to(to) {
                return Err(Error::conflict(
                    Some("stage"),
                    format!(
                        "stage: model version {name}@{version} cannot move from {current} to {to}"
                    ),
                ));
            }
            s.push(", stage = ").bind(to.as_str());
            sqlx::query(
                "INSERT INTO meta_model_stage_history (model_version_id, from_stage, to_stage, \
                 reason, changed_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(current.as_str())
            .bind(to.as_str())
            .bind(u.reason.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            enqueue(
                &mut tx,
                &format!("model/{name}"),
                &version.to_string(),
                to.event_type(),
                serde_json::json!({"model": name, "version": version, "from_stage": current, "to_stage": to}),
            )
            .await?;
            events = true;
            tracing::info!(model = name, version, from = %current, to = %to, "model stage changed");
        }
        s.push(" WHERE id = ").bind(id);
        s.query().execute(&mut *tx).await?;
        self.commit(tx, events).await?;
        self.get_model_version(name, version).await
    }

    /// The stage history of one version, oldest first.
    pub async fn stage_history(&self, name: &str, version: i64) -> Result<Vec<StageChange>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "stage_history");
        let mv = self.get_model_version(name, version).await?;
        let rows = sqlx::query(
            "SELECT from_stage, to_stage, reason, changed_at FROM meta_model_stage_history \
             WHERE model_version_id = $1 ORDER BY id",
        )
        .bind(mv.id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StageChange {
                    model: name.to_string(),
                    version,
                    from_stage: get_os(r, "from_stage")?
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(decode_err)?,
                    to_stage: get_s(r, "to_stage")?.parse().map_err(decode_err)?,
                    reason: get_os(r, "reason")?,
                    changed_at: get_time(r, "changed_at")?,
                })
            })
            .collect()
    }

    // ---- aliases

    /// Points `alias` at `version` (recorded in the alias history, announced as
    /// `MODEL_ALIAS_MOVED`). Setting it to where it already points changes nothing.
    pub async fn set_alias(&self, name: &str, alias: &str, version: i64) -> Result<ModelAlias> {
        let _timer = aiflow_db::QueryTimer::new("meta", "set_alias");
        check_name(alias, "alias")?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE meta_models SET updated_at = $1 WHERE name = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("model", name))?;
        let model_id = get_i(&row, "id")?;
        let mv_id: i64 = sqlx::query_scalar(
            "SELECT id FROM meta_model_versions WHERE model_id = $1 AND version = $2",
        )
        .bind(model_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            Error::unknown(
                "version",
                format!("version: model {name:?} has no version {version}"),
            )
        })?;
        let from: Option<i64> = sqlx::query_scalar(
            "SELECT v.version FROM meta_model_aliases a JOIN meta_model_versions v \
             ON v.id = a.model_version_id WHERE a.model_id = $1 AND a.alias = $2",
        )
        .bind(model_id)
        .bind(alias)
        .fetch_optional(&mut *tx)
        .await?;
        if from == Some(version) {
            tx.rollback().await?;
            return self.get_alias(name, alias, None).await;
        }
        if from.is_some() {
            sqlx::query(
                "UPDATE meta_model_aliases SET model_version_id = $1, updated_at = $2 \
                 WHERE model_id = $3 AND alias = $4",
            )
            .bind(mv_id)
            .bind(now)
            .bind(model_id)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO meta_model_aliases (model_id, alias, model_version_id, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(model_id)
            .bind(alias)
            .bind(mv_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Self::record_alias_move(&mut tx, model_id, alias, from, Some(version), now).await?;
        enqueue(
            &mut tx,
            &format!("model/{name}"),
            &version.to_string(),
            MODEL_ALIAS_MOVED,
            serde_json::json!({"model": name, "alias": alias, "version": version, "from_version": from}),
        )
        .await?;
        self.commit(tx, true).await?;
        tracing::info!(model = name, alias, version, from_version = ?from, "alias moved");
        self.get_alias(name, alias, None).await
    }

    async fn record_alias_move(
        tx: &mut Tx,
        model_id: i64,
        alias: &str,
        from: Option<i64>,
        to: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta_model_alias_history (model_id, alias, from_version, to_version, moved_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(model_id)
        .bind(alias)
        .bind(from)
        .bind(to)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Removes an alias (recorded in the history and announced, value empty).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_alias");
        let now = now_us();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE meta_models SET updated_at = $1 WHERE name = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("model", name))?;
        let model_id = get_i(&row, "id")?;
        let from: Option<i64> = sqlx::query_scalar(
            "SELECT v.version FROM meta_model_aliases a JOIN meta_model_versions v \
             ON v.id = a.model_version_id WHERE a.model_id = $1 AND a.alias = $2",
        )
        .bind(model_id)
        .bind(alias)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(from) = from else {
            return Err(Error::not_found("alias", format!("{name}/{alias}")));
        };
        sqlx::query("DELETE FROM meta_model_aliases WHERE model_id = $1 AND alias = $2")
            .bind(model_id)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        Self::record_alias_move(&mut tx, model_id, alias, Some(from), None, now).await?;
        enqueue(
            &mut tx,
            &format!("model/{name}"),
            "",
            MODEL_ALIAS_MOVED,
            serde_json::json!({"model": name, "alias": alias, "version": null, "from_version": from}),
        )
        .await?;
        self.commit(tx, true).await?;
        tracing::info!(model = name, alias, "alias removed");
        Ok(())
    }

    /// Where `alias` points now, or where it pointed at `at`.
    pub async fn get_alias(
        &self,
        name: &str,
        alias: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<ModelAlias> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_alias");
        let not_found = || Error::not_found("alias", format!("{name}/{alias}"));
        match at {
            None => {
                let row = sqlx::query(
                    "SELECT v.version, a.updated_at FROM meta_models m \
                     JOIN meta_model_aliases a ON a.model_id = m.id \
                     JOIN meta_model_versions v ON v.id = a.model_version_id \
                     WHERE m.name = $1 AND m.deleted_at IS NULL AND a.alias = $2",
                )
                .bind(name)
                .bind(alias)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(not_found)?;
                Ok(ModelAlias {
                    model: name.to_string(),
                    alias: alias.to_string(),
                    version: get_i(&row, "version")?,
                    updated_at: get_time(&row, "updated_at")?,
                })
            }
            Some(at) => {
                let row = sqlx::query(
                    "SELECT h.to_version, h.moved_at FROM meta_models m \
                     JOIN meta_model_alias_history h ON h.model_id = m.id \
                     WHERE m.name = $1 AND m.deleted_at IS NULL AND h.alias = $2 AND h.moved_at <= $3 \
                     ORDER BY h.moved_at DESC, h.id DESC LIMIT 1",
                )
                .bind(name)
                .bind(alias)
                .bind(to_us(at))
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(not_found)?;
                let version = get_oi(&row, "to_version")?.ok_or_else(not_found)?;
                Ok(ModelAlias {
                    model: name.to_string(),
                    alias: alias.to_string(),
                    version,
                    updated_at: get_time(&row, "moved_at")?,
                })
            }
        }
    }

    /// Every move of `alias`, oldest first.
    pub async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "alias_history");
        let rows = sqlx::query(
            "SELECT h.from_version, h.to_version, h.moved_at FROM meta_models m \
             JOIN meta_model_alias_history h ON h.model_id = m.id \
             WHERE m.name = $1 AND m.deleted_at IS NULL AND h.alias = $2 ORDER BY h.id",
        )
        .bind(name)
        .bind(alias)
        .fetch_all(&self.db.pool)
        .await?;
        if rows.is_empty() {
            // 404 for an unknown model; an empty history for a known model.
            self.get_model(name).await?;
        }
        rows.iter()
            .map(|r| {
                Ok(AliasMove {
                    model: name.to_string(),
                    alias: alias.to_string(),
                    from_version: get_oi(r, "from_version")?,
                    to_version: get_oi(r, "to_version")?,
                    moved_at: get_time(r, "moved_at")?,
                })
            })
            .collect()
    }
}
