//! The server's configuration: defaults, then `aiflow.toml`, then `AIFLOW_*` environment
//! variables, then flags (flags win). Validated once at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Encoding of exported spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub(crate) enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (what collectors listen for on port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    #[value(name = "http/json")]
    HttpJson,
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExecutorKind {
    /// Processes of the server itself.
    Local,
    /// `aiflow worker` agents, through the JetStream work queue (needs `nats`).
    Workers,
}

/// Everything `aiflow server` needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Address the HTTP API listens on.
    pub(crate) listen: String,
    /// Where the embedded shape keeps its SQLite file and job logs.
    pub(crate) data_dir: PathBuf,
    /// Folder of AI graph / workflow documents loaded at start (default `dags`, skipped when
    /// missing).
    pub(crate) dags: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://…`; default `sqlite:<data_dir>/aiflow.db`.
    pub(crate) database: Option<String>,
    /// `nats://…` switches events to NATS JetStream; default: the embedded bus.
    pub(crate) nats: Option<String>,
    /// JetStream stream holding the events.
    pub(crate) nats_stream: String,
    pub(crate) log_format: LogFormat,
    /// At most this many job processes at once (more wait, highest priority first).
    pub(crate) max_running: usize,
    /// OTLP/HTTP receiver for trace spans (`http://collector:4318`); none: spans are not
    /// exported.
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) otlp_protocol: OtlpProtocol,
    /// Where jobs run; default: `workers` when `nats` is set, else `local`.
    pub(crate) executor: Option<ExecutorKind>,
    /// Name of this deployment on NATS: prefix of the work queue's subjects, streams and
    /// buckets (`<cluster>.tasks.<queue>`, `<CLUSTER>_TASKS`), so several share one NATS.
    pub(crate) cluster: String,
    /// Require an API token (`Authorization: Bearer`) on the API (docs/security.md).
    pub(crate) auth: bool,
    /// Serve on a non-loopback address with authentication off.
    pub(crate) insecure: bool,
    /// Largest request body in bytes (413 above); the meta routes keep their own 4 MiB cap.
    pub(crate) max_body_bytes: usize,
    /// Largest artifact upload in bytes through `/api/2.0/mlflow-artifacts` (413 above).
    pub(crate) max_artifact_bytes: u64,
    /// OpenLineage backend (`http://marquez:5000/api/v1/lineage`) that gets a RunEvent for
    /// each start and end of the server's job attempts; none: nothing is sent.
    pub(crate) openlineage_url: Option<String>,
    /// The job namespace of those RunEvents.
    pub(crate) openlineage_namespace: String,
    /// Largest `limit` of a list (400 above; the default page size is 100 or this, if less).
    pub(crate) max_page_size: u32,
    /// With auth on: most `GET /events/stream` connections one token holds open (429 above;
    /// 0: no limit).
    pub(crate) max_streams_per_token: usize,
    /// With auth on: `POST /events` requests per second one token may make on average (429
    /// with `Retry-After` above; 0: no limit).
    pub(crate) publish_rate_per_token: f64,
    /// With auth on: how many `POST /events` requests one token may make at once before the
    /// rate applies.
    pub(crate) publish_burst_per_token: u32,
    /// Largest job log (one attempt) in bytes; past it the oldest half is dropped, with a
    /// marker line (0: no limit).
    pub(crate) job_log_max_bytes: u64,
    /// Lifetime of a job's token when the job has no timeout (seconds).
    pub(crate) job_token_ttl_s: u64,
    /// Stop running local jobs when the server stops (by default they keep running, each
    /// under a supervisor of its own, and the next server re-adopts them).
    pub(crate) stop_jobs_on_exit: bool,
    /// The Docker engine jobs with an `image` run on (`unix:///…` or `tcp://host:port`; none:
    /// `DOCKER_HOST`, else the local socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) docker_host: Option<String>,
    /// The engine network container jobs join (none: the host's network, so `127.0.0.1`
    /// reaches the server); a Compose network, say, where the servers answer by service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container_network: Option<String>,
    /// GPUs the server's own executor assigns to jobs (none: those `nvidia-smi -L` lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gpus: Option<u32>,
    /// Origins (`scheme://host[:port]`) besides the server's own whose browser requests are
    /// served (`*`: any); others get 403 (docs/security.md).
    pub(crate) allowed_origins: Vec<String>,
    /// With authentication off: `Host` names served besides the loopback ones (`name` or
    /// `name:port`; `*`: any); others get 403, against DNS rebinding.
    pub(crate) allowed_hosts: Vec<String>,
    /// PEM certificate chain (leaf first): with `tls_key`, the server speaks HTTPS only.
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub(crate) tls_key: Option<PathBuf>,
    /// The CA file of `--ca-cert`/`AIFLOW_CA_CERT`, given to local jobs as `AIFLOW_CA_CERT`.
    #[serde(skip)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Variables of the server's environment that local jobs get besides the base (`PATH`,
    /// `HOME`, `LANG`, `TZ`, `TMPDIR`, `USER`): names, or patterns with `*` (`LC_*`). The
    /// server's own `AIFLOW_*` variables never reach a job (docs/security.md).
    pub(crate) job_env_passthrough: Vec<String>,
    /// Largest body of `POST /events` in bytes (413 above), below `max_body_bytes`.
    pub(crate) max_event_body_bytes: usize,
    /// Event streams and log follows open at once on the whole server, also with
    /// authentication off (429 above; 0: no limit).
    pub(crate) max_streams: usize,
    /// Seconds a connection may take to send a request's header, pause inside a request body,
    /// or stay idle between requests, before the server closes it.
    pub(crate) header_timeout_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".aiflow"),
            dags: Some(PathBuf::from("dags")),
            database: None,
            nats: None,
            nats_stream: "AIFLOW_EVENTS".into(),
            log_format: LogFormat::Text,
            max_running: aiflow_scheduler::service::DEFAULT_MAX_RUNNING,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            executor: None,
            cluster: aiflow_scheduler::remote::DEFAULT_CLUSTER.into(),
            auth: false,
            insecure: false,
            max_body_bytes: 64 * 1024 * 1024,
            max_artifact_bytes: 1024 * 1024 * 1024,
            openlineage_url: None,
            openlineage_namespace: "aiflow".into(),
            max_page_size: aiflow_api::page::MAX_LIMIT,
            max_streams_per_token: 16,
            publish_rate_per_token: 100.0,
            publish_burst_per_token: 200,
            job_log_max_bytes: aiflow_scheduler::executor::DEFAULT_LOG_MAX_BYTES,
            job_token_ttl_s: aiflow_scheduler::service::DEFAULT_JOB_TOKEN_TTL.as_secs(),
            stop_jobs_on_exit: false,
            docker_host: None,
            container_network: None,
            gpus: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            tls_cert: None,
            tls_key: None,
            ca_cert: None,
            job_env_passthrough: Vec::new(),
            max_event_body_bytes: 4 * 1024 * 1024,
            max_streams: 256,
            header_timeout_s: 30,
        }
    }
}

