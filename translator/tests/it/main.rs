//! Integration tests of the translator (one test binary).

mod cases;
mod cron_table;
mod fuzz;
mod props;
mod schemas;

use aiflow_translator::{AiGraph, Document};

/// Parses a JSON graph document written in a test.
pub(crate) fn graph(json: serde_json::Value) -> AiGraph {
    match Document::from_value(json).expect("parses") {
        Document::Graph(g) => g,
        Document::Workflow(_) => panic!("expected a graph"),
    }
}
