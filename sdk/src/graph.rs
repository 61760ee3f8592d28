//! Build AI graphs in Rust.
//!
//! ```
//! use aiflow_sdk::graph::{Event, GraphBuilder, Op};
//!
//! let mut g = GraphBuilder::new("fraud");
//! g.project("demo");
//! g.node("ingest").op(Op::Ingest).command(["python3", "ingest.py"]).retries(2);
//! g.node("train").op(Op::Train).command(["python3", "train.py"]).timeout_s(3600);
//! g.node("serve").op(Op::Predict).command(["python3", "serve.py"]).streaming();
//! g.data_edge("ingest", "train");
//! g.on(Event::key("model/fraud").of_type("MODEL_VERSION_CREATED")).restart("serve");
//! g.cron("0 */6 * * *", "UTC");
//! let graph = g.build().expect("a valid graph");
//! assert_eq!(graph.nodes.len(), 3);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

pub use aiflow_translator::graph::{
    Action, AiGraph, AiNode, Catchup, Condition, ControlEdge, DataEdge, EventCondition, JobSpec,
    Life, Op, Pull, Resources, StatusCondition, Trigger,
};
pub use aiflow_translator::{ValidationErrors, Workflow};

/// `Event::key("model/fraud").of_type("MODEL_VERSION_CREATED")`: an event pattern.
pub type Event = EventCondition;

/// Builds an [`AiGraph`]; [`GraphBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    graph: AiGraph,
}

impl GraphBuilder {
    /// A graph that becomes the workflow `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            graph: AiGraph {
                name: name.into(),
                namespace: aiflow_translator::graph::DEFAULT_NAMESPACE.to_string(),
                ..AiGraph::default()
            },
        }
    }

    pub fn project(&mut self, project: impl Into<String>) -> &mut Self {
        self.graph.project = Some(project.into());
        self
    }

    pub fn namespace(&mut self, namespace: impl Into<String>) -> &mut Self {
        self.graph.namespace = namespace.into();
        self
    }

    pub fn description(&mut self, description: impl Into<String>) -> &mut Self {
        self.graph.description = Some(description.into());
        self
    }

    pub fn max_concurrent_jobs(&mut self, n: u32) -> &mut Self {
        self.graph.max_concurrent_jobs = Some(n);
        self
    }

    pub fn max_duration(&mut self, d: Duration) -> &mut Self {
        self.graph.max_duration_s = Some(d.as_secs().max(1));
        self
    }

    /// Once `condition` is met in an execution, its control edges take no more actions and the
    /// execution ends when its running jobs have ended (`finish_on` in the document).
    pub fn finish_on(&mut self, condition: impl Into<Condition>) -> &mut Self {
        self.graph.finish_on = Some(condition.into());
        self
    }

    /// The node called `name`, added if new; chain its settings.
    pub fn node(&mut self, name: impl Into<String>) -> NodeBuilder<'_> {
        let name = name.into();
        let i = match self.graph.nodes.iter().position(|n| n.name == name) {
            Some(i) => i,
            None => {
                self.graph.nodes.push(AiNode {
                    name,
                    ..AiNode::default()
                });
                self.graph.nodes.len() - 1
            }
        };
        NodeBuilder {
            node: &mut self.graph.nodes[i],
        }
    }

    /// `to` reads what `from` writes: both run in one job, `from` first.
    pub fn data_edge(&mut self, from: impl Into<String>, to: impl Into<String>) -> &mut Self {
        self.graph.data_edges.push(DataEdge {
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// A control edge whose condition is `condition`; finish with `.start(node)` and the like.
    pub fn on(&mut self, condition: impl Into<Condition>) -> RuleBuilder<'_> {
        RuleBuilder {
            graph: &mut self.graph,
            condition: condition.into(),
            life: Life::Repeated,
        }
    }

    /// A control edge on the status of the job holding `node`.
    pub fn after(&mut self, node: impl Into<String>) -> StatusBuilder<'_> {
        StatusBuilder {
            graph: &mut self.graph,
            node: node.into(),
        }
    }

    /// Starts an execution on a cron schedule (5 fields, or 6–7 with seconds) in `timezone`.
    pub fn cron(&mut self, expr: impl Into<String>, timezone: impl Into<String>) -> &mut Self {
        self.trigger(Trigger {
            cron: Some(expr.into()),
            timezone: Some(timezone.into()),
            ..Trigger::default()
        })
    }

    /// Starts an execution every `every`.
    pub fn interval(&mut self, every: Duration) -> &mut Self {
        self.trigger(Trigger {
            interval_s: Some(every.as_secs().max(1)),
            ..Trigger::default()
        })
    }

    /// Starts an execution when a matching event arrives.
    pub fn trigger_on(&mut self, event: EventCondition) -> &mut Self {
        self.trigger(Trigger {
            event: Some(event),
            ..Trigger::default()
        })
    }

    /// Adds any trigger (e.g. `all_of` a cron tick and an event).
    pub fn trigger(&mut self, trigger: Trigger) -> &mut Self {
        self.graph.triggers.push(trigger);
        self
    }

    /// The graph as built so far, unchecked.
    #[must_use]
    pub fn graph(&self) -> &AiGraph {
        &self.graph
    }

    /// Checks the graph and returns it; `Err` lists every problem.
    pub fn build(&self) -> Result<AiGraph, ValidationErrors> {
        aiflow_translator::validate(&self.graph)?;
        Ok(self.graph.clone())
    }

    /// Checks the graph and returns the workflow it becomes.
    pub fn workflow(&self) -> Result<Workflow, ValidationErrors> {
        aiflow_translator::translate(&self.graph)
    }
}

