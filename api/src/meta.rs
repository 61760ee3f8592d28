//! Meta service: projects, datasets, workflows and their runs, models, metrics, artifacts and
//! lineage. Request types reject unknown fields so a typo is an error, not a silent no-op.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Free-form `key -> value` labels; lists filter by subsets of them.
pub type Tags = BTreeMap<String, String>;

/// Event types of meta changes.
pub const DATASET_VERSION_CREATED: &str = "DATASET_VERSION_CREATED";
pub const MODEL_VERSION_CREATED: &str = "MODEL_VERSION_CREATED";
pub const MODEL_VALIDATED: &str = "MODEL_VALIDATED";
pub const MODEL_DEPLOYED: &str = "MODEL_DEPLOYED";
pub const MODEL_DEPRECATED: &str = "MODEL_DEPRECATED";
pub const MODEL_ALIAS_MOVED: &str = "MODEL_ALIAS_MOVED";

// ---------------------------------------------------------------------------------------------
// projects

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Free JSON object.
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "recsys", "description": "recommendations", "tags": {"team": "ml"}}))]
pub struct NewProject {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// Changes to a project, model or metric; absent fields keep their value. `tags` replaces
/// all tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetaUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

// ---------------------------------------------------------------------------------------------
// datasets

/// Batch data is read whole; stream data is read as it arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    #[default]
    Batch,
    Stream,
}

impl DatasetKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Stream => "stream",
        }
    }
}

impl FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(Self::Batch),
            "stream" => Ok(Self::Stream),
            _ => Err(format!("unknown dataset kind {s:?}: use batch or stream")),
        }
    }
}

/// One named, typed field of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaField {
    pub name: String,
    /// e.g. `string`, `int64`, `float64`, `bool`, `timestamp`.
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub id: i64,
    pub name: String,
    pub project: Option<String>,
    pub uri: Option<String>,
    pub format: Option<String>,
    pub schema: Vec<SchemaField>,
    pub kind: DatasetKind,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    /// Number of the newest version (0 when none).
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "clicks", "project": "recsys", "uri": "s3://lake/clicks", "format": "parquet", "schema": [{"name": "user_id", "type": "int64"}], "kind": "batch"}))]
pub struct NewDataset {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Name of an existing project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<SchemaField>,
    #[serde(default)]
    pub kind: DatasetKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<SchemaField>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DatasetKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersion {
    pub id: i64,
    pub dataset: String,
    /// 1, 2, 3… per dataset.
    pub version: i64,
    pub uri: Option<String>,
    pub row_count: Option<i64>,
    /// The job execution that produced it.
    pub produced_by: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"uri": "s3://lake/clicks/2026-12-05", "row_count": 120000, "description": "one day of clicks"}))]
pub struct NewDatasetVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<i64>,
    /// Id of an existing job execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

/// A dataset version by name: `{"dataset": "raw", "version": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetVersionRef {
    pub dataset: String,
    pub version: i64,
}

// ---------------------------------------------------------------------------------------------
// models

/// Whether a model version's files are usable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ModelStatus {
    #[default]
    Pending,
    Ready,
    Failed,
}

impl ModelStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
        }
    }
}

impl FromStr for ModelStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Ok(Self::Pending),
            "READY" => Ok(Self::Ready),
            "FAILED" => Ok(Self::Failed),
            _ => Err(format!(
                "unknown model status {s:?}: use PENDING, READY or FAILED"
            )),
        }
    }
}

/// Life cycle of a model version: GENERATED → VALIDATED → DEPLOYED → DEPRECATED.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ModelStage {
    #[default]
    Generated,
    Validated,
    Deployed,
    Deprecated,
}

impl ModelStage {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "GENERATED",
            Self::Validated => "VALIDATED",
            Self::Deployed => "DEPLOYED",
            Self::Deprecated => "DEPRECATED",
        }
    }

    /// Whether a version in stage `self` may move to `to`. Versions move forward, may skip
    /// a stage, and a deprecated version may be deployed again (a roll-back).
    #[must_use]
    pub fn can_move_to(self, to: ModelStage) -> bool {
        use ModelStage::*;
        matches!(
            (self, to),
            (Generated, Validated | Deployed | Deprecated)
                | (Validated, Deployed | Deprecated)
                | (Deployed, Deprecated)
                | (Deprecated, Validated | Deployed)
        )
    }

    /// The event announcing a move to this stage.
    #[must_use]
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Generated => MODEL_VERSION_CREATED,
            Self::Validated => MODEL_VALIDATED,
            Self::Deployed => MODEL_DEPLOYED,
            Self::Deprecated => MODEL_DEPRECATED,
        }
    }
}

