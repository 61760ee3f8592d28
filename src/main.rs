//! `aiflow`: the AI Flow command line and server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::{Ctx, Output};

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
    /// Output format (default: table on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    output: Option<Output>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  aiflow graph validate dags/online_learning.json
  aiflow graph translate dags/online_learning.json -o workflow.json
  aiflow graph render dags/online_learning.json --format svg > graph.svg";

#[derive(Debug, Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx::new(cli.server, cli.token, cli.output);
    let result = match cli.command {
        Command::Graph(cmd) => cli::graph::run(cmd, &ctx),
        Command::Event(cmd) => cli::event::run(cmd, &ctx),
        Command::Project(cmd) => cli::meta::run_project(cmd, &ctx),
        Command::Dataset(cmd) => cli::meta::run_dataset(cmd, &ctx),
        Command::Model(cmd) => cli::meta::run_model(cmd, &ctx),
        Command::Metric(cmd) => cli::meta::run_metric(cmd, &ctx),
        Command::Artifact(cmd) => cli::meta::run_artifact(cmd, &ctx),
    };
    cli::finish(result)
}
