//! `aiflow workflow …` and `aiflow execution …`: submit and run workflows, follow their jobs.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use aiflow_api::meta::{ExecutionQuery, ListQuery};
use clap::Subcommand;
use futures::StreamExt;

use super::meta::table;
use super::{CliError, CliResult, Ctx, runtime};

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCmd {
    /// Submit an AI graph or workflow document; a changed document becomes a new version.
    #[command(after_help = "Example:\n  aiflow workflow submit dags/online_learning.json")]
    Submit { file: PathBuf },
    /// List workflows.
    List {
        #[arg(long)]
        project: Option<String>,
        /// At most this many (1..=1000, default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Cursor from a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a workflow and its versions.
    Show { name: String },
    /// Stop triggers from starting executions of a workflow.
    Pause { name: String },
    /// Let a paused workflow's triggers run again.
    Resume { name: String },
    /// Delete a workflow (its name can be reused).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExecutionCmd {
    /// Start an execution of a workflow's latest version.
    #[command(
        after_help = "Example:\n  aiflow execution start online_learning --wait 60\n\nExit status with --wait: 0 the execution SUCCEEDED; 3 it ended FAILED or STOPPED; 4 it was\nstill running when the wait ended; 1 the server could not be asked."
    )]
    Start {
        workflow: String,
        /// Wait up to this many seconds for the execution to end (exit status below).
        #[arg(long)]
        wait: Option<u64>,
    },
    /// List executions.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1..=1000, default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Cursor from a previous page (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show an execution and its jobs.
    Show { id: String },
    /// Stop a running execution.
    Stop { id: String },
    /// Print a job's log.
    Logs {
        id: String,
        job: String,
        /// Which attempt (default: the latest).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new output until the attempt ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Explain from the recorded rule evaluations why a job started, stopped or still waits.
    Why { id: String, job: String },
}

/// `execution start --wait`: the execution ended FAILED or STOPPED.
const WAIT_ENDED_UNSUCCESSFUL: u8 = 3;
/// `execution start --wait`: the execution was still running when the wait ended.
const WAIT_TIMED_OUT: u8 = 4;

pub(crate) fn run_workflow(cmd: WorkflowCmd, ctx: &Ctx) -> CliResult {
    let client = ctx.client();
    runtime().block_on(async {
        match cmd {
            WorkflowCmd::Submit { file } => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    CliError::Failed(format!("cannot read {}: {e}", file.display()), Vec::new())
                })?;
                let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    CliError::Failed(format!("{} is not JSON: {e}", file.display()), Vec::new())
                })?;
                let s = client.submit_document(&doc).await?;
                ctx.print(&s, |s| {
                    format!(
                        "{} version {} ({})\n",
                        s.workflow,
                        s.version,
                        if s.created { "stored" } else { "unchanged" }
                    )
                });
            }
            WorkflowCmd::List {
                project,
                limit,
                cursor,
            } => {
                let page = client
                    .list_workflows(&ListQuery {
                        project,
                        limit,
                        cursor,
                        ..ListQuery::default()
                    })
                    .await?;
                for e in &page.load_errors {
                    eprintln!("warning: {} did not load: {}", e.file, e.error);
                }
                ctx.print(&page, |p| {
                    table(
                        &["name", "version", "paused", "project", "updated"],
                        p.items
                            .iter()
                            .map(|w| {
                                vec![
                                    w.name.clone(),
                                    w.latest_version.to_string(),
                                    w.paused.to_string(),
                                    w.project.clone().unwrap_or_else(|| "-".into()),
                                    w.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                                ]
                            })
                            .collect(),
                    )
                });
            }
            WorkflowCmd::Show { name } => {
                let w = client.get_workflow(&name).await?;
                let versions = client.list_workflow_versions(&name).await?;
                let out = serde_json::json!({"workflow": w, "versions": versions});
                ctx.print(&out, |_| {
                    let mut s = format!(
                        "{} (latest version {}, {})\n",
                        w.name,
                        w.latest_version,
                        if w.paused { "paused" } else { "active" }
                    );
                    for v in &versions {
                        s.push_str(&format!("  version {}  {}\n", v.version, v.created_at));
                    }
                    s
                });
            }
            WorkflowCmd::Pause { name } => {
                let w = client.pause_workflow(&name).await?;
                ctx.print(&w, |w| format!("{} paused\n", w.name));
            }
            WorkflowCmd::Resume { name } => {
                let w = client.resume_workflow(&name).await?;
                ctx.print(&w, |w| format!("{} resumed\n", w.name));
            }
            WorkflowCmd::Delete { name } => {
                client.delete_workflow(&name).await?;
                ctx.print(&serde_json::json!({"deleted": name}), |_| {
                    format!("{name} deleted\n")
                });
            }
        }
        Ok(())
    })
}

