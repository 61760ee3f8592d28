//! `aiflow worker`: a remote agent that takes job attempts from the JetStream work queue of its
//! queues, runs them with the local executor's process handling, streams their logs and reports
//! their states back (see `aiflow_scheduler::remote`). It only dials out to NATS: a site behind
//! a firewall needs no inbound port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// `aiflow worker` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// NATS server (nats://…) the scheduler hands tasks to.
    #[arg(long, env = "AIFLOW_NATS")]
    pub(crate) nats: String,
    /// Queue to take tasks from (`job.queue` in the graph); repeat for several.
    #[arg(
        long = "queue",
        env = "AIFLOW_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub(crate) queues: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "AIFLOW_SLOTS", default_value_t = 4)]
    pub(crate) slots: usize,
    /// Name shown in `GET /api/v1/workers` [default: host name and process id].
    #[arg(long, env = "AIFLOW_WORKER_NAME")]
    pub(crate) name: Option<String>,
    /// GPUs this worker offers (tasks asking for more wait for another worker).
    #[arg(long, env = "AIFLOW_GPUS", default_value_t = 0)]
    pub(crate) gpus: u32,
    /// CPUs this worker offers [default: the machine's].
    #[arg(long, env = "AIFLOW_CPUS")]
    pub(crate) cpus: Option<f64>,
    /// Memory this worker offers, in MiB [default: the machine's].
    #[arg(long, env = "AIFLOW_MEMORY_MB")]
    pub(crate) memory_mb: Option<u64>,
    /// A label `key=value` shown with the worker; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Where the logs of the attempts run here are kept [default: ./.aiflow-worker].
    #[arg(long, env = "AIFLOW_DATA_DIR", default_value = ".aiflow-worker")]
    pub(crate) data_dir: PathBuf,
    /// Name of the deployment on NATS, as the servers' `--cluster` [default: aiflow].
    #[arg(long, env = "AIFLOW_CLUSTER", default_value = aiflow_scheduler::remote::DEFAULT_CLUSTER)]
    pub(crate) cluster: String,
    /// Largest job log in bytes (older output dropped past it), 0 for no limit.
    #[arg(long, env = "AIFLOW_JOB_LOG_MAX_BYTES", default_value_t = aiflow_scheduler::executor::DEFAULT_LOG_MAX_BYTES)]
    pub(crate) job_log_max_bytes: u64,
    /// SIGTERM → SIGKILL grace period of a stopped task, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) stop_grace_s: u64,
    /// Offer containers: run jobs with an `image` on the Docker engine (only such workers take
    /// them).
    #[arg(long, env = "AIFLOW_CONTAINERS")]
    pub(crate) containers: bool,
    /// Docker engine of --containers: unix:///path or tcp://host:port [default: the local
    /// socket].
    #[arg(long, env = "DOCKER_HOST")]
    pub(crate) docker_host: Option<String>,
    /// Engine network the job containers of --containers join, a name (`aiflow`, a Compose
    /// network where the servers answer by service name) [default: the host's network].
    #[arg(long, env = "AIFLOW_CONTAINER_NETWORK")]
    pub(crate) container_network: Option<String>,
    /// Also give jobs this variable of the worker's environment (a name, or a pattern with *,
    /// e.g. LC_*); repeat for more. Jobs otherwise get PATH, HOME, LANG, TZ, TMPDIR and USER.
    #[arg(
        long = "job-env-passthrough",
        env = "AIFLOW_JOB_ENV_PASSTHROUGH",
        value_delimiter = ','
    )]
    pub(crate) job_env_passthrough: Vec<String>,
    /// Log format: text, or one JSON object per line for a log collector.
    #[arg(long, env = "AIFLOW_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: crate::config::LogFormat,
}

fn machine_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Runs the worker until Ctrl-C or SIGTERM; running tasks are stopped and reported interrupted
/// (the scheduler retries them under their job's retry policy).
pub(crate) async fn run(
    args: WorkerArgs,
    server_url: String,
    ca_cert: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if !(args.nats.starts_with("nats://") || args.nats.starts_with("tls://")) {
        bail!("nats: {:?} is not a nats:// URL", args.nats);
    }
    if args.slots == 0 {
        bail!("slots: must be at least 1");
    }
    if let Some(n) = &args.container_network {
        if !args.containers {
            bail!("container-network: needs --containers");
        }
        if let Err(e) = aiflow_scheduler::exec::container::check_network(n) {
            bail!("container-network: {e}");
        }
    }
    if let Some(ca) = &ca_cert {
        aiflow_sdk::tls::read_certs(ca).context("ca-cert")?;
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("label: {l:?} is not KEY=VALUE");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let queues: Vec<String> = args
        .queues
        .iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        bail!("queue: at least one queue name is needed");
    }
    let client = async_nats::ConnectOptions::new()
        .name("aiflow-worker")
        .retry_on_initial_connect()
        .connect(&args.nats)
        .await
        .with_context(|| format!("NATS at {}", args.nats))?;
    let containers = if args.containers {
        let mut engine = aiflow_scheduler::exec::container::ContainerExecutor::connect(
            args.docker_host.as_deref(),
        )
        .await
        .context("containers")?;
        engine.grace = Duration::from_secs(args.stop_grace_s);
        engine.log_max_bytes = (args.job_log_max_bytes > 0).then_some(args.job_log_max_bytes);
        if let Some(n) = &args.container_network {
            engine
                .docker()
                .inspect_network(n, None)
                .await
                .with_context(|| format!("container-network: no network {n:?} on the engine"))?;
        }
        engine.network.clone_from(&args.container_network);
        Some(engine)
    } else {
        None
    };
    for p in &args.job_env_passthrough {
        if let Err(e) = aiflow_scheduler::jobenv::check_pattern(p) {
            bail!("{e}");
        }
    }
    crate::config::private_dir(&args.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data_dir.display()))?;
    let config = aiflow_scheduler::remote::WorkerConfig {
        name: args
            .name
            .unwrap_or_else(aiflow_scheduler::leader::node_name),
        queues,
        slots: args.slots,
        resources: aiflow_scheduler::remote::Resources {
            cpus: Some(args.cpus.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
            })),
            memory_mb: args.memory_mb.or_else(machine_memory_mb),
            gpus: Some(args.gpus),
        },
        labels,
        data_dir: args.data_dir,
        server_url,
        // An absolute path, as jobs run in folders of their own.
        ca_cert: ca_cert.map(|p| std::path::absolute(&p).unwrap_or(p)),
        aiflow_bin: std::env::current_exe().ok(),
        grace: Duration::from_secs(args.stop_grace_s),
        log_max_bytes: (args.job_log_max_bytes > 0).then_some(args.job_log_max_bytes),
        containers,
        job_env_passthrough: args.job_env_passthrough,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cluster = args.cluster.clone();
    let mut worker = tokio::spawn(async move {
        aiflow_scheduler::remote::run_worker(client, &cluster, config, rx).await
    });
    tokio::select! {
        () = crate::server::shutdown_signal() => {
            tracing::info!("stopping: running tasks are stopped and reported");
            let _ = tx.send(true);
            worker.await.context("worker task")?.map_err(anyhow::Error::msg)
        }
        r = &mut worker => r.context("worker task")?.map_err(anyhow::Error::msg),
    }
}
