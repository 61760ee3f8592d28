//! `aiflow project | dataset | model | metric | artifact …`: the meta service from the shell.

use std::collections::BTreeMap;

use aiflow_api::meta::*;
use aiflow_api::{Page, PageQuery};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{CliError, CliResult, Ctx, runtime};

/// Filters and paging shared by the list commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct ListArgs {
    /// Only items of this project.
    #[arg(long)]
    project: Option<String>,
    /// Only names starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Tag subset `k=v,k2=v2`, or a tag URI `name?k=v&k2=v2`.
    #[arg(long)]
    tags: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    /// Cursor from a previous page.
    #[arg(long)]
    cursor: Option<String>,
}

impl ListArgs {
    fn query(&self) -> ListQuery {
        ListQuery {
            project: self.project.clone(),
            prefix: self.prefix.clone(),
            tags: self.tags.clone(),
            limit: self.limit,
            cursor: self.cursor.clone(),
            ..ListQuery::default()
        }
    }
}

/// Description, properties and tags shared by create and update.
#[derive(Debug, Clone, Args)]
pub(crate) struct CommonArgs {
    #[arg(long)]
    description: Option<String>,
    /// Properties as a JSON object.
    #[arg(long)]
    properties: Option<String>,
    /// A tag `k=v` (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

impl CommonArgs {
    fn properties(&self) -> Result<Option<serde_json::Value>, CliError> {
        self.properties
            .as_deref()
            .map(|p| {
                serde_json::from_str(p)
                    .map_err(|e| CliError::Usage(format!("--properties is not JSON: {e}")))
            })
            .transpose()
    }

    fn tags(&self) -> Result<Tags, CliError> {
        parse_tags(&self.tags)
    }