impl fmt::Display for ModelStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelStage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "GENERATED" => Ok(Self::Generated),
            "VALIDATED" => Ok(Self::Validated),
            "DEPLOYED" => Ok(Self::Deployed),
            "DEPRECATED" => Ok(Self::Deprecated),
            _ => Err(format!(
                "unknown model stage {s:?}: use GENERATED, VALIDATED, DEPLOYED or DEPRECATED"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: i64,
    pub name: String,
    pub project: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub latest_version: i64,
    /// Current aliases: alias → version.
    pub aliases: BTreeMap<String, i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ranker", "project": "recsys", "description": "click-through ranker"}))]
pub struct NewModel {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub id: i64,
    pub model: String,
    pub version: i64,
    pub uri: Option<String>,
    pub status: ModelStatus,
    pub stage: ModelStage,
    pub source_job_execution: Option<String>,
    pub input_dataset_versions: Vec<DatasetVersionRef>,
    /// Aliases pointing at this version now.
    pub aliases: Vec<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"uri": "s3://models/ranker/3", "status": "READY", "input_dataset_versions": [{"dataset": "clicks", "version": 3}]}))]
pub struct NewModelVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    pub status: ModelStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_job_execution: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_dataset_versions: Vec<DatasetVersionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// Changes to a model version. A `stage` change is recorded in the stage history and
/// announced as an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelVersionUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ModelStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<ModelStage>,
    /// Why the stage changed (kept in the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageChange {
    pub model: String,
    pub version: i64,
    pub from_stage: Option<ModelStage>,
    pub to_stage: ModelStage,
    pub reason: Option<String>,
    pub changed_at: DateTime<Utc>,
}

/// Where an alias points now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelAlias {
    pub model: String,
    pub alias: String,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// `PUT /models/{name}/aliases/{alias}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    pub version: i64,
}

/// One move of an alias; `to_version` null means the alias was removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasMove {
    pub model: String,
    pub alias: String,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub moved_at: DateTime<Utc>,
}

/// `GET /models/{name}/aliases/{alias}?at=`: where the alias pointed at a time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AliasQuery {
    /// RFC 3339 time; default now.
    pub at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------------
// metrics

/// What a metric describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Dataset,
    Model,
    Job,
}

impl MetricKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Model => "model",
            Self::Job => "job",
        }
    }
}

impl FromStr for MetricKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dataset" => Ok(Self::Dataset),
            "model" => Ok(Self::Model),
            "job" => Ok(Self::Job),
            _ => Err(format!(
                "unknown metric kind {s:?}: use dataset, model or job"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metric {
    pub id: i64,
    pub name: String,
    pub project: Option<String>,
    pub kind: MetricKind,
    /// Name of the dataset, model or job it belongs to.
    pub subject: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ranker-auc", "kind": "model", "subject": "ranker", "project": "recsys"}))]
pub struct NewMetric {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    pub kind: MetricKind,
    /// A dataset or model name for those kinds (must exist); a job name for `job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// One observation. Points are append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPoint {
    /// e.g. `accuracy`, `loss`.
    pub key: String,
    pub value: f64,
    #[serde(default)]
    pub step: i64,
    /// Default: when the server receives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Version number of the metric's model (kind `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_execution: Option<String>,
}

/// `POST /metrics/{name}/points` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PointsWritten {
    pub written: u64,
}

/// `GET /metrics/{name}/points` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PointsQuery {
    /// The key to read (required).
    pub key: Option<String>,
    /// Smallest step, inclusive.
    pub step_from: Option<i64>,
    /// Largest step, inclusive.
    pub step_to: Option<i64>,
    /// Downsample into at most this many buckets of equal step width (min/max/avg each).
    pub max_points: Option<u32>,
    /// Without `max_points`: page size (default 10000, at most 100000).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A stored point, or a bucket of points when downsampled (`min`, `max`, `count` set and
/// `value` the average).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PointOut {
    pub step: i64,
    pub value: f64,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_execution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

/// A key's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PointSeries {
    pub metric: String,
    pub key: String,
    pub downsampled: bool,
    pub points: Vec<PointOut>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// artifacts

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub id: i64,
    pub name: String,
    pub project: Option<String>,
    pub uri: String,
    pub kind: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ranker-onnx", "uri": "s3://models/ranker/3/model.onnx", "project": "recsys", "kind": "onnx", "size": 1048576}))]
pub struct NewArtifact {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\s/.?&=@,%\x00-\x1f\x7f-\x9f][^\s?&=@,%\x00-\x1f\x7f-\x9f]*$"
    )]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// 64 lower-case hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-f]{64}$")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