/// Values given on the command line or in `AIFLOW_*` variables (clap reads both; flags win).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServerArgs {
    /// Configuration file (default: ./aiflow.toml when present).
    #[arg(long, env = "AIFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "AIFLOW_LISTEN")]
    pub(crate) listen: Option<String>,
    /// Data folder of the embedded shape [default: ./.aiflow].
    #[arg(long, env = "AIFLOW_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Folder of AI graph and workflow documents to load.
    #[arg(long, env = "AIFLOW_DAGS")]
    pub(crate) dags: Option<PathBuf>,
    /// Database URL: sqlite:PATH or postgres://… [default: sqlite in the data folder].
    #[arg(long, env = "AIFLOW_DATABASE")]
    pub(crate) database: Option<String>,
    /// NATS URL (nats://…): events through JetStream instead of the embedded bus.
    #[arg(long, env = "AIFLOW_NATS")]
    pub(crate) nats: Option<String>,
    /// JetStream stream name for events [default: AIFLOW_EVENTS].
    #[arg(long, env = "AIFLOW_NATS_STREAM")]
    pub(crate) nats_stream: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "AIFLOW_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// At most this many job processes at once [default: 32].
    #[arg(long, env = "AIFLOW_MAX_RUNNING")]
    pub(crate) max_running: Option<usize>,
    /// Export trace spans to this OTLP/HTTP receiver, e.g. http://127.0.0.1:4318.
    #[arg(long, env = "AIFLOW_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
    /// Encoding of exported spans [default: http/protobuf].
    #[arg(long, env = "AIFLOW_OTLP_PROTOCOL", value_enum)]
    pub(crate) otlp_protocol: Option<OtlpProtocol>,
    /// Where jobs run: local processes, or `aiflow worker` agents over NATS [default: workers
    /// with --nats, else local].
    #[arg(long, env = "AIFLOW_EXECUTOR", value_enum)]
    pub(crate) executor: Option<ExecutorKind>,
    /// Name of this deployment on NATS (prefix of the work queue's subjects and streams)
    /// [default: aiflow].
    #[arg(long, env = "AIFLOW_CLUSTER")]
    pub(crate) cluster: Option<String>,
    /// Require API tokens (Authorization: Bearer) on the API; see `aiflow token create`.
    #[arg(long, env = "AIFLOW_AUTH")]
    pub(crate) auth: bool,
    /// Allow listening on a non-loopback address with authentication off.
    #[arg(long, env = "AIFLOW_INSECURE")]
    pub(crate) insecure: bool,
    /// Largest request body in bytes [default: 67108864].
    #[arg(long, env = "AIFLOW_MAX_BODY_BYTES")]
    pub(crate) max_body_bytes: Option<usize>,
    /// Largest artifact upload in bytes (MLflow artifacts) [default: 1073741824].
    #[arg(long, env = "AIFLOW_MAX_ARTIFACT_BYTES")]
    pub(crate) max_artifact_bytes: Option<u64>,
    /// Send OpenLineage RunEvents of the server's job attempts to this endpoint
    /// (e.g. http://marquez:5000/api/v1/lineage), from an outbox with retries.
    #[arg(long, env = "AIFLOW_OPENLINEAGE_URL", value_name = "URL")]
    pub(crate) openlineage_url: Option<String>,
    /// The job namespace of those RunEvents [default: aiflow].
    #[arg(long, env = "AIFLOW_OPENLINEAGE_NAMESPACE")]
    pub(crate) openlineage_namespace: Option<String>,
    /// Largest `limit` of a list request, 1..=1000 [default: 1000].
    #[arg(long, env = "AIFLOW_MAX_PAGE_SIZE")]
    pub(crate) max_page_size: Option<u32>,
    /// With --auth: most event streams one token holds open, 0 for no limit [default: 16].
    #[arg(long, env = "AIFLOW_MAX_STREAMS_PER_TOKEN")]
    pub(crate) max_streams_per_token: Option<usize>,
    /// With --auth: POST /events requests per second per token, 0 for no limit [default: 100].
    #[arg(long, env = "AIFLOW_PUBLISH_RATE_PER_TOKEN")]
    pub(crate) publish_rate_per_token: Option<f64>,
    /// With --auth: burst of POST /events requests per token [default: 200].
    #[arg(long, env = "AIFLOW_PUBLISH_BURST_PER_TOKEN")]
    pub(crate) publish_burst_per_token: Option<u32>,
    /// Largest job log in bytes (older output dropped past it), 0 for no limit [default: 67108864].
    #[arg(long, env = "AIFLOW_JOB_LOG_MAX_BYTES")]
    pub(crate) job_log_max_bytes: Option<u64>,
    /// Lifetime in seconds of a job's token when the job has no timeout [default: 86400].
    #[arg(long, env = "AIFLOW_JOB_TOKEN_TTL_S")]
    pub(crate) job_token_ttl_s: Option<u64>,
    /// Also serve browser requests from this origin (scheme://host[:port], or * for any);
    /// repeat for more. Added to the config file's `allowed_origins`.
    #[arg(
        long = "allowed-origin",
        env = "AIFLOW_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allowed_origins: Vec<String>,
    /// With auth off: also serve requests sent to this Host name (name or name:port, or * for
    /// any); repeat for more. Added to the config file's `allowed_hosts`.
    #[arg(
        long = "allowed-host",
        env = "AIFLOW_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub(crate) allowed_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "AIFLOW_TLS_CERT", value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AIFLOW_TLS_KEY", value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Also give local jobs this variable of the server's environment (a name, or a pattern
    /// with *, e.g. LC_*); repeat for more. Added to the config file's `job_env_passthrough`.
    #[arg(
        long = "job-env-passthrough",
        env = "AIFLOW_JOB_ENV_PASSTHROUGH",
        value_delimiter = ','
    )]
    pub(crate) job_env_passthrough: Vec<String>,
    /// Largest POST /events body in bytes [default: 4194304].
    #[arg(long, env = "AIFLOW_MAX_EVENT_BODY_BYTES")]
    pub(crate) max_event_body_bytes: Option<usize>,
    /// Event streams and log follows open at once, also with auth off, 0 for no limit
    /// [default: 256].
    #[arg(long, env = "AIFLOW_MAX_STREAMS")]
    pub(crate) max_streams: Option<usize>,
    /// Seconds a client may take to send a request header, pause inside a request body, or
    /// stay idle between requests, before its connection is closed [default: 30].
    #[arg(long, env = "AIFLOW_HEADER_TIMEOUT_S")]
    pub(crate) header_timeout_s: Option<u64>,
    /// Stop running local jobs when the server stops (default: they keep running and the next
    /// server re-adopts them).
    #[arg(long, env = "AIFLOW_STOP_JOBS_ON_EXIT")]
    pub(crate) stop_jobs_on_exit: bool,
    /// Docker engine for jobs with an image: unix:///path or tcp://host:port [default: the
    /// local socket].
    #[arg(long, env = "DOCKER_HOST")]
    pub(crate) docker_host: Option<String>,
    /// Engine network the containers of jobs with an image join, a name (`aiflow`, a Compose
    /// network) [default: the host's network].
    #[arg(long, env = "AIFLOW_CONTAINER_NETWORK")]
    pub(crate) container_network: Option<String>,
    /// GPUs this server's executor assigns to jobs [default: those `nvidia-smi -L` lists].
    #[arg(long, env = "AIFLOW_GPUS")]
    pub(crate) gpus: Option<u32>,
    /// Print the merged configuration and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

