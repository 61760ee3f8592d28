//! `aiflow`: the AI Flow command line and server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod auth;
mod cli;
mod config;
mod demo;
mod metrics;
mod openlineage;
mod serve;
mod server;
mod telemetry;
mod tls;
mod worker;

use cli::{Ctx, Output};

/// mimalloc instead of the system allocator: the server allocates many small, short-lived
/// buffers per request (request and answer bodies, events), where glibc's malloc showed up at
/// about a tenth of the CPU time of `POST /api/v1/events` (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// AI Flow: an event-driven workflow scheduler for machine-learning pipelines.
#[derive(Debug, Parser)]
#[command(name = "aiflow", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Server to talk to.
    #[arg(long, global = true, env = "AIFLOW_URL", default_value = aiflow_sdk::client::DEFAULT_URL)]
    server: String,
    /// API token (sent as `Authorization: Bearer`).
    #[arg(long, global = true, env = "AIFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of CA certificates to trust for an https:// server, besides the system's.
    #[arg(long, global = true, env = "AIFLOW_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Output format: table, json or yaml (default: table on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    output: Option<Output>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  aiflow graph validate dags/online_learning.json
  aiflow graph translate dags/online_learning.json -o workflow.json
  aiflow graph render dags/online_learning.json --format svg > graph.svg";

// Parsed once per process: the size of the server's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the example online-learning pipeline live on an embedded server, then summarise.
    #[command(
        after_help = "Examples:\n  aiflow demo\n  aiflow demo --keep-running   # then open http://127.0.0.1:8080/docs"
    )]
    Demo(demo::DemoArgs),
    /// Run everything in one process: event bus, meta service, scheduler, HTTP API.
    #[command(
        after_help = "Examples:\n  aiflow server\n  aiflow server --listen 0.0.0.0:8080 --data-dir /var/lib/aiflow --auth\n  aiflow server --database postgres://127.0.0.1/aiflow --nats nats://127.0.0.1:4222\n  aiflow server --print-config"
    )]
    Server(Box<config::ServerArgs>),
    /// Run a remote worker: take tasks from the JetStream work queue, run them, report back.
    #[command(
        after_help = "Examples:\n  aiflow worker --nats nats://127.0.0.1:4222\n  aiflow worker --nats nats://nats.example:4222 --queue gpu --slots 2 --gpus 2 --label site=a\n  aiflow worker --nats nats://127.0.0.1:4222 --queue site-a --server http://aiflow.example:8080"
    )]
    Worker(worker::WorkerArgs),
    /// Submit, list, pause, resume and delete workflows.
    #[command(subcommand)]
    Workflow(cli::workflow::WorkflowCmd),
    /// Start, list, show and stop executions; job logs and `why`.
    #[command(subcommand)]
    Execution(cli::workflow::ExecutionCmd),
    /// Server health, the backends in use, what is running, the scheduler's lag, rates and
    /// the slowest queues.
    Status(cli::status::StatusArgs),
    /// Check, translate and draw AI graphs (offline).
    #[command(subcommand)]
    Graph(cli::graph::GraphCmd),
    /// Send, list and watch events.
    #[command(subcommand)]
    Event(cli::event::EventCmd),
    /// Projects in the meta service.
    #[command(subcommand)]
    Project(cli::meta::ProjectCmd),
    /// Datasets and their versions.
    #[command(subcommand)]
    Dataset(cli::meta::DatasetCmd),
    /// Models, versions (create, list, promote) and aliases.
    #[command(subcommand)]
    Model(cli::meta::ModelCmd),
    /// Metrics and their points (log, list).
    #[command(subcommand)]
    Metric(cli::meta::MetricCmd),
    /// Artifacts (files with a uri, kind, sha256 and size).
    #[command(subcommand)]
    Artifact(cli::meta::ArtifactCmd),
    /// API tokens: create, list, revoke (docs/security.md).
    #[command(subcommand)]
    Token(cli::token::TokenCmd),
    /// Run one job attempt from its folder, detached from the server (started by the server).
    #[command(hide = true)]
    Supervise { dir: std::path::PathBuf },
    /// Print a shell completion script for bash, zsh or fish.
    #[command(
        after_help = "Examples:\n  aiflow completion bash > ~/.local/share/bash-completion/completions/aiflow\n  aiflow completion zsh > \"${fpath[1]}/_aiflow\"\n  aiflow completion fish > ~/.config/fish/completions/aiflow.fish\n  source <(aiflow completion bash)   # this shell only"
    )]
    Completion(CompletionArgs),
}