/// Settings of one node (and of the job it belongs to).
#[derive(Debug)]
pub struct NodeBuilder<'g> {
    node: &'g mut AiNode,
}

// Each setting is written through to the graph at once, so dropping the builder is fine.
#[allow(clippy::must_use_candidate, clippy::return_self_not_must_use)]
impl NodeBuilder<'_> {
    pub fn op(self, op: Op) -> Self {
        self.node.op = op;
        self
    }

    pub fn description(self, d: impl Into<String>) -> Self {
        self.node.description = Some(d.into());
        self
    }

    /// The program and its arguments; no shell (use `["sh", "-c", "…"]` for one).
    pub fn command<S: Into<String>>(self, argv: impl IntoIterator<Item = S>) -> Self {
        self.node.job.command = argv.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node.job.env.insert(key.into(), value.into());
        self
    }

    pub fn envs<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.node.job.env.extend(vars);
        self
    }

    pub fn working_dir(self, dir: impl Into<String>) -> Self {
        self.node.job.working_dir = Some(dir.into());
        self
    }

    /// Runs the job in a container from this image (`name[:tag][@digest]`); the node's command
    /// becomes the container's command (the image's own when the job gives none).
    pub fn image(self, image: impl Into<String>) -> Self {
        self.node.job.image = Some(image.into());
        self
    }

    /// When the job's image is pulled: [`Pull::IfMissing`] (default), [`Pull::Always`] or
    /// [`Pull::Never`].
    pub fn pull(self, pull: Pull) -> Self {
        self.node.job.pull = Some(pull);
        self
    }

    /// Adds a bind mount to the job's container, in Docker's short syntax
    /// `/host/path:/in/container[:ro|rw]` (absolute paths; read-write unless `ro`). The host is
    /// the engine's (a worker's machine for a job a worker runs). Needs [`Self::image`].
    pub fn mount(self, mount: impl Into<String>) -> Self {
        self.node.job.mounts.push(mount.into());
        self
    }

    pub fn timeout_s(self, seconds: u64) -> Self {
        self.node.job.timeout_s = Some(seconds);
        self
    }

    pub fn retries(self, n: u32) -> Self {
        self.node.job.retries = Some(n);
        self
    }

    pub fn retry_backoff_s(self, seconds: u64) -> Self {
        self.node.job.retry_backoff_s = Some(seconds);
        self
    }

    /// The job runs until it is stopped (a server, a stream processor).
    pub fn streaming(self) -> Self {
        self.node.job.streaming = Some(true);
        self
    }

    /// Which workers take the job.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.node.job.queue = Some(queue.into());
        self
    }

    pub fn resources(self, resources: Resources) -> Self {
        self.node.job.resources = Some(resources);
        self
    }

    pub fn priority(self, priority: i32) -> Self {
        self.node.job.priority = Some(priority);
        self
    }

    /// Names the job this node belongs to (default: its first node in data order).
    pub fn job_name(self, name: impl Into<String>) -> Self {
        self.node.job.name = Some(name.into());
        self
    }

    pub fn properties(self, properties: serde_json::Value) -> Self {
        self.node.properties = Some(properties);
        self
    }
}

/// Chooses the status a [`GraphBuilder::after`] rule waits for.
#[derive(Debug)]
pub struct StatusBuilder<'g> {
    graph: &'g mut AiGraph,
    node: String,
}

impl<'g> StatusBuilder<'g> {
    #[must_use]
    pub fn status(self, status: StatusCondition) -> RuleBuilder<'g> {
        RuleBuilder {
            condition: Condition::job_status(self.node, status),
            graph: self.graph,
            life: Life::Repeated,
        }
    }
    #[must_use]
    pub fn succeeded(self) -> RuleBuilder<'g> {
        self.status(StatusCondition::Succeeded)
    }
    #[must_use]
    pub fn failed(self) -> RuleBuilder<'g> {
        self.status(StatusCondition::Failed)
    }
    #[must_use]
    pub fn finished(self) -> RuleBuilder<'g> {
        self.status(StatusCondition::Finished)
    }
    #[must_use]
    pub fn started(self) -> RuleBuilder<'g> {
        self.status(StatusCondition::Started)
    }
    #[must_use]
    pub fn stopped(self) -> RuleBuilder<'g> {
        self.status(StatusCondition::Stopped)
    }
}

/// A control edge waiting for its action.
#[derive(Debug)]
pub struct RuleBuilder<'g> {
    graph: &'g mut AiGraph,
    condition: Condition,
    life: Life,
}