impl Config {
    /// Merges defaults, the config file, and the command line / environment, then validates.
    pub(crate) fn load(args: &ServerArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None if Path::new("aiflow.toml").exists() => Self::from_file(Path::new("aiflow.toml"))?,
            None => Self::default(),
        };
        if let Some(v) = &args.listen {
            config.listen.clone_from(v);
        }
        if let Some(v) = &args.data_dir {
            config.data_dir.clone_from(v);
        }
        if args.dags.is_some() {
            config.dags.clone_from(&args.dags);
        }
        if args.database.is_some() {
            config.database.clone_from(&args.database);
        }
        if args.nats.is_some() {
            config.nats.clone_from(&args.nats);
        }
        if let Some(v) = &args.nats_stream {
            config.nats_stream.clone_from(v);
        }
        if let Some(v) = args.max_running {
            config.max_running = v;
        }
        if let Some(v) = args.log_format {
            config.log_format = v;
        }
        if args.otlp_endpoint.is_some() {
            config.otlp_endpoint.clone_from(&args.otlp_endpoint);
        }
        if let Some(v) = args.otlp_protocol {
            config.otlp_protocol = v;
        }
        if args.executor.is_some() {
            config.executor = args.executor;
        }
        if let Some(v) = &args.cluster {
            config.cluster.clone_from(v);
        }
        config.auth |= args.auth;
        config.stop_jobs_on_exit |= args.stop_jobs_on_exit;
        if args.docker_host.is_some() {
            config.docker_host.clone_from(&args.docker_host);
        }
        if args.container_network.is_some() {
            config.container_network.clone_from(&args.container_network);
        }
        if args.gpus.is_some() {
            config.gpus = args.gpus;
        }
        config.insecure |= args.insecure;
        if let Some(v) = args.max_body_bytes {
            config.max_body_bytes = v;
        }
        if let Some(v) = args.max_artifact_bytes {
            config.max_artifact_bytes = v;
        }
        if let Some(v) = &args.openlineage_url {
            config.openlineage_url = Some(v.clone());
        }
        if let Some(v) = &args.openlineage_namespace {
            config.openlineage_namespace = v.clone();
        }
        if let Some(v) = args.max_page_size {
            config.max_page_size = v;
        }
        if let Some(v) = args.max_streams_per_token {
            config.max_streams_per_token = v;
        }
        if let Some(v) = args.publish_rate_per_token {
            config.publish_rate_per_token = v;
        }
        if let Some(v) = args.publish_burst_per_token {
            config.publish_burst_per_token = v;
        }
        if let Some(v) = args.job_log_max_bytes {
            config.job_log_max_bytes = v;
        }
        if let Some(v) = args.job_token_ttl_s {
            config.job_token_ttl_s = v;
        }
        if args.tls_cert.is_some() {
            config.tls_cert.clone_from(&args.tls_cert);
        }
        if args.tls_key.is_some() {
            config.tls_key.clone_from(&args.tls_key);
        }
        for o in &args.allowed_origins {
            if !config.allowed_origins.contains(o) {
                config.allowed_origins.push(o.clone());
            }
        }
        for h in &args.allowed_hosts {
            if !config.allowed_hosts.contains(h) {
                config.allowed_hosts.push(h.clone());
            }
        }
        if let Some(v) = args.max_event_body_bytes {
            config.max_event_body_bytes = v;
        }
        if let Some(v) = args.max_streams {
            config.max_streams = v;
        }
        if let Some(v) = args.header_timeout_s {
            config.header_timeout_s = v;
        }
        for p in &args.job_env_passthrough {
            if !config.job_env_passthrough.contains(p) {
                config.job_env_passthrough.push(p.clone());
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                bail!("tls_key: needed with tls_cert (the certificate's private key)")
            }
            (None, Some(_)) => {
                bail!("tls_cert: needed with tls_key (the certificate chain to serve)")
            }
            _ => {}
        }
        if let Some(db) = &self.database
            && aiflow_db::Backend::of_url(db).is_err()
        {
            bail!("database: {db:?} is not sqlite:PATH or postgres://…");
        }
        if let Some(n) = &self.nats
            && !(n.starts_with("nats://") || n.starts_with("tls://"))
        {
            bail!("nats: {n:?} is not a nats:// URL");
        }
        if let Some(h) = &self.docker_host
            && !["unix://", "tcp://", "http://"]
                .iter()
                .any(|p| h.starts_with(p))
        {
            bail!("docker_host: {h:?} is not a unix://, tcp:// or http:// address");
        }
        if let Some(n) = &self.container_network
            && let Err(e) = aiflow_scheduler::exec::container::check_network(n)
        {
            bail!("container_network: {e}");
        }
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            bail!("otlp_endpoint: {e:?} is not an http:// or https:// URL");
        }
        if self.executor == Some(ExecutorKind::Workers) && self.nats.is_none() {
            bail!("executor: workers need nats (the work queue is a JetStream stream)");
        }
        if self.cluster.is_empty()
            || !self
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "cluster: {:?} must be letters, digits, '_' or '-'",
                self.cluster
            );
        }
        if self.max_running == 0 {
            bail!("max_running: must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes: must be at least 1024");
        }
        if self.max_event_body_bytes < 1024 {
            bail!("max_event_body_bytes: must be at least 1024");
        }
        if !(1..=3600).contains(&self.header_timeout_s) {
            bail!("header_timeout_s: must be between 1 and 3600");
        }
        if let Some(url) = &self.openlineage_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("openlineage_url: {url:?} is not an http:// or https:// URL");
        }
        if self.openlineage_namespace.trim().is_empty() {
            bail!("openlineage_namespace: must not be empty");
        }
        if self.max_artifact_bytes == 0 {
            bail!("max_artifact_bytes: must be at least 1");
        }
        if !(1..=aiflow_api::page::MAX_LIMIT).contains(&self.max_page_size) {
            bail!(
                "max_page_size: must be between 1 and {}",
                aiflow_api::page::MAX_LIMIT
            );
        }
        if !(self.publish_rate_per_token.is_finite() && self.publish_rate_per_token >= 0.0) {
            bail!("publish_rate_per_token: must be a number of requests per second, 0 or more");
        }
        if self.publish_burst_per_token == 0 {
            bail!("publish_burst_per_token: must be at least 1");
        }
        if self.job_log_max_bytes != 0 && self.job_log_max_bytes < 1024 {
            bail!("job_log_max_bytes: must be 0 (no limit) or at least 1024");
        }
        if self.job_token_ttl_s < 60 {
            bail!("job_token_ttl_s: must be at least 60");
        }
        for o in &self.allowed_origins {
            let o = o.trim();
            let ok = o == "*"
                || o.split_once("://").is_some_and(|(scheme, rest)| {
                    !scheme.is_empty()
                        && !rest.trim_end_matches('/').is_empty()
                        && !rest.trim_end_matches('/').contains('/')
                });
            if !ok {
                bail!(
                    "allowed_origins: {o:?} is not an origin such as https://example.org:8443 (or *)"
                );
            }
        }
        for h in &self.allowed_hosts {
            let h = h.trim();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                bail!("allowed_hosts: {h:?} is not a host name such as aiflow.internal (or *)");
            }
        }
        for p in &self.job_env_passthrough {
            aiflow_scheduler::jobenv::check_pattern(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if self.nats_stream.is_empty()
            || !self
                .nats_stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "nats_stream: {:?} must be letters, digits, '_' or '-'",
                self.nats_stream
            );
        }
        Ok(())
    }

    /// Whether jobs go to remote workers.
    pub(crate) fn remote_executor(&self) -> bool {
        match self.executor {
            Some(k) => k == ExecutorKind::Workers,
            None => self.nats.is_some(),
        }
    }

    pub(crate) fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!(
                "listen: {:?} is not an address such as 127.0.0.1:8080",
                self.listen
            )
        })
    }

    /// Refuses to serve without authentication on an address other machines reach, unless
    /// `insecure` says so.
    pub(crate) fn check_exposure(&self) -> anyhow::Result<()> {
        let addr = self.listen_addr()?;
        if !self.auth && !self.insecure && !addr.ip().is_loopback() {
            bail!(
                "refusing to listen on {addr} without authentication: pass --auth (and create a token with `aiflow token create --role admin --data-dir D`), listen on 127.0.0.1, or pass --insecure"
            );
        }
        Ok(())
    }

    /// The certificate and key to serve HTTPS with, if any.
    pub(crate) fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// The database URL in use.
    pub(crate) fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("aiflow.db").display()))
    }

    pub(crate) fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Creates `dir` (and missing parents) readable by its owner only (0700): it holds the
