//! Reading documents: an AI graph or a workflow, told apart by `"kind": "workflow"`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::check::{check_event_condition, check_key, check_name, check_workflow_trigger};
use crate::graph::AiGraph;
use crate::problem::{Problems, ValidationErrors};
use crate::translate::{check_action_life, check_status, translate};
use crate::workflow::{RuleCondition, SCHEMA_VERSION, Workflow};

/// A document as submitted: either form.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Graph(AiGraph),
    Workflow(Workflow),
}

impl Document {
    /// Parses JSON text; syntax and type errors name their place (`nodes[2].job.timeout_s`).
    pub fn parse(text: &str) -> Result<Self, ValidationErrors> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            ValidationErrors::one(
                format!("line {} column {}", e.line(), e.column()),
                format!("not valid JSON: {e}"),
            )
        })?;
        Self::from_value(value)
    }

    /// Reads an already-parsed JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ValidationErrors> {
        let is_workflow = value.get("kind").and_then(|k| k.as_str()) == Some("workflow");
        if !value.is_object() {
            return Err(ValidationErrors::one(
                "",
                "the document must be a JSON object",
            ));
        }
        if is_workflow {
            from_value(value).map(Document::Workflow)
        } else {
            from_value(value).map(Document::Graph)
        }
    }

    /// The workflow this document becomes, after checking it.
    pub fn into_workflow(self) -> Result<Workflow, ValidationErrors> {
        match self {
            Document::Graph(g) => translate(&g),
            Document::Workflow(w) => {
                validate_workflow(&w)?;
                Ok(w)
            }
        }
    }

    /// The workflow's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Document::Graph(g) => &g.name,
            Document::Workflow(w) => &w.name,
        }
    }
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let location = if path == "." { String::new() } else { path };
        ValidationErrors::one(location, e.into_inner().to_string())
    })
}

/// Parses an AI graph document.
pub fn parse_graph(text: &str) -> Result<AiGraph, ValidationErrors> {
    match Document::parse(text)? {
        Document::Graph(g) => Ok(g),
        Document::Workflow(_) => Err(ValidationErrors::one(
            "kind",
            "this is a workflow document; an AI graph was expected",
        )),
    }
}