impl RuleBuilder<'_> {
    /// Fire at most once per execution.
    #[must_use]
    pub fn once(mut self) -> Self {
        self.life = Life::Once;
        self
    }

    pub fn start(self, node: impl Into<String>) {
        self.action(Action::Start, node);
    }
    pub fn stop(self, node: impl Into<String>) {
        self.action(Action::Stop, node);
    }
    pub fn restart(self, node: impl Into<String>) {
        self.action(Action::Restart, node);
    }

    /// Adds the control edge with any action.
    pub fn action(self, action: Action, node: impl Into<String>) {
        self.graph.control_edges.push(ControlEdge {
            to: node.into(),
            action,
            life: self.life,
            condition: self.condition,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_and_pull_are_job_settings() {
        let mut g = GraphBuilder::new("boxed");
        g.node("train")
            .image("aiflow-test/debian:bookworm")
            .pull(Pull::Never)
            .command(["sh", "-c", "echo hi"]);
        g.node("serve").image("trainer:v1");
        let graph = g.build().unwrap();
        let json = serde_json::to_value(&graph).unwrap();
        assert_eq!(
            json["nodes"][0]["job"]["image"],
            "aiflow-test/debian:bookworm"
        );
        assert_eq!(json["nodes"][0]["job"]["pull"], "never");
        assert!(json["nodes"][1]["job"].get("pull").is_none());
        let mut bad = GraphBuilder::new("bad");
        bad.node("a").image("Not/Valid").command(["true"]);
        let e = bad.build().unwrap_err();
        assert_eq!(e.problems[0].location, "nodes[0].job.image", "{e}");
    }

    #[test]
    fn mounts_are_job_settings_checked_on_build() {
        let mut g = GraphBuilder::new("mounted");
        g.node("train")
            .image("aiflow-test/debian:bookworm")
            .mount("/srv/data:/data")
            .mount("/opt/models:/models:ro")
            .command(["sh", "-c", "ls /data"]);
        let graph = g.build().unwrap();
        let json = serde_json::to_value(&graph).unwrap();
        assert_eq!(
            json["nodes"][0]["job"]["mounts"],
            serde_json::json!(["/srv/data:/data", "/opt/models:/models:ro"])
        );
        let mut bad = GraphBuilder::new("bad");
        bad.node("a")
            .image("debian")
            .mount("/ok:/ok")
            .mount("data:/data")
            .command(["true"]);
        let e = bad.build().unwrap_err();
        assert_eq!(e.problems[0].location, "nodes[0].job.mounts[1]", "{e}");
        let mut no_image = GraphBuilder::new("no_image");
        no_image.node("a").mount("/a:/b").command(["true"]);
        let e = no_image.build().unwrap_err();
        assert!(
            e.to_string()
                .contains("mounts only apply to a container job"),
            "{e}"
        );
    }

    #[test]
    fn builder_writes_the_interface_document() {
        let mut g = GraphBuilder::new("online_learning");
        g.project("demo");
        g.node("ingest")
            .op(Op::ReadDataset)
            .command(["sh", "-c", "echo"])
            .timeout_s(600)
            .retries(2);
        g.node("train").op(Op::Train).command(["train"]);
        g.node("evaluate").op(Op::Evaluate).command(["eval"]);
        g.data_edge("ingest", "train");
        g.after("train").succeeded().start("evaluate");
        g.on(Condition::any_of([
            Condition::from(Event::key("model/fraud").of_type("MODEL_VERSION_CREATED")),
            Condition::job_status("train", StatusCondition::Succeeded),
        ]))
        .once()
        .start("evaluate");
        g.cron("0 */6 * * *", "UTC");
        let graph = g.build().unwrap();
        let json: serde_json::Value = serde_json::to_value(&graph).unwrap();
        assert_eq!(json["nodes"][0]["op"], "read_dataset");
        assert_eq!(json["nodes"][0]["job"]["timeout_s"], 600);
        assert_eq!(json["data_edges"][0]["to"], "train");
        assert_eq!(
            json["control_edges"][0]["condition"]["job_status"]["status"],
            "SUCCEEDED"
        );
        assert_eq!(json["control_edges"][1]["life"], "ONCE");
        assert_eq!(
            json["control_edges"][1]["condition"]["any_of"][0]["event"]["event_type"],
            "MODEL_VERSION_CREATED"
        );
        assert_eq!(json["triggers"][0]["cron"], "0 */6 * * *");
        let wf = g.workflow().unwrap();
        assert_eq!(wf.jobs.len(), 2);
    }

    #[test]
    fn build_reports_every_problem() {
        let mut g = GraphBuilder::new("bad");
        g.node("a").command(["x"]);
        g.data_edge("a", "nowhere");
        g.after("ghost").succeeded().start("a");
        g.cron("not cron", "UTC");
        let err = g.build().unwrap_err();
        let locations: Vec<&str> = err.problems.iter().map(|p| p.location.as_str()).collect();
        assert!(locations.contains(&"data_edges[0].to"), "{locations:?}");
        assert!(
            locations.contains(&"control_edges[0].condition.job_status.node"),
            "{locations:?}"
        );
        assert!(locations.contains(&"triggers[0].cron"), "{locations:?}");
    }
}