// ---------------------------------------------------------------------------------------------
// list filters

/// Filters shared by the list routes of named things.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only items of this project.
    pub project: Option<String>,
    /// Only items whose name starts with this.
    pub prefix: Option<String>,
    /// Tag subset, `k=v&k2=v2` (URL-encoded), or a whole tag URI `name?k=v`.
    pub tags: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// workflows and runs (rows written by the scheduler)

/// A file of the dags folder that could not be loaded: its last good version (if any) stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DagLoadError {
    /// The file, as found in the dags folder.
    pub file: String,
    /// Why it was not loaded (every problem, with its place in the document).
    pub error: String,
    /// When the load was tried.
    pub at: DateTime<Utc>,
}

/// `GET /workflows`: one page of workflows, and the dags folder's load errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub items: Vec<WorkflowInfo>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Files of the dags folder that failed to load (empty when all loaded).
    #[serde(default)]
    pub load_errors: Vec<DagLoadError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowInfo {
    pub id: i64,
    pub name: String,
    pub project: Option<String>,
    pub namespace: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub tags: Tags,
    pub paused: bool,
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowVersionInfo {
    pub workflow: String,
    pub version: i64,
    /// The submitted AI graph, when one was submitted.
    #[schema(value_type = Option<Object>)]
    pub graph: Option<serde_json::Value>,
    /// The translated workflow.
    #[schema(value_type = Object)]
    pub workflow_doc: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowExecutionInfo {
    pub id: String,
    pub workflow: String,
    pub workflow_version: i64,
    pub state: String,
    #[schema(value_type = Option<Object>)]
    pub trigger: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobExecutionInfo {
    pub id: String,
    pub workflow_execution: Option<String>,
    pub job: String,
    pub attempt: i64,
    pub state: String,
    /// The exit code of the attempt's command: 0 when it succeeded, the command's code when it
    /// exited non-zero (a local process, a container, or on a remote worker); `null` while it
    /// runs and when it timed out, was stopped, died of a signal or could not start.
    pub exit_code: Option<i64>,
    pub worker: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /executions/{id}/jobs`: the answer is a list (not a page), oldest attempt first; `limit`
/// (1..=1000) keeps its first `limit` attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionJobsQuery {
    pub limit: Option<u32>,
}

/// `GET /executions` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first). A cursor continues in the
    /// order it was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(inline)]
    pub order: Option<SortOrder>,
}

/// Order of a list by creation time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

// ---------------------------------------------------------------------------------------------
// lineage

/// `GET /lineage?node=&depth=`. Nodes are written `dataset:NAME@VERSION`,
/// `model:NAME@VERSION` or `job_execution:ID`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LineageQuery {
    pub node: Option<String>,
    /// Hops to follow in both directions, 1..=10 (default 1).
    pub depth: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct LineageNode {
    /// `dataset:raw@3`, `model:fraud@2`, `job_execution:ID`.
    pub id: String,
    /// `dataset_version`, `model_version` or `job_execution`.
    pub kind: String,
    /// Dataset, model or job name.
    pub name: String,
    /// Hops from the asked node.
    pub distance: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct LineageEdge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageGraph {
    pub root: String,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

/// `POST /lineage/edges`: what a job execution read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLineage {
    pub job_execution: String,
    /// Node ids (`dataset:raw@3`, `model:fraud@2`).
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// An OpenLineage RunEvent (the parts this service maps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenLineageRunEvent {
    /// START, RUNNING, COMPLETE, ABORT, FAIL or OTHER.
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    pub run: OpenLineageRun,
    pub job: OpenLineageJob,
    #[serde(default)]
    pub inputs: Vec<OpenLineageDataset>,
    #[serde(default)]
    pub outputs: Vec<OpenLineageDataset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    #[serde(default, rename = "schemaURL", skip_serializing_if = "Option::is_none")]
    pub schema_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenLineageRun {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub facets: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenLineageJob {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub facets: Option<serde_json::Value>,
}

/// A dataset of an OpenLineage event. A name `model/NAME` (or namespace `aiflow.model`) means
/// a model; anything else a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenLineageDataset {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub facets: Option<serde_json::Value>,
}

/// What an OpenLineage event became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenLineageResult {
    pub job_execution: String,
    pub state: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}