    fn update(&self) -> Result<MetaUpdate, CliError> {
        Ok(MetaUpdate {
            description: self.description.clone(),
            properties: self.properties()?,
            tags: if self.tags.is_empty() {
                None
            } else {
                Some(self.tags()?)
            },
        })
    }
}

fn parse_tags(tags: &[String]) -> Result<Tags, CliError> {
    let mut out = BTreeMap::new();
    for t in tags {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--tag {t:?} is not k=v")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCmd {
    /// Create a project.
    Create {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List projects.
    List(ListArgs),
    /// Show one project.
    Show { name: String },
    /// Change description, properties or tags.
    Update {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Delete a project (its name can be used again).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DatasetCmd {
    /// Register a dataset.
    Create {
        name: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        uri: Option<String>,
        #[arg(long)]
        format: Option<String>,
        /// `batch` or `stream`.
        #[arg(long, default_value = "batch")]
        kind: String,
        /// A schema field `name:type` (repeatable).
        #[arg(long = "field")]
        fields: Vec<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    List(ListArgs),
    Show {
        name: String,
    },
    Update {
        name: String,
        #[arg(long)]
        uri: Option<String>,
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    Delete {
        name: String,
    },
    /// Dataset versions.
    #[command(subcommand)]
    Version(DatasetVersionCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DatasetVersionCmd {
    /// Add the next version (announced as DATASET_VERSION_CREATED).
    Create {
        name: String,
        #[arg(long)]
        uri: Option<String>,
        #[arg(long)]
        rows: Option<i64>,
        /// The job execution that produced it.
        #[arg(long)]
        produced_by: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        name: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    Show {
        name: String,
        version: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelCmd {
    /// Register a model.
    Create {
        name: String,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    List(ListArgs),
    Show {
        name: String,
    },
    Update {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    Delete {
        name: String,
    },
    /// Model versions: create, list, show, promote.
    #[command(subcommand)]
    Version(ModelVersionCmd),
    /// Aliases (`production`, `champion`): set, show, delete, history.
    #[command(subcommand)]
    Alias(AliasCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelVersionCmd {
    /// Register the next version (announced as MODEL_VERSION_CREATED).
    Create {
        name: String,
        #[arg(long)]
        uri: Option<String>,
        /// PENDING, READY or FAILED.
        #[arg(long, default_value = "PENDING")]
        status: String,
        /// The job execution that trained it.
        #[arg(long)]
        source_job: Option<String>,
        /// An input dataset version `dataset@version` (repeatable).
        #[arg(long = "input")]
        inputs: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        name: String,
        /// Only versions in this stage.
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    Show {
        name: String,
        version: i64,
    },
    /// Move a version to a stage: VALIDATED, DEPLOYED or DEPRECATED.
    Promote {
        name: String,
        version: i64,
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The stage history of a version.
    Stages {
        name: String,
        version: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AliasCmd {
    /// Point ALIAS at VERSION (announced as MODEL_ALIAS_MOVED).
    Set {
        name: String,
        alias: String,
        version: i64,
    },
    /// Where ALIAS points (now, or `--at` an RFC 3339 time).
    Show {
        name: String,
        alias: String,
        #[arg(long)]
        at: Option<String>,
    },
    Delete {
        name: String,
        alias: String,
    },
    History {
        name: String,
        alias: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MetricCmd {
    /// Create a metric.
    Create {
        name: String,
        /// dataset, model or job.
        #[arg(long)]
        kind: String,
        /// The dataset, model or job it belongs to.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List metrics.
    List(ListArgs),
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Log one point (`KEY VALUE`), or many from a JSON array file (`--file`, `-` for stdin).
    Log {
        name: String,
        key: Option<String>,
        value: Option<f64>,
        #[arg(long, default_value_t = 0)]
        step: i64,
        #[arg(long)]
        model_version: Option<i64>,
        #[arg(long)]
        job_execution: Option<String>,
        #[arg(long)]
        file: Option<String>,
    },
    /// One key's history (or `--max-points N` buckets of min/max/avg).
    Points {
        name: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
        #[arg(long)]
        max_points: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
        /// Cursor from a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCmd {
    /// Register an artifact.
    Create {
        name: String,
        #[arg(long)]
        uri: String,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        size: Option<i64>,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    List(ListArgs),
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Upload FILE as the artifact's content, streamed. Its sha256 is computed first and checked
    /// by the server, which also refuses a file that differs from the artifact's recorded
    /// sha256, or is over its --max-artifact-bytes.
    Put {
        /// The artifact (registered before with `aiflow artifact create`).
        name: String,
        /// The file to upload.
        file: std::path::PathBuf,
    },
    /// Download the artifact's content, checked against its recorded sha256: into FILE with
    /// -o (written beside it, then moved into place), else to stdout.
    Get {
        name: String,
        /// Write the file here instead of to stdout.
        #[arg(short = 'o', long = "output-file", value_name = "FILE")]
        output_file: Option<std::path::PathBuf>,
    },
}

/// Simple aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn tags_text(t: &Tags) -> String {
    t.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn with_next<T>(page: &Page<T>, body: String) -> String {
    match &page.next_cursor {
        Some(c) => format!("{body}(more: --cursor {c})\n"),
        None => body,
    }
}

fn json_lines<T: Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

pub(crate) fn run_project(cmd: ProjectCmd, ctx: &Ctx) -> CliResult {
    let c = ctx.client();
    runtime().block_on(async move {
        match cmd {
            ProjectCmd::Create { name, common } => {
                let p = NewProject {
                    name,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: common.tags()?,
                };
                ctx.print(&c.create_project(&p).await?, json_lines);
            }
            ProjectCmd::List(l) => {
                let page = c.list_projects(&l.query()).await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["name", "description", "tags", "created"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.name.clone(),
                                        opt(&x.description),
                                        tags_text(&x.tags),
                                        x.created_at.to_rfc3339(),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            ProjectCmd::Show { name } => ctx.print(&c.get_project(&name).await?, json_lines),
            ProjectCmd::Update { name, common } => {
                ctx.print(
                    &c.update_project(&name, &common.update()?).await?,
                    json_lines,
                );
            }
            ProjectCmd::Delete { name } => c.delete_project(&name).await?,
        }
        Ok(())
    })
}

pub(crate) fn run_dataset(cmd: DatasetCmd, ctx: &Ctx) -> CliResult {
    let c = ctx.client();
    runtime().block_on(async move {
        match cmd {
            DatasetCmd::Create {
                name,
                project,
                uri,
                format,
                kind,
                fields,
                common,
            } => {
                let kind: DatasetKind = kind.parse().map_err(CliError::Usage)?;
                let schema = fields
                    .iter()
                    .map(|f| {
                        f.split_once(':')
                            .map(|(n, t)| SchemaField {
                                name: n.into(),
                                data_type: t.into(),
                            })
                            .ok_or_else(|| {
                                CliError::Usage(format!("--field {f:?} is not name:type"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let d = NewDataset {
                    name,
                    project,
                    uri,
                    format,
                    schema,
                    kind,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: common.tags()?,
                };
                ctx.print(&c.create_dataset(&d).await?, json_lines);
            }
            DatasetCmd::List(l) => {
                let page = c.list_datasets(&l.query()).await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["name", "project", "kind", "latest", "uri", "tags"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.name.clone(),
                                        opt(&x.project),
                                        x.kind.as_str().into(),
                                        x.latest_version.to_string(),
                                        opt(&x.uri),
                                        tags_text(&x.tags),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            DatasetCmd::Show { name } => ctx.print(&c.get_dataset(&name).await?, json_lines),
            DatasetCmd::Update {
                name,
                uri,
                format,
                common,
            } => {
                let u = DatasetUpdate {
                    uri,
                    format,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: if common.tags.is_empty() {
                        None
                    } else {
                        Some(common.tags()?)
                    },
                    ..DatasetUpdate::default()
                };
                ctx.print(&c.update_dataset(&name, &u).await?, json_lines);
            }
            DatasetCmd::Delete { name } => c.delete_dataset(&name).await?,
            DatasetCmd::Version(DatasetVersionCmd::Create {
                name,
                uri,
                rows,
                produced_by,
                description,
            }) => {
                let v = NewDatasetVersion {
                    uri,
                    row_count: rows,
                    produced_by,
                    description,
                    properties: None,
                };
                ctx.print(&c.create_dataset_version(&name, &v).await?, json_lines);
            }
            DatasetCmd::Version(DatasetVersionCmd::List {
                name,
                limit,
                cursor,
            }) => {
                let page = c
                    .list_dataset_versions(&name, &PageQuery { limit, cursor })
                    .await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["version", "uri", "rows", "produced_by", "created"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.version.to_string(),
                                        opt(&x.uri),
                                        opt(&x.row_count),
                                        opt(&x.produced_by),
                                        x.created_at.to_rfc3339(),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            DatasetCmd::Version(DatasetVersionCmd::Show { name, version }) => {
                ctx.print(&c.get_dataset_version(&name, version).await?, json_lines);
            }
        }
        Ok(())
    })
}

fn versions_table(p: &Page<ModelVersion>) -> String {
    with_next(
        p,
        table(
            &["version", "stage", "status", "aliases", "uri", "created"],
            p.items
                .iter()
                .map(|x| {
                    vec![
                        x.version.to_string(),
                        x.stage.as_str().into(),
                        x.status.as_str().into(),
                        x.aliases.join(","),
                        opt(&x.uri),
                        x.created_at.to_rfc3339(),
                    ]
                })
                .collect(),
        ),
    )
}

pub(crate) fn run_model(cmd: ModelCmd, ctx: &Ctx) -> CliResult {
    let c = ctx.client();
    runtime().block_on(async move {
        match cmd {
            ModelCmd::Create {
                name,
                project,
                common,
            } => {
                let m = NewModel {
                    name,
                    project,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: common.tags()?,
                };
                ctx.print(&c.create_model(&m).await?, json_lines);
            }
            ModelCmd::List(l) => {
                let page = c.list_models(&l.query()).await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["name", "project", "latest", "aliases", "tags"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.name.clone(),
                                        opt(&x.project),
                                        x.latest_version.to_string(),
                                        x.aliases
                                            .iter()
                                            .map(|(a, v)| format!("{a}={v}"))
                                            .collect::<Vec<_>>()
                                            .join(","),
                                        tags_text(&x.tags),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            ModelCmd::Show { name } => ctx.print(&c.get_model(&name).await?, json_lines),
            ModelCmd::Update { name, common } => {
                ctx.print(&c.update_model(&name, &common.update()?).await?, json_lines);
            }
            ModelCmd::Delete { name } => c.delete_model(&name).await?,
            ModelCmd::Version(v) => match v {
                ModelVersionCmd::Create {
                    name,
                    uri,
                    status,
                    source_job,
                    inputs,
                    description,
                } => {
                    let status: ModelStatus = status.parse().map_err(CliError::Usage)?;
                    let inputs = inputs
                        .iter()
                        .map(|i| {
                            i.rsplit_once('@')
                                .and_then(|(d, v)| {
                                    Some(DatasetVersionRef {
                                        dataset: d.into(),
                                        version: v.parse().ok()?,
                                    })
                                })
                                .ok_or_else(|| {
                                    CliError::Usage(format!("--input {i:?} is not dataset@version"))
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let v = NewModelVersion {
                        uri,
                        status,
                        source_job_execution: source_job,
                        input_dataset_versions: inputs,
                        description,
                        ..NewModelVersion::default()
                    };
                    ctx.print(&c.create_model_version(&name, &v).await?, json_lines);
                }
                ModelVersionCmd::List {
                    name,
                    stage,
                    limit,
                    cursor,
                } => {
                    let stage = stage
                        .map(|s| s.parse::<ModelStage>())
                        .transpose()
                        .map_err(CliError::Usage)?;
                    let page = c
                        .list_model_versions(&name, stage, &PageQuery { limit, cursor })
                        .await?;
                    ctx.print(&page, versions_table);
                }
                ModelVersionCmd::Show { name, version } => {
                    ctx.print(&c.get_model_version(&name, version).await?, json_lines);
                }
                ModelVersionCmd::Promote {
                    name,
                    version,
                    to,
                    reason,
                } => {
                    let stage: ModelStage = to.parse().map_err(CliError::Usage)?;
                    let v = c
                        .promote_model_version(&name, version, stage, reason)
                        .await?;
                    ctx.print(&v, |v| {
                        format!("{}@{} is {}\n", v.model, v.version, v.stage)
                    });
                }
                ModelVersionCmd::Stages { name, version } => {
                    let h = c.stage_history(&name, version).await?;
                    ctx.print(&h, |h| {
                        table(
                            &["from", "to", "reason", "at"],
                            h.iter()
                                .map(|x| {
                                    vec![
                                        opt(&x.from_stage),
                                        x.to_stage.to_string(),
                                        opt(&x.reason),
                                        x.changed_at.to_rfc3339(),
                                    ]
                                })
                                .collect(),
                        )
                    });
                }
            },
            ModelCmd::Alias(a) => match a {
                AliasCmd::Set {
                    name,
                    alias,
                    version,
                } => {
                    let a = c.set_alias(&name, &alias, version).await?;
                    ctx.print(&a, |a| {
                        format!("{}/{} -> {}\n", a.model, a.alias, a.version)
                    });
                }
                AliasCmd::Show { name, alias, at } => {
                    let at = match at {
                        None => None,
                        Some(t) => {
                            serde_json::from_value::<AliasQuery>(serde_json::json!({ "at": t }))
                                .map_err(|e| {
                                    CliError::Usage(format!(
                                        "--at {t:?} is not an RFC 3339 time: {e}"
                                    ))
                                })?
                                .at
                        }
                    };
                    let a = c.get_alias(&name, &alias, at).await?;
                    ctx.print(&a, |a| {
                        format!("{}/{} -> {}\n", a.model, a.alias, a.version)
                    });
                }
                AliasCmd::Delete { name, alias } => c.delete_alias(&name, &alias).await?,
                AliasCmd::History { name, alias } => {
                    let h = c.alias_history(&name, &alias).await?;
                    ctx.print(&h, |h| {
                        table(
                            &["from", "to", "at"],
                            h.iter()
                                .map(|x| {
                                    vec![
                                        opt(&x.from_version),
                                        opt(&x.to_version),
                                        x.moved_at.to_rfc3339(),
                                    ]
                                })
                                .collect(),
                        )
                    });
                }
            },
        }
        Ok(())
    })
}

pub(crate) fn run_metric(cmd: MetricCmd, ctx: &Ctx) -> CliResult {
    let c = ctx.client();
    runtime().block_on(async move {
        match cmd {
            MetricCmd::Create {
                name,
                kind,
                subject,
                project,
                common,
            } => {
                let kind: MetricKind = kind.parse().map_err(CliError::Usage)?;
                let m = NewMetric {
                    name,
                    kind,
                    subject,
                    project,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: common.tags()?,
                };
                ctx.print(&c.create_metric(&m).await?, json_lines);
            }
            MetricCmd::List(l) => {
                let page = c.list_metrics(&l.query()).await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["name", "kind", "subject", "project", "tags"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.name.clone(),
                                        x.kind.as_str().into(),
                                        opt(&x.subject),
                                        opt(&x.project),
                                        tags_text(&x.tags),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            MetricCmd::Show { name } => ctx.print(&c.get_metric(&name).await?, json_lines),
            MetricCmd::Delete { name } => c.delete_metric(&name).await?,
            MetricCmd::Log {
                name,
                key,
                value,
                step,
                model_version,
                job_execution,
                file,
            } => {
                let points: Vec<MetricPoint> = match (file, key, value) {
                    (Some(f), None, None) => {
                        let text = if f == "-" {
                            std::io::read_to_string(std::io::stdin())
                        } else {
                            std::fs::read_to_string(&f)
                        }
                        .map_err(|e| {
                            CliError::Failed(format!("cannot read {f}: {e}"), Vec::new())
                        })?;
                        serde_json::from_str(&text).map_err(|e| {
                            CliError::Usage(format!("{f} is not a JSON array of points: {e}"))
                        })?
                    }
                    (None, Some(key), Some(value)) => vec![MetricPoint {
                        key,
                        value,
                        step,
                        timestamp: None,
                        model_version,
                        job_execution,
                    }],
                    _ => return Err(CliError::Usage("give KEY VALUE, or --file FILE".into())),
                };
                let w = c.log_points(&name, &points).await?;
                ctx.print(&w, |w| format!("{} point(s) written\n", w.written));
            }
            MetricCmd::Points {
                name,
                key,
                from,
                to,
                max_points,
                limit,
                cursor,
            } => {
                let q = PointsQuery {
                    key: Some(key),
                    step_from: from,
                    step_to: to,
                    max_points,
                    limit,
                    cursor,
                };
                let s = c.read_points(&name, &q).await?;
                ctx.print(&s, |s| {
                    table(
                        &["step", "value", "min", "max", "count", "time"],
                        s.points
                            .iter()
                            .map(|p| {
                                vec![
                                    p.step.to_string(),
                                    p.value.to_string(),
                                    opt(&p.min),
                                    opt(&p.max),
                                    opt(&p.count),
                                    p.timestamp.to_rfc3339(),
                                ]
                            })
                            .collect(),
                    )
                });
            }
        }
        Ok(())
    })
}

pub(crate) fn run_artifact(cmd: ArtifactCmd, ctx: &Ctx) -> CliResult {
    let c = ctx.client();
    runtime().block_on(async move {
        match cmd {
            ArtifactCmd::Create {
                name,
                uri,
                kind,
                sha256,
                size,
                project,
                common,
            } => {
                let a = NewArtifact {
                    name,
                    uri,
                    project,
                    kind,
                    sha256,
                    size,
                    description: common.description.clone(),
                    properties: common.properties()?,
                    tags: common.tags()?,
                };
                ctx.print(&c.create_artifact(&a).await?, json_lines);
            }
            ArtifactCmd::List(l) => {
                let page = c.list_artifacts(&l.query()).await?;
                ctx.print(&page, |p| {
                    with_next(
                        p,
                        table(
                            &["name", "kind", "uri", "size", "tags"],
                            p.items
                                .iter()
                                .map(|x| {
                                    vec![
                                        x.name.clone(),
                                        opt(&x.kind),
                                        x.uri.clone(),
                                        opt(&x.size),
                                        tags_text(&x.tags),
                                    ]
                                })
                                .collect(),
                        ),
                    )
                });
            }
            ArtifactCmd::Show { name } => ctx.print(&c.get_artifact(&name).await?, json_lines),
            ArtifactCmd::Delete { name } => c.delete_artifact(&name).await?,
            ArtifactCmd::Put { name, file } => {
                if !file.is_file() {
                    return Err(CliError::Failed(
                        format!("{}: not a readable file", file.display()),
                        Vec::new(),
                    ));
                }
                ctx.print(&c.upload_artifact_file(&name, &file).await?, json_lines);
            }
            ArtifactCmd::Get {
                name,
                output_file: Some(path),
            } => {
                let n = c.download_artifact_file(&name, &path).await?;
                eprintln!("{name}: {n} bytes written to {}", path.display());
            }
            ArtifactCmd::Get {
                name,
                output_file: None,
            } => download_to_stdout(&c, &name).await?,
        }
        Ok(())
    })
}

/// The artifact's content to stdout as it arrives; a sha256 that differs from the recorded one
/// fails the command after the bytes are out.
async fn download_to_stdout(c: &aiflow_sdk::Client, name: &str) -> CliResult {
    use futures::StreamExt;
    use sha2::Digest;
    use std::io::Write;
    let resp = c.download_artifact_content(name).await?;
    let want = resp
        .headers()
        .get(aiflow_sdk::client::CHECKSUM_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let mut sha = sha2::Sha256::new();
    let mut stream = resp.bytes_stream();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            CliError::Failed(format!("the download of {name} broke: {e}"), Vec::new())
        })?;
        sha.update(&chunk);
        if let Err(e) = out.write_all(&chunk) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(CliError::Failed(
                format!("cannot write the output: {e}"),
                Vec::new(),
            ));
        }
    }
    let _ = out.flush();
    let got: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    match want {
        Some(w) if w != got => Err(CliError::Failed(
            format!("the downloaded bytes of {name} have sha256 {got}, the server recorded {w}"),
            Vec::new(),
        )),
        _ => Ok(()),
    }
}