#[derive(Debug, clap::Args)]
struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script of the whole command tree to stdout.
fn print_completion(args: &CompletionArgs) -> cli::CliResult {
    use clap::CommandFactory;
    let shell = match args.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "aiflow", &mut script);
    let mut out = std::io::stdout().lock();
    match std::io::Write::write_all(&mut out, &script)
        .and_then(|()| std::io::Write::flush(&mut out))
    {
        // `aiflow completion bash | head` is fine.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(cli::CliError::from(anyhow::Error::from(e)))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    // Every HTTPS client of the process (SDK, span exporter) uses rustls with ring.
    aiflow_sdk::tls::install_default_provider();
    let cli = {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = cli::examples::add(Cli::command()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    let ctx = Ctx::new(cli.server, cli.token, cli.output, cli.ca_cert);
    let result = match cli.command {
        Command::Server(args) => run_server(&args, ctx.ca_cert.clone()),
        Command::Demo(args) => run_demo(args),
        Command::Worker(args) => run_worker(args, ctx.server.clone(), ctx.ca_cert.clone()),
        Command::Graph(cmd) => cli::graph::run(cmd, &ctx),
        Command::Status(args) => cli::status::run(&args, &ctx),
        Command::Workflow(cmd) => cli::workflow::run_workflow(cmd, &ctx),
        Command::Execution(cmd) => cli::workflow::run_execution(cmd, &ctx),
        Command::Event(cmd) => cli::event::run(cmd, &ctx),
        Command::Project(cmd) => cli::meta::run_project(cmd, &ctx),
        Command::Dataset(cmd) => cli::meta::run_dataset(cmd, &ctx),
        Command::Model(cmd) => cli::meta::run_model(cmd, &ctx),
        Command::Metric(cmd) => cli::meta::run_metric(cmd, &ctx),
        Command::Artifact(cmd) => cli::meta::run_artifact(cmd, &ctx),
        Command::Token(cmd) => cli::token::run(cmd, &ctx),
        Command::Supervise { dir } => run_supervisor(&dir),
        Command::Completion(args) => print_completion(&args),
    };
    cli::finish(result)
}

/// `aiflow supervise DIR`: a job attempt's supervisor (scheduler/src/exec/supervisor.rs). It has no
/// terminal and nobody reads its stderr: what goes wrong is in the job's log or its status.
fn run_supervisor(dir: &std::path::Path) -> cli::CliResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cli::CliError::from(anyhow::Error::from(e)))?;
    rt.block_on(aiflow_scheduler::supervisor::supervise(dir))
        .map_err(|e| cli::CliError::from(anyhow::anyhow!("supervise {}: {e}", dir.display())))?;
    Ok(())
}

fn run_demo(args: demo::DemoArgs) -> cli::CliResult {
    let _telemetry =
        telemetry::init(config::LogFormat::Text, "warn", None).map_err(cli::CliError::from)?;
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| cli::CliError::from(anyhow::Error::from(e)))?;
    rt.block_on(demo::run(args))?;
    Ok(())
}

fn run_worker(
    args: worker::WorkerArgs,
    server: String,
    ca_cert: Option<std::path::PathBuf>,
) -> cli::CliResult {
    let telemetry = telemetry::init(args.log_format, "info", None).map_err(cli::CliError::from)?;
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| cli::CliError::from(anyhow::Error::from(e)))?;
    let result = rt.block_on(worker::run(args, server, ca_cert));
    drop(rt);
    telemetry.shutdown();
    result.map_err(cli::CliError::from)?;
    Ok(())
}