/// database, the job logs and the jobs' token key. A folder that exists keeps its mode; one
/// that others may read is warned about.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.is_dir() && meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the data folder may be read by other users (it holds the database and job logs); consider chmod 700"
                );
            }
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aiflow.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file),
            listen: Some("127.0.0.1:9100".into()),
            ..ServerArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.database_url(), "sqlite:/tmp/x/aiflow.db");
    }

    #[test]
    fn bad_values_name_the_key() {
        let args = ServerArgs {
            listen: Some("nowhere".into()),
            ..ServerArgs::default()
        };
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.starts_with("listen:"), "{e}");
        let args = ServerArgs {
            database: Some("mysql://x".into()),
            ..ServerArgs::default()
        };
        assert!(
            Config::load(&args)
                .unwrap_err()
                .to_string()
                .starts_with("database:")
        );
        let args = ServerArgs {
            container_network: Some("a b".into()),
            ..ServerArgs::default()
        };
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.starts_with("container_network:"), "{e}");
        let args = ServerArgs {
            container_network: Some("aiflow".into()),
            ..ServerArgs::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.container_network.as_deref(), Some("aiflow"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aiflow.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let args = ServerArgs {
            config: Some(file),
            ..ServerArgs::default()
        };
        let e = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(e.contains("lisen"), "{e}");
    }
}
