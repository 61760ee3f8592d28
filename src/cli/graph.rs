//! `aiflow graph validate | translate | render`: offline work on AI graph documents.

use std::path::{Path, PathBuf};

use aiflow_translator::{Document, ValidationErrors, render};
use clap::{Subcommand, ValueEnum};

use super::{CliError, CliResult, Ctx, Output};

#[derive(Debug, Subcommand)]
pub(crate) enum GraphCmd {
    /// Check an AI graph (or workflow) document and list every problem found.
    #[command(after_help = "Example:\n  aiflow graph validate dags/online_learning.json")]
    Validate {
        /// The document (JSON); `-` reads standard input.
        file: PathBuf,
    },
    /// Print the workflow an AI graph becomes.
    #[command(
        after_help = "Example:\n  aiflow graph translate dags/online_learning.json -o online_learning.workflow.json"
    )]
    Translate {
        file: PathBuf,
        /// Write the workflow here instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Draw an AI graph as Graphviz DOT or as SVG (drawn here, no external program).
    #[command(
        after_help = "Example:\n  aiflow graph render dags/online_learning.json --format svg > graph.svg"
    )]
    Render {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "svg")]
        format: RenderFormat,
        /// Write the drawing here instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RenderFormat {
    Dot,
    Svg,
}

pub(crate) fn run(cmd: GraphCmd, ctx: &Ctx) -> CliResult {
    match cmd {
        GraphCmd::Validate { file } => {
            let doc = read_document(&file)?;
            let name = doc.name().to_string();
            let workflow = doc.into_workflow().map_err(|e| invalid(&file, e))?;
            let summary = serde_json::json!({"valid": true, "name": name, "jobs": workflow.jobs.len(), "rules": workflow.rules.len(), "triggers": workflow.triggers.len()});
            match ctx.output {
                Output::Json => crate::cli::outln!("{summary}"),
                Output::Yaml => crate::cli::out!("{}", crate::cli::yaml::to_string(&summary)),
                Output::Table => crate::cli::outln!(
                    "{}: valid ({} jobs, {} rules, {} triggers)",
                    file.display(),
                    workflow.jobs.len(),
                    workflow.rules.len(),
                    workflow.triggers.len()
                ),
            }
            Ok(())
        }
        GraphCmd::Translate { file, out } => {
            let workflow = read_document(&file)?
                .into_workflow()
                .map_err(|e| invalid(&file, e))?;
            write_out(out.as_deref(), &workflow.to_json_pretty())
        }
        GraphCmd::Render { file, format, out } => {
            let doc = read_document(&file)?;
            let Document::Graph(graph) = doc else {
                return Err(CliError::Failed(
                    format!(
                        "{}: render draws AI graphs; this is a workflow document",
                        file.display()
                    ),
                    Vec::new(),
                ));
            };
            let workflow = aiflow_translator::translate(&graph).map_err(|e| invalid(&file, e))?;
            let text = match format {
                RenderFormat::Dot => render::dot(&graph, &workflow),
                RenderFormat::Svg => render::svg(&graph, &workflow),
            };
            write_out(out.as_deref(), &text)
        }
    }
}

fn read_document(file: &Path) -> Result<Document, CliError> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display()), Vec::new()))?;
    Document::parse(&text).map_err(|e| invalid(file, e))
}

fn invalid(file: &Path, e: ValidationErrors) -> CliError {
    let n = e.problems.len();
    CliError::Failed(
        format!(
            "{} is invalid: {n} problem{}",
            file.display(),
            if n == 1 { "" } else { "s" }
        ),
        e.problems.iter().map(ToString::to_string).collect(),
    )
}

fn write_out(path: Option<&Path>, text: &str) -> CliResult {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| {
            CliError::Failed(format!("cannot write {}: {e}", p.display()), Vec::new())
        }),
        None => {
            crate::cli::out!("{text}");
            Ok(())
        }
    }
}