fn run_server(args: &config::ServerArgs, ca_cert: Option<std::path::PathBuf>) -> cli::CliResult {
    let mut config = config::Config::load(args).map_err(cli::CliError::from)?;
    if let Some(ca) = ca_cert {
        aiflow_sdk::tls::read_certs(&ca)
            .map_err(|e| cli::CliError::from(anyhow::anyhow!("ca-cert: {e}")))?;
        // An absolute path, as jobs run in folders of their own.
        config.ca_cert = Some(std::path::absolute(&ca).unwrap_or(ca));
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let telemetry = telemetry::init(
        config.log_format,
        "info",
        telemetry::Otlp::of(&config).as_ref(),
    )
    .map_err(cli::CliError::from)?;
    let rt =
        tokio::runtime::Runtime::new().map_err(|e| cli::CliError::from(anyhow::Error::from(e)))?;
    let result = rt.block_on(server::run(config));
    drop(rt);
    telemetry.shutdown();
    result?;
    Ok(())
}

/// `docs/cli.md`, the CLI reference, is generated from these definitions: this test writes it
/// and fails when the checked-in file was stale.
#[cfg(test)]
mod cli_reference {
    use clap::CommandFactory;

    /// Every command's long help, environment values hidden so the text does not depend on
    /// the machine that writes it.
    fn prepare(cmd: clap::Command) -> clap::Command {
        cmd.term_width(100)
            .mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(prepare)
    }

    fn render(cmd: &mut clap::Command, path: &str, out: &mut String) {
        use std::fmt::Write;
        let level = "#".repeat(path.split(' ').count().min(4) + 1);
        let _ = write!(
            out,
            "{level} `{path}`\n\n```text\n{}\n```\n\n",
            cmd.render_long_help().to_string().trim_end()
        );
        for sub in cmd.get_subcommands_mut() {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue;
            }
            render(sub, &format!("{path} {name}"), out);
        }
    }

    /// Every command's help ends with an example; every example names a command.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>, all: &mut Vec<String>) {
            all.push(path.to_string());
            if cmd.get_after_help().is_none() && cmd.get_after_long_help().is_none() {
                missing.push(path.to_string());
            }
            for sub in cmd.get_subcommands() {
                let p = if path.is_empty() {
                    sub.get_name().to_string()
                } else {
                    format!("{path} {}", sub.get_name())
                };
                walk(sub, &p, missing, all);
            }
        }
        let mut root = crate::cli::examples::add(super::Cli::command());
        root.build();
        let (mut missing, mut all) = (Vec::new(), Vec::new());
        walk(&root, "", &mut missing, &mut all);
        // clap's own `help` subcommands.
        missing.retain(|p| !p.split(' ').any(|w| w == "help"));
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
        for p in crate::cli::examples::paths() {
            assert!(all.iter().any(|a| a == p), "example for no command: {p}");
        }
    }

    #[test]
    fn docs_cli_md_is_current() {
        let mut root = prepare(crate::cli::examples::add(super::Cli::command()));
        root.build();
        let mut text = String::from(
            "# CLI reference\n\n<!-- Generated from the clap definitions by `cargo test -p aiflow \
             cli_reference`; edit the code, not this file. -->\n\nEvery command takes `--server URL` \
             (env `AIFLOW_URL`), `--token TOKEN` (env `AIFLOW_TOKEN`), `--ca-cert FILE` (env `AIFLOW_CA_CERT`) and \
             `--output table|json|yaml`. Errors exit 1 with one line on stderr (bad usage: 2; \
             `execution start --wait`: 3 when the execution failed or stopped, 4 when it was still \
             running). Shell completion: `aiflow completion bash|zsh|fish` \
             prints a script (examples under `aiflow completion`).\n\n",
        );
        render(&mut root, "aiflow", &mut text);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current != text {
            std::fs::write(path, &text).expect("write docs/cli.md");
            panic!("docs/cli.md was stale and has been regenerated; review and commit it");
        }
    }
}
