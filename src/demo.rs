//! `aiflow demo`: the whole product on the example pipeline. Starts the embedded server, runs
//! `dags/online_learning.json`, shows jobs and events as they happen, and ends with a summary
//! once a model version is deployed and the predictor serves it. With `--image`, every job of the
//! example runs in a container from that image instead of as a process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aiflow_api::meta::ExecutionQuery;
use aiflow_api::{Event, EventFilter, Offset};
use anyhow::{Context, bail};
use futures::StreamExt;

use crate::config::Config;
use crate::server;

const WORKFLOW: &str = "online_learning";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Address of the server the demo starts.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Data folder (SQLite file, job logs, the example's data).
    #[arg(long, default_value = ".aiflow")]
    data_dir: PathBuf,
    /// Folder holding online_learning.json and jobs/.
    #[arg(long, default_value = "dags")]
    dags: PathBuf,
    /// Keep the server running after the demo, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Give up when the model is not deployed within this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Run every job of the example in a container from this image (on the Docker engine of
    /// DOCKER_HOST or the local socket; pulled only when the engine lacks it), with the data
    /// folder's work/, the dags folder and this binary mounted at their own paths. The image
    /// needs sh, awk, sed and coreutils.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let graph = args.dags.join(format!("{WORKFLOW}.json"));
    if !graph.exists() {
        bail!(
            "{} not found: run the demo from the repository root, or pass --dags",
            graph.display()
        );
    }
    let mut config = Config {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        dags: Some(args.dags.clone()),
        // The demo's jobs end with it, unless the server keeps running.
        stop_jobs_on_exit: !args.keep_running,
        ..Config::default()
    };
    // In containers: the example's graph with every job boxed, submitted once the server runs
    // (the dags folder is not loaded, so its process version does not replace it).
    let boxed = match &args.image {
        Some(image) => {
            let (doc, data_dir) = in_containers(&graph, image, &args.data_dir, &args.dags)?;
            // No engine: say so now rather than after the demo's timeout.
            aiflow_scheduler::exec::container::ContainerExecutor::connect(
                config.docker_host.as_deref(),
            )
            .await
            .context("--image runs the jobs in containers")?;
            let mounts = doc["nodes"][0]["job"]["mounts"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            eprintln!("Every job runs in a container from {image}, with {mounts} mounted");
            config.data_dir = data_dir;
            config.dags = None;
            Some(doc)
        }
        None => None,
    };
    let running = server::start(&config).await?;
    if let Some(doc) = boxed {
        let submitted = running.scheduler.submit(doc).await;
        if let Err(e) = submitted {
            running.shutdown().await;
            bail!(
                "the example in containers is refused: {}",
                e.to_string().replace("\n  ", "; ")
            );
        }
    }
    let result = watch(&running, &args).await;
    if args.keep_running && result.is_ok() {
        eprintln!(
            "\nThe server keeps running at {} (Ctrl-C stops it).",
            running.base
        );
        server::shutdown_signal().await;
    }
    running.shutdown().await;
    result
}

async fn watch(running: &server::Running, args: &DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // A demo stopped before it ended (Ctrl-C, a crash, a kill) left its execution RUNNING: the
    // scheduler has resumed it, and the demo follows it again from its first event.
    let unfinished = running
        .scheduler
        .store()
        .list_workflow_executions(&ExecutionQuery {
            workflow: Some(WORKFLOW.to_string()),
            state: Some("RUNNING".to_string()),
            ..ExecutionQuery::default()
        })
        .await
        .context("cannot list executions")?
        .items
        .into_iter()
        .next_back();
    let (execution, from) = match unfinished {
        Some(e) => {
            eprintln!(
                "\nResuming {WORKFLOW} (execution {}), which an earlier run left unfinished\n",
                e.id
            );
            (e, Offset(0))
        }
        None => {
            let after = running.bus.latest_offset().await.context("event bus")?;
            let e = running
                .scheduler
                .start_execution(WORKFLOW, serde_json::json!({"type": "demo"}))
                .await
                .with_context(|| format!("cannot start {WORKFLOW}"))?;
            eprintln!("\nRunning {WORKFLOW} (execution {})\n", e.id);
            (e, after)
        }
    };
    let since = execution.created_at;
    let mut events = running
        .bus
        .subscribe(EventFilter::default(), from)
        .await
        .context("event bus")?
        .filter(move |e| std::future::ready(!matches!(e, Ok(e) if e.created_at < since)));
    let mut summary = Summary::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    while !summary.done() {
        // After the deploy job, its MODEL_DEPLOYED event (if any) follows within moments.
        let wait_until = match summary.deploy_finished {
            Some(t) if summary.deployed.is_none() => {
                deadline.min(tokio::time::Instant::from_std(t + Duration::from_secs(2)))
            }
            _ => deadline,
        };
        let next = tokio::time::timeout_at(wait_until, events.next()).await;
        if next.is_err() && summary.deploy_finished.is_some() && summary.deployed.is_none() {
            summary.kept_production = true;
            break;
        }
        let event = match next {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => bail!("event stream failed: {e}"),
            Ok(None) => bail!("event stream ended"),
            Err(_) => bail!(
                "no model was deployed within {} s; see `aiflow execution show {}`",
                args.timeout_s,
                execution.id
            ),
        };
        if let Some(line) = summary.take(&event, &execution.id) {
            eprintln!("  {:>6.2}s  {line}", started.elapsed().as_secs_f64());
        }
    }
    let base = &running.base;
    let jobs: Vec<String> = summary
        .attempts
        .iter()
        .map(|(job, n)| {
            if *n > 1 {
                format!("{job} ×{n}")
            } else {
                job.clone()
            }
        })
        .collect();
    eprintln!(
        "\nDone in {:.1} s (server ready in {} ms)\n  jobs run        {} attempts: {}\n  events handled  {}\n  model           {}\n  execution       {id}  (aiflow execution show {id})\n  API             {base}/api/v1\n  Docs            {base}/docs\n  Data            {}",
        started.elapsed().as_secs_f64(),
        running.startup.as_millis(),
        summary.attempts.values().sum::<u32>(),
        jobs.join(", "),
        summary.events,
        match &summary.deployed {
            Some(v) => format!(
                "fraud_detector version {v} deployed (alias production); the predictor serves it"
            ),
            None => "the new version did not beat production, which stays as it was".to_string(),
        },
        args.data_dir.display(),
        id = execution.id,
    );
    if !args.keep_running {
        // The predictor is a streaming job: stop the execution so its process ends with the demo.
        let _ = running.scheduler.stop_execution(&execution.id).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if args.image.is_some() {
            // Its container is stopped and removed by the server: wait for that to be done.
            wait_jobs_ended(running, &execution.id).await;
        }
    }
    Ok(())
}

/// The example's AI graph with every job in a container from `image`: the data folder's `work`
/// (the data folder made absolute is returned), the dags folder and this binary mounted at their
/// own paths, the working folder the current one, so the jobs' scripts and `AIFLOW_BIN` work
/// unchanged.
fn in_containers(
    graph: &Path,
    image: &str,
    data_dir: &Path,
    dags: &Path,
) -> anyhow::Result<(serde_json::Value, PathBuf)> {
    if let Some(reason) = aiflow_translator::image_problem(image) {
        bail!("--image: {reason}");
    }
    crate::config::private_dir(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    let absolute = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()))
    };
    let data_dir = absolute(data_dir)?;
    // The jobs share files under <data>/work (dags/jobs/common.sh); only that is mounted, so the
    // server's database and secrets stay out of the containers.
    let work = data_dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let dags = absolute(dags)?;
    // The binary the jobs call (AIFLOW_BIN), as the server names it.
    let bin = std::env::current_exe().context("cannot find the aiflow binary")?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let text = std::fs::read_to_string(graph)
        .with_context(|| format!("cannot read {}", graph.display()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", graph.display()))?;
    let mounts = [
        format!("{0}:{0}", work.display()),
        format!("{0}:{0}:ro", dags.display()),
        format!("{0}:{0}:ro", bin.display()),
    ];
    let nodes = doc["nodes"]
        .as_array_mut()
        .with_context(|| format!("{} has no nodes", graph.display()))?;
    for node in nodes {
        let Some(node) = node.as_object_mut() else {
            continue;
        };
        let job = node
            .entry("job")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .context("a node's job is not an object")?;
        job.insert("image".into(), image.into());
        job.insert("pull".into(), "if_missing".into());
        job.insert("mounts".into(), serde_json::json!(mounts));
        job.insert(
            "working_dir".into(),
            cwd.to_string_lossy().into_owned().into(),
        );
    }
    Ok((doc, data_dir))
}

/// Waits (at most 30 s) until every attempt of the execution has ended.
async fn wait_jobs_ended(running: &server::Running, execution: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        match running
            .scheduler
            .store()
            .list_job_executions(execution)
            .await
        {
            Ok(jobs) if jobs.iter().all(|j| j.ended_at.is_some()) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the demo's jobs");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("Some jobs of {execution} were still running after 30 s");
}

/// What the demo has seen so far.
#[derive(Debug, Default)]
struct Summary {
    events: u64,
    attempts: BTreeMap<String, u32>,
    deployed: Option<String>,
    predictor_restarted: bool,
    deploy_finished: Option<Instant>,
    kept_production: bool,
}

impl Summary {
    fn done(&self) -> bool {
        (self.deployed.is_some() && self.predictor_restarted) || self.kept_production
    }

    /// Notes an event; returns the line to show for it.
    fn take(&mut self, e: &Event, execution: &str) -> Option<String> {
        self.events += 1;
        let context = e.context.as_ref();
        let of_this = context.and_then(|c| c["execution"].as_str()) == Some(execution);
        match e.event_type.as_str() {
            "JOB_STATUS" if of_this => {
                let job = context.and_then(|c| c["job"].as_str()).unwrap_or("?");
                let attempt = context.and_then(|c| c["attempt"].as_u64()).unwrap_or(1);
                if job == "deploy" && e.value == "SUCCEEDED" {
                    self.deploy_finished = Some(Instant::now());
                }
                if e.value == "RUNNING" {
                    *self.attempts.entry(job.to_string()).or_default() += 1;
                    if job == "predictor" && attempt > 1 && self.deployed.is_some() {
                        self.predictor_restarted = true;
                    }
                }
                (e.value != "QUEUED")
                    .then(|| format!("job   {job:<10} attempt {attempt}  {}", e.value))
            }
            "WORKFLOW_STATUS" | "JOB_STATUS" => None,
            _ => {
                if e.event_type == "MODEL_DEPLOYED" {
                    self.deployed = Some(e.value.clone());
                }
                Some(format!(
                    "event {:<28} {} = {}",
                    e.key, e.event_type, e.value
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_of_the_example_is_boxed_with_its_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let dags = Path::new(env!("CARGO_MANIFEST_DIR")).join("dags");
        let (doc, data_dir) = in_containers(
            &dags.join("online_learning.json"),
            "aiflow-test/debian:bookworm",
            &dir.path().join("data"),
            &dags,
        )
        .unwrap();
        assert!(data_dir.is_absolute() && data_dir.join("work").is_dir());
        let workflow = aiflow_translator::Document::from_value(doc)
            .unwrap()
            .into_workflow()
            .expect("the boxed example is valid");
        let bin = std::env::current_exe().unwrap();
        let dags = std::fs::canonicalize(&dags).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(workflow.jobs.len(), 5);
        for job in &workflow.jobs {
            assert_eq!(job.image.as_deref(), Some("aiflow-test/debian:bookworm"));
            assert_eq!(job.pull, Some(aiflow_translator::Pull::IfMissing));
            assert_eq!(
                job.working_dir.as_deref(),
                Some(cwd.to_str().unwrap()),
                "{}",
                job.name
            );
            assert_eq!(
                job.mounts,
                [
                    format!("{0}:{0}", data_dir.join("work").display()),
                    format!("{0}:{0}:ro", dags.display()),
                    format!("{0}:{0}:ro", bin.display()),
                ],
                "{}",
                job.name
            );
        }
        let bad = in_containers(
            &dags.join("online_learning.json"),
            "Not An Image",
            dir.path(),
            &dags,
        )
        .unwrap_err();
        assert!(bad.to_string().starts_with("--image: image"), "{bad}");
    }
}
