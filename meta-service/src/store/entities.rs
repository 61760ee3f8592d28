//! Projects, datasets (and their versions), metrics and artifacts.

use aiflow_api::Page;
use aiflow_api::PageQuery;
use aiflow_api::meta::{
    Artifact, ArtifactUpdate, DATASET_VERSION_CREATED, Dataset, DatasetUpdate, DatasetVersion,
    ListQuery, MetaUpdate, Metric, MetricKind, NewArtifact, NewDataset, NewDatasetVersion,
    NewMetric, NewProject, Project,
};
use sqlx::any::AnyRow;

use super::outbox::enqueue;
use super::sql::{
    Sql, decode_id_cursor, get_i, get_json, get_os, get_s, get_tags, get_time, now_us, page_limit,
};
use super::{Kind, Store, dup, page_cursor, to_page};
use crate::error::{Error, Result};
use crate::tags::{check_name, check_tags, properties_text};

pub(crate) const PROJECTS: Kind = Kind {
    table: "meta_projects",
    what: "project",
    select: "SELECT t.id, t.name, t.description, t.properties, t.tags, t.created_at, t.updated_at \
             FROM meta_projects t",
};
pub(crate) const DATASETS: Kind = Kind {
    table: "meta_datasets",
    what: "dataset",
    select: "SELECT t.id, t.name, p.name AS project_name, t.uri, t.format, t.schema_fields, t.kind, \
             t.description, t.properties, t.tags, t.latest_version, t.created_at, t.updated_at \
             FROM meta_datasets t LEFT JOIN meta_projects p ON p.id = t.project_id",
};
pub(crate) const MODELS: Kind = Kind {
    table: "meta_models",
    what: "model",
    select: "SELECT t.id, t.name, p.name AS project_name, t.description, t.properties, t.tags, \
             t.latest_version, t.created_at, t.updated_at \
             FROM meta_models t LEFT JOIN meta_projects p ON p.id = t.project_id",
};
pub(crate) const METRICS: Kind = Kind {
    table: "meta_metrics",
    what: "metric",
    select: "SELECT t.id, t.name, p.name AS project_name, t.kind, t.subject, t.description, \
             t.properties, t.tags, t.created_at, t.updated_at \
             FROM meta_metrics t LEFT JOIN meta_projects p ON p.id = t.project_id",
};
pub(crate) const ARTIFACTS: Kind = Kind {
    table: "meta_artifacts",
    what: "artifact",
    select: "SELECT t.id, t.name, p.name AS project_name, t.uri, t.kind, t.sha256, t.size_bytes, \
             t.description, t.properties, t.tags, t.created_at, t.updated_at \
             FROM meta_artifacts t LEFT JOIN meta_projects p ON p.id = t.project_id",
};