pub(crate) fn run_execution(cmd: ExecutionCmd, ctx: &Ctx) -> CliResult {
    let client = ctx.client();
    runtime().block_on(async {
        match cmd {
            ExecutionCmd::Start { workflow, wait } => {
                let mut e = client.start_execution(&workflow).await?;
                if let Some(secs) = wait {
                    e = client
                        .wait_execution(&e.id, Duration::from_secs(secs))
                        .await?;
                }
                ctx.print(&e, |e| format!("{} {} {}\n", e.id, e.workflow, e.state));
                if let Some(secs) = wait {
                    match e.state.as_str() {
                        "SUCCEEDED" => {}
                        "FAILED" | "STOPPED" => {
                            return Err(CliError::Exit(
                                WAIT_ENDED_UNSUCCESSFUL,
                                format!("execution {} ended {}", e.id, e.state),
                            ));
                        }
                        _ => {
                            return Err(CliError::Exit(
                                WAIT_TIMED_OUT,
                                format!(
                                    "execution {} is still {} after {secs} s",
                                    e.id, e.state
                                ),
                            ));
                        }
                    }
                }
            }
            ExecutionCmd::List {
                workflow,
                state,
                limit,
                cursor,
            } => {
                let page = client
                    .list_executions(&ExecutionQuery {
                        workflow,
                        state,
                        limit,
                        cursor,
                        ..ExecutionQuery::default()
                    })
                    .await?;
                ctx.print(&page, |p| {
                    table(
                        &["id", "workflow", "version", "state", "started", "ended"],
                        p.items
                            .iter()
                            .map(|e| {
                                vec![
                                    e.id.clone(),
                                    e.workflow.clone(),
                                    e.workflow_version.to_string(),
                                    e.state.clone(),
                                    e.started_at.map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                                    e.ended_at.map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                                ]
                            })
                            .collect(),
                    )
                });
            }
            ExecutionCmd::Show { id } => {
                let e = client.get_execution(&id).await?;
                let jobs = client.execution_jobs(&id).await?;
                let out = serde_json::json!({"execution": e, "jobs": jobs});
                ctx.print(&out, |_| {
                    let mut s = format!("{} {} version {} {}\n", e.id, e.workflow, e.workflow_version, e.state);
                    if let Some(reason) = e.properties.get("reason").and_then(|r| r.as_str()) {
                        s.push_str(&format!("reason: {reason}\n"));
                    }
                    s.push_str(&table(
                        &["job", "attempt", "state", "exit", "started", "ended"],
                        jobs.iter()
                            .map(|j| {
                                vec![
                                    j.job.clone(),
                                    j.attempt.to_string(),
                                    j.state.clone(),
                                    j.exit_code.map_or("-".into(), |c| c.to_string()),
                                    j.started_at.map_or("-".into(), |t| t.format("%H:%M:%S%.3f").to_string()),
                                    j.ended_at.map_or("-".into(), |t| t.format("%H:%M:%S%.3f").to_string()),
                                ]
                            })
                            .collect(),
                    ));
                    s
                });
            }
            ExecutionCmd::Stop { id } => {
                let s = client.stop_execution(&id).await?;
                ctx.print(&s, |s| format!("{} stopping\n", s.execution));
            }
            ExecutionCmd::Logs {
                id,
                job,
                attempt,
                follow,
            } => {
                if follow {
                    let resp = client.follow_job_log(&id, &job, attempt).await?;
                    let mut body = resp.bytes_stream();
                    let mut out = std::io::stdout();
                    while let Some(chunk) = body.next().await {
                        let chunk = chunk.map_err(|e| {
                            CliError::Failed(format!("log stream broke: {e}"), Vec::new())
                        })?;
                        let _ = out.write_all(&chunk);
                        let _ = out.flush();
                    }
                } else {
                    crate::cli::out!("{}", client.job_log(&id, &job, attempt).await?);
                }
            }
            ExecutionCmd::Why { id, job } => {
                let evaluations = client.job_why(&id, &job).await?;
                ctx.print(&evaluations, |evs| {
                    if evs.is_empty() {
                        return format!("no rule of job {job} has been evaluated yet (jobs without a START rule start with the execution)\n");
                    }
                    evs.iter()
                        .map(|e| {
                            format!(
                                "{}  rule {}  {}  -> {}\n",
                                e.created_at.format("%H:%M:%S%.3f"),
                                e.rule,
                                e.explanation,
                                e.decision
                            )
                        })
                        .collect()
                });
            }
        }
        Ok(())
    })
}