/// Checks a workflow document (one written by hand or by another tool).
pub fn validate_workflow(w: &Workflow) -> Result<(), ValidationErrors> {
    let mut p = Problems::default();
    if w.schema_version == 0 || w.schema_version > SCHEMA_VERSION {
        p.push(
            "schema_version",
            format!(
                "schema version {} is not supported (this build reads 1..={SCHEMA_VERSION})",
                w.schema_version
            ),
        );
    }
    check_name(&w.name, "workflow name", "name", &mut p);
    check_key(&w.namespace, "namespace", "namespace", &mut p);
    if w.jobs.is_empty() {
        p.push("jobs", "the workflow has no jobs");
    }
    let mut jobs: HashMap<&str, usize> = HashMap::new();
    let mut nodes: HashMap<&str, usize> = HashMap::new();
    for (i, job) in w.jobs.iter().enumerate() {
        let loc = format!("jobs[{i}]");
        check_name(&job.name, "job name", &format!("{loc}.name"), &mut p);
        if let Entry::Occupied(first) = jobs.entry(&job.name) {
            p.push(
                format!("{loc}.name"),
                format!(
                    "duplicate job name {:?} (first at jobs[{}])",
                    job.name,
                    first.get()
                ),
            );
        } else {
            jobs.insert(&job.name, i);
        }
        if job.nodes.is_empty() {
            p.push(format!("{loc}.nodes"), "a job needs at least one node");
        }
        for (j, node) in job.nodes.iter().enumerate() {
            let nloc = format!("{loc}.nodes[{j}]");
            check_name(&node.name, "node name", &format!("{nloc}.name"), &mut p);
            if nodes.insert(&node.name, i).is_some() {
                p.push(
                    format!("{nloc}.name"),
                    format!("duplicate node name {:?}", node.name),
                );
            }
        }
        let commands = job.commands().count();
        crate::check::check_image(job.image.as_deref(), job.pull.as_ref(), &loc, &mut p);
        if job.pull.is_some() && job.image.is_none() {
            p.push(
                format!("{loc}.pull"),
                format!(
                    "job {:?} sets pull but no image; pull only applies to a container job",
                    job.name
                ),
            );
        }
        crate::check::check_mounts(&job.mounts, &loc, &mut p);
        if !job.mounts.is_empty() && job.image.is_none() {
            p.push(
                format!("{loc}.mounts"),
                format!(
                    "job {:?} sets mounts but no image; mounts only apply to a container job",
                    job.name
                ),
            );
        }
        if commands == 0 && job.image.is_none() {
            p.push(
                format!("{loc}.nodes"),
                format!("job {:?} has no command", job.name),
            );
        } else if job.streaming && commands > 1 {
            p.push(
                format!("{loc}.streaming"),
                format!(
                    "streaming job {:?} has {commands} commands; a streaming job runs exactly one",
                    job.name
                ),
            );
        }
        if job.queue.is_empty() {
            p.push(format!("{loc}.queue"), "queue name is empty");
        }
        if job.timeout_s == Some(0) {
            p.push(
                format!("{loc}.timeout_s"),
                "timeout must be at least 1 second",
            );
        }
        crate::check::check_env_from(&job.env_from, &format!("{loc}.env_from"), &mut p);
        for k in job.env_from.keys() {
            if job.env.contains_key(k) {
                p.push(
                    format!("{loc}.env_from.{k}"),
                    format!("{k} is set both in env and in env_from"),
                );
            }
        }
        crate::check::check_job_numbers(
            job.timeout_s,
            Some(job.retries),
            job.retry_backoff_s,
            job.resources.as_ref(),
            &loc,
            &mut p,
        );
    }
    if w.max_duration_s == Some(0) {
        p.push("max_duration_s", "must be at least 1 second");
    }
    crate::check::check_at_most(
        w.max_duration_s,
        crate::check::MAX_DURATION_S,
        || "max_duration_s".to_string(),
        &mut p,
    );
    for (k, rule) in w.rules.iter().enumerate() {
        let loc = format!("rules[{k}]");
        if !jobs.contains_key(rule.job.as_str()) {
            p.push(format!("{loc}.job"), format!("unknown job {:?}", rule.job));
        }
        check_action_life(&rule.action, &rule.life, &loc, &mut p);
        check_rule_condition(&rule.condition, &format!("{loc}.condition"), &jobs, &mut p);
    }
    for (i, t) in w.triggers.iter().enumerate() {
        check_workflow_trigger(t, &format!("triggers[{i}]"), &mut p);
    }
    p.into_result(|| ())
}

fn check_rule_condition(
    c: &RuleCondition,
    loc: &str,
    jobs: &HashMap<&str, usize>,
    p: &mut Problems,
) {
    match c {
        RuleCondition::Event(ev) => check_event_condition(ev, &format!("{loc}.event"), p),
        RuleCondition::JobStatus(js) => {
            if !jobs.contains_key(js.job.as_str()) {
                p.push(
                    format!("{loc}.job_status.job"),
                    format!("unknown job {:?}", js.job),
                );
            }
            check_status(&js.status, format!("{loc}.job_status.status"), p);
        }
        RuleCondition::AllOf(parts) | RuleCondition::AnyOf(parts) => {
            let field = if matches!(c, RuleCondition::AllOf(_)) {
                "all_of"
            } else {
                "any_of"
            };
            if parts.is_empty() {
                p.push(
                    format!("{loc}.{field}"),
                    format!("{field} needs at least one condition"),
                );
            }
            for (i, part) in parts.iter().enumerate() {
                check_rule_condition(part, &format!("{loc}.{field}[{i}]"), jobs, p);
            }
        }
    }
}