fn project_row(r: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

fn dataset_row(r: &AnyRow) -> Result<Dataset> {
    let schema = get_s(r, "schema_fields")?;
    Ok(Dataset {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        project: get_os(r, "project_name")?,
        uri: get_os(r, "uri")?,
        format: get_os(r, "format")?,
        schema: serde_json::from_str(&schema)
            .map_err(|e| Error::Db(sqlx::Error::Decode(Box::new(e))))?,
        kind: get_s(r, "kind")?.parse().unwrap_or_default(),
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        latest_version: get_i(r, "latest_version")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

pub(crate) fn dataset_version_row(r: &AnyRow) -> Result<DatasetVersion> {
    Ok(DatasetVersion {
        id: get_i(r, "id")?,
        dataset: get_s(r, "dataset_name")?,
        version: get_i(r, "version")?,
        uri: get_os(r, "uri")?,
        row_count: super::sql::get_oi(r, "row_count")?,
        produced_by: get_os(r, "produced_by")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        created_at: get_time(r, "created_at")?,
    })
}

fn metric_row(r: &AnyRow) -> Result<Metric> {
    Ok(Metric {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        project: get_os(r, "project_name")?,
        kind: get_s(r, "kind")?
            .parse()
            .map_err(|e: String| Error::Db(sqlx::Error::Decode(e.into())))?,
        subject: get_os(r, "subject")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

fn artifact_row(r: &AnyRow) -> Result<Artifact> {
    Ok(Artifact {
        id: get_i(r, "id")?,
        name: get_s(r, "name")?,
        project: get_os(r, "project_name")?,
        uri: get_s(r, "uri")?,
        kind: get_os(r, "kind")?,
        sha256: get_os(r, "sha256")?,
        size: super::sql::get_oi(r, "size_bytes")?,
        description: get_os(r, "description")?,
        properties: get_json(r, "properties")?,
        tags: get_tags(r, "tags")?,
        created_at: get_time(r, "created_at")?,
        updated_at: get_time(r, "updated_at")?,
    })
}

const DSV_SELECT: &str = "SELECT v.id, d.name AS dataset_name, v.version, v.uri, v.row_count, \
    v.produced_by, v.description, v.properties, v.created_at \
    FROM meta_dataset_versions v JOIN meta_datasets d ON d.id = v.dataset_id";

impl Store {
    /// One live row of `kind` by name, converted.
    pub(crate) async fn get_named<T>(
        &self,
        kind: Kind,
        name: &str,
        f: impl Fn(&AnyRow) -> Result<T>,
    ) -> Result<T> {
        let mut s = Sql::new(kind.select);
        s.push(" WHERE t.name = ")
            .bind(name)
            .push(" AND t.deleted_at IS NULL");
        let row = s.query().fetch_optional(&self.db.pool).await?;
        match row {
            Some(r) => f(&r),
            None => Err(Error::not_found(kind.what, name)),
        }
    }

    /// Applies `sets` (column, value) plus description/properties/tags to a live row.
    pub(crate) async fn update_named_pub(
        &self,
        kind: Kind,
        name: &str,
        u: &MetaUpdate,
    ) -> Result<()> {
        self.update_named(
            kind,
            name,
            vec![],
            u.description.as_ref(),
            u.properties.as_ref(),
            u.tags.as_ref(),
        )
        .await
    }

    async fn update_named(
        &self,
        kind: Kind,
        name: &str,
        mut sets: Vec<(&'static str, super::sql::Arg)>,
        description: Option<&String>,
        properties: Option<&serde_json::Value>,
        tags: Option<&aiflow_api::meta::Tags>,
    ) -> Result<()> {
        if let Some(d) = description {
            sets.push(("description", d.into()));
        }
        if let Some(p) = properties {
            sets.push(("properties", properties_text(Some(p))?.into()));
        }
        if let Some(t) = tags {
            check_tags(t)?;
            sets.push(("tags", serde_json::to_string(t).unwrap_or_default().into()));
        }
        let mut tx = self.begin().await?;
        let mut s = Sql::new("UPDATE ");
        s.push(kind.table).push(" SET updated_at = ").bind(now_us());
        for (col, v) in sets {
            s.push(", ").push(col).push(" = ").bind(v);
        }
        s.push(" WHERE name = ")
            .bind(name)
            .push(" AND deleted_at IS NULL RETURNING id");
        let row = s.query().fetch_optional(&mut *tx).await?;
        let id = match row {
            Some(r) => get_i(&r, "id")?,
            None => return Err(Error::not_found(kind.what, name)),
        };
        if let Some(t) = tags {
            Self::write_tags(&mut tx, kind, id, t).await?;
        }
        self.commit(tx, false).await?;
        tracing::info!(what = kind.what, name, "updated");
        Ok(())
    }

    // ---- projects

    pub async fn create_project(&self, p: &NewProject) -> Result<Project> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_project");
        check_name(&p.name, "name")?;
        check_tags(&p.tags)?;
        let props = properties_text(p.properties.as_ref())?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_projects (name, description, properties, tags, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(&p.name)
        .bind(p.description.clone())
        .bind(props)
        .bind(serde_json::to_string(&p.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(dup("project", &p.name))?;
        Self::write_tags(&mut tx, PROJECTS, id, &p.tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(project = %p.name, "project created");
        self.get_project(&p.name).await
    }

    pub async fn get_project(&self, name: &str) -> Result<Project> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_project");
        self.get_named(PROJECTS, name, project_row).await
    }

    pub async fn list_projects(&self, q: &ListQuery) -> Result<Page<Project>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_projects");
        let (rows, next) = self.list_named(PROJECTS, q, |_| {}).await?;
        to_page(rows, next, project_row)
    }

    pub async fn update_project(&self, name: &str, u: &MetaUpdate) -> Result<Project> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_project");
        self.update_named(
            PROJECTS,
            name,
            vec![],
            u.description.as_ref(),
            u.properties.as_ref(),
            u.tags.as_ref(),
        )
        .await?;
        self.get_project(name).await
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_project");
        self.soft_delete(PROJECTS, name).await
    }

    // ---- datasets

    pub async fn create_dataset(&self, d: &NewDataset) -> Result<Dataset> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_dataset");
        check_name(&d.name, "name")?;
        check_tags(&d.tags)?;
        for (i, f) in d.schema.iter().enumerate() {
            if f.name.is_empty() {
                return Err(Error::unprocessable(
                    format!("schema[{i}].name"),
                    format!("schema[{i}].name must not be empty"),
                ));
            }
        }
        let props = properties_text(d.properties.as_ref())?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let project = self
            .project_ref(&mut tx, d.project.as_deref(), "project")
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_datasets (name, project_id, uri, format, schema_fields, kind, \
             description, properties, tags, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(&d.name)
        .bind(project)
        .bind(d.uri.clone())
        .bind(d.format.clone())
        .bind(serde_json::to_string(&d.schema).unwrap_or_default())
        .bind(d.kind.as_str())
        .bind(d.description.clone())
        .bind(props)
        .bind(serde_json::to_string(&d.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(dup("dataset", &d.name))?;
        Self::write_tags(&mut tx, DATASETS, id, &d.tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(dataset = %d.name, "dataset created");
        self.get_dataset(&d.name).await
    }

    pub async fn get_dataset(&self, name: &str) -> Result<Dataset> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_dataset");
        self.get_named(DATASETS, name, dataset_row).await
    }

    pub async fn list_datasets(&self, q: &ListQuery) -> Result<Page<Dataset>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_datasets");
        let (rows, next) = self.list_named(DATASETS, q, |_| {}).await?;
        to_page(rows, next, dataset_row)
    }

    pub async fn update_dataset(&self, name: &str, u: &DatasetUpdate) -> Result<Dataset> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_dataset");
        let mut sets: Vec<(&'static str, super::sql::Arg)> = Vec::new();
        if let Some(v) = &u.uri {
            sets.push(("uri", v.into()));
        }
        if let Some(v) = &u.format {
            sets.push(("format", v.into()));
        }
        if let Some(v) = &u.schema {
            sets.push((
                "schema_fields",
                serde_json::to_string(v).unwrap_or_default().into(),
            ));
        }
        if let Some(v) = u.kind {
            sets.push(("kind", v.as_str().into()));
        }
        self.update_named(
            DATASETS,
            name,
            sets,
            u.description.as_ref(),
            u.properties.as_ref(),
            u.tags.as_ref(),
        )
        .await?;
        self.get_dataset(name).await
    }

    pub async fn delete_dataset(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_dataset");
        self.soft_delete(DATASETS, name).await
    }

    /// Adds the next version of a dataset and, in the same transaction, its
    /// `DATASET_VERSION_CREATED` event (and a lineage edge from the producing job execution).
    pub async fn create_dataset_version(
        &self,
        name: &str,
        v: &NewDatasetVersion,
    ) -> Result<DatasetVersion> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_dataset_version");
        let props = properties_text(v.properties.as_ref())?;
        if let Some(n) = v.row_count
            && n < 0
        {
            return Err(Error::unprocessable(
                "row_count",
                "row_count must not be negative",
            ));
        }
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE meta_datasets SET latest_version = latest_version + 1, updated_at = $1 \
             WHERE name = $2 AND deleted_at IS NULL RETURNING id, latest_version",
        )
        .bind(now_us())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("dataset", name))?;
        let (dataset_id, version) = (get_i(&row, "id")?, get_i(&row, "latest_version")?);
        if let Some(job) = &v.produced_by {
            Self::job_execution_ref(&mut tx, job, "produced_by").await?;
        }
        let id = Self::insert_dataset_version(&mut tx, dataset_id, version, v, &props).await?;
        if let Some(job) = &v.produced_by {
            Self::insert_edge(
                &mut tx,
                ("job_execution", job),
                ("dataset_version", &id.to_string()),
            )
            .await?;
        }
        enqueue(
            &mut tx,
            &format!("dataset/{name}"),
            &version.to_string(),
            DATASET_VERSION_CREATED,
            serde_json::json!({"dataset": name, "version": version, "uri": v.uri}),
        )
        .await?;
        self.commit(tx, true).await?;
        tracing::info!(dataset = name, version, "dataset version created");
        self.get_dataset_version(name, version).await
    }

    pub(crate) async fn insert_dataset_version(
        tx: &mut super::Tx,
        dataset_id: i64,
        version: i64,
        v: &NewDatasetVersion,
        props: &str,
    ) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_dataset_versions (dataset_id, version, uri, row_count, produced_by, \
             description, properties, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(dataset_id)
        .bind(version)
        .bind(v.uri.clone())
        .bind(v.row_count)
        .bind(v.produced_by.clone())
        .bind(v.description.clone())
        .bind(props.to_string())
        .bind(now_us())
        .fetch_one(&mut **tx)
        .await?;
        Ok(id)
    }

    pub async fn get_dataset_version(&self, name: &str, version: i64) -> Result<DatasetVersion> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_dataset_version");
        let mut s = Sql::new(DSV_SELECT);
        s.push(" WHERE d.name = ")
            .bind(name)
            .push(" AND d.deleted_at IS NULL AND v.version = ")
            .bind(version);
        match s.query().fetch_optional(&self.db.pool).await? {
            Some(r) => dataset_version_row(&r),
            None => Err(Error::not_found(
                "dataset version",
                format!("{name}@{version}"),
            )),
        }
    }

    pub async fn list_dataset_versions(
        &self,
        name: &str,
        page: &PageQuery,
    ) -> Result<Page<DatasetVersion>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_dataset_versions");
        let limit = page_limit(
            page.limit,
            aiflow_api::page::DEFAULT_LIMIT,
            aiflow_api::page::MAX_LIMIT,
        )?;
        let after = page.cursor.as_deref().map(decode_id_cursor).transpose()?;
        let dataset_id = {
            let mut conn = self.db.pool.acquire().await?;
            self.live_id(&mut conn, DATASETS, name).await?
        };
        let mut s = Sql::new(DSV_SELECT);
        s.push(" WHERE v.dataset_id = ").bind(dataset_id);
        if let Some(a) = after {
            s.push(" AND v.id > ").bind(a);
        }
        s.push(" ORDER BY v.id LIMIT ").bind(limit + 1);
        let mut rows = s.query().fetch_all(&self.db.pool).await?;
        let next = page_cursor(&mut rows, limit)?;
        to_page(rows, next, dataset_version_row)
    }

    /// Checks that a job execution exists (422 naming `field`).
    pub(crate) async fn job_execution_ref(
        conn: &mut sqlx::AnyConnection,
        id: &str,
        field: &str,
    ) -> Result<()> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM job_executions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_none() {
            return Err(Error::unknown(
                field,
                format!("{field}: job execution {id:?} does not exist"),
            ));
        }
        Ok(())
    }

    // ---- metrics (meta; points are in metrics.rs)

    pub async fn create_metric(&self, m: &NewMetric) -> Result<Metric> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_metric");
        check_name(&m.name, "name")?;
        check_tags(&m.tags)?;
        let props = properties_text(m.properties.as_ref())?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let project = self
            .project_ref(&mut tx, m.project.as_deref(), "project")
            .await?;
        match (m.kind, &m.subject) {
            (MetricKind::Dataset, Some(s)) => {
                self.live_id(&mut tx, DATASETS, s).await.map_err(|_| {
                    Error::unknown("subject", format!("subject: dataset {s:?} does not exist"))
                })?;
            }
            (MetricKind::Model, Some(s)) => {
                self.live_id(&mut tx, MODELS, s).await.map_err(|_| {
                    Error::unknown("subject", format!("subject: model {s:?} does not exist"))
                })?;
            }
            _ => {}
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_metrics (name, project_id, kind, subject, description, properties, \
             tags, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
        )
        .bind(&m.name)
        .bind(project)
        .bind(m.kind.as_str())
        .bind(m.subject.clone())
        .bind(m.description.clone())
        .bind(props)
        .bind(serde_json::to_string(&m.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(dup("metric", &m.name))?;
        Self::write_tags(&mut tx, METRICS, id, &m.tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(metric = %m.name, "metric created");
        self.get_metric(&m.name).await
    }

    pub async fn get_metric(&self, name: &str) -> Result<Metric> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_metric");
        self.get_named(METRICS, name, metric_row).await
    }

    pub async fn list_metrics(&self, q: &ListQuery) -> Result<Page<Metric>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_metrics");
        let (rows, next) = self.list_named(METRICS, q, |_| {}).await?;
        to_page(rows, next, metric_row)
    }

    pub async fn update_metric(&self, name: &str, u: &MetaUpdate) -> Result<Metric> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_metric");
        self.update_named(
            METRICS,
            name,
            vec![],
            u.description.as_ref(),
            u.properties.as_ref(),
            u.tags.as_ref(),
        )
        .await?;
        self.get_metric(name).await
    }

    pub async fn delete_metric(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_metric");
        self.soft_delete(METRICS, name).await
    }

    // ---- artifacts

    pub async fn create_artifact(&self, a: &NewArtifact) -> Result<Artifact> {
        let _timer = aiflow_db::QueryTimer::new("meta", "create_artifact");
        check_name(&a.name, "name")?;
        check_tags(&a.tags)?;
        check_artifact(Some(&a.uri), a.sha256.as_deref(), a.size)?;
        let props = properties_text(a.properties.as_ref())?;
        let now = now_us();
        let mut tx = self.begin().await?;
        let project = self
            .project_ref(&mut tx, a.project.as_deref(), "project")
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO meta_artifacts (name, project_id, uri, kind, sha256, size_bytes, \
             description, properties, tags, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(&a.name)
        .bind(project)
        .bind(&a.uri)
        .bind(a.kind.clone())
        .bind(a.sha256.clone())
        .bind(a.size)
        .bind(a.description.clone())
        .bind(props)
        .bind(serde_json::to_string(&a.tags).unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(dup("artifact", &a.name))?;
        Self::write_tags(&mut tx, ARTIFACTS, id, &a.tags).await?;
        self.commit(tx, false).await?;
        tracing::info!(artifact = %a.name, "artifact created");
        self.get_artifact(&a.name).await
    }

    pub async fn get_artifact(&self, name: &str) -> Result<Artifact> {
        let _timer = aiflow_db::QueryTimer::new("meta", "get_artifact");
        self.get_named(ARTIFACTS, name, artifact_row).await
    }

    pub async fn list_artifacts(&self, q: &ListQuery) -> Result<Page<Artifact>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "list_artifacts");
        let (rows, next) = self.list_named(ARTIFACTS, q, |_| {}).await?;
        to_page(rows, next, artifact_row)
    }

    pub async fn update_artifact(&self, name: &str, u: &ArtifactUpdate) -> Result<Artifact> {
        let _timer = aiflow_db::QueryTimer::new("meta", "update_artifact");
        check_artifact(u.uri.as_deref(), u.sha256.as_deref(), u.size)?;
        let mut sets: Vec<(&'static str, super::sql::Arg)> = Vec::new();
        if let Some(v) = &u.uri {
            sets.push(("uri", v.into()));
        }
        if let Some(v) = &u.kind {
            sets.push(("kind", v.into()));
        }
        if let Some(v) = &u.sha256 {
            sets.push(("sha256", v.into()));
        }
        if let Some(v) = u.size {
            sets.push(("size_bytes", v.into()));
        }
        self.update_named(
            ARTIFACTS,
            name,
            sets,
            u.description.as_ref(),
            u.properties.as_ref(),
            u.tags.as_ref(),
        )
        .await?;
        self.get_artifact(name).await
    }

    pub async fn delete_artifact(&self, name: &str) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "delete_artifact");
        self.soft_delete(ARTIFACTS, name).await
    }
}

fn check_artifact(uri: Option<&str>, sha256: Option<&str>, size: Option<i64>) -> Result<()> {
    if uri == Some("") {
        return Err(Error::unprocessable("uri", "uri must not be empty"));
    }
    if let Some(h) = sha256
        && (h.len() != 64
            || !h
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(Error::unprocessable(
            "sha256",
            "sha256 must be 64 lower-case hex digits",
        ));
    }
    if let Some(n) = size
        && n < 0
    {
        return Err(Error::unprocessable("size", "size must not be negative"));
    }
    Ok(())
}
