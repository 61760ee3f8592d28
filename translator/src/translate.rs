//! AI graph → workflow: validation and translation in one pass.
//!
//! Data-edge components become jobs (nodes in a deterministic topological order: among nodes
//! ready at the same time, the one declared first goes first); each control edge becomes one job
//! rule; triggers are parsed. Every problem is collected before anything is returned.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::unionfind::UnionFind;
use petgraph::visit::EdgeRef;

use crate::check::{
    check_event_condition, check_job_spec, check_key, check_name, check_trigger, is_plain_name,
    unknown_word,
};
use crate::graph::{Action, AiGraph, Condition, Life, Op, StatusCondition};
use crate::problem::{Problems, ValidationErrors};
use crate::workflow::{
    DEFAULT_QUEUE, Job, JobNode, JobRule, JobStatusRule, RuleCondition, RuleSource, SCHEMA_VERSION,
    Workflow, WorkflowKind,
};

/// Checks an AI graph; `Err` lists every problem found.
pub fn validate(graph: &AiGraph) -> Result<(), ValidationErrors> {
    translate(graph).map(drop)
}

/// Checks an AI graph and turns it into a workflow.
pub fn translate(graph: &AiGraph) -> Result<Workflow, ValidationErrors> {
    let mut p = Problems::default();
    check_name(&graph.name, "workflow name", "name", &mut p);
    check_key(&graph.namespace, "namespace", "namespace", &mut p);
    if graph.nodes.is_empty() {
        p.push("nodes", "the graph has no nodes");
    }
    if graph.max_concurrent_jobs == Some(0) {
        p.push("max_concurrent_jobs", "must be at least 1");
    }
    if graph.max_duration_s == Some(0) {
        p.push("max_duration_s", "must be at least 1 second");
    }
    crate::check::check_at_most(
        graph.max_duration_s,
        crate::check::MAX_DURATION_S,
        || "max_duration_s".to_string(),
        &mut p,
    );

    let index = index_nodes(graph, &mut p);
    let data = DataGraph::build(graph, &index, &mut p);
    let order = data.topological_order();
    let jobs = build_jobs(graph, &data, &order, &index, &mut p);

    let job_of_node = |name: &str| -> Option<&str> {
        index.get(name).map(|&i| jobs[data.job_of[i]].name.as_str())
    };
    let rules: Vec<Option<JobRule>> = graph
        .control_edges
        .iter()
        .enumerate()
        .map(|(k, edge)| {
            let loc = format!("control_edges[{k}]");
            let job = match job_of_node(&edge.to) {
                Some(job) => Some(job),
                None => {
                    p.push(format!("{loc}.to"), unknown_node(&edge.to));
                    None
                }
            };
            check_action_life(&edge.action, &edge.life, &loc, &mut p);
            let condition = convert_condition(
                &edge.condition,
                &format!("{loc}.condition"),
                &job_of_node,
                &mut p,
            );
            Some(JobRule {
                job: job?.to_string(),
                action: edge.action.clone(),
                life: edge.life.clone(),
                condition: condition?,
                source: Some(RuleSource {
                    control_edge: k,
                    node: edge.to.clone(),
                }),
            })
        })
        .collect();
    let finish_on = graph
        .finish_on
        .as_ref()
        .map(|c| convert_condition(c, "finish_on", &job_of_node, &mut p));
    let triggers: Vec<_> = graph
        .triggers
        .iter()
        .enumerate()
        .map(|(i, t)| check_trigger(t, &format!("triggers[{i}]"), &mut p))
        .collect();

    p.into_result(|| Workflow {
        kind: WorkflowKind::Workflow,
        schema_version: SCHEMA_VERSION,
        name: graph.name.clone(),
        project: graph.project.clone(),
        namespace: graph.namespace.clone(),
        description: graph.description.clone(),
        jobs,
        rules: rules.into_iter().flatten().collect(),
        triggers: triggers.into_iter().flatten().collect(),
        max_concurrent_jobs: graph.max_concurrent_jobs,
        max_duration_s: graph.max_duration_s,
        finish_on: finish_on.flatten(),
    })
}

pub(crate) fn check_action_life(action: &Action, life: &Life, loc: &str, p: &mut Problems) {
    if !action.is_known() {
        unknown_word(
            "action",
            action.as_str(),
            Action::KNOWN,
            format!("{loc}.action"),
            p,
        );
    }
    if !life.is_known() {
        unknown_word("life", life.as_str(), Life::KNOWN, format!("{loc}.life"), p);
    }
}

pub(crate) fn check_status(status: &StatusCondition, loc: String, p: &mut Problems) {
    if !status.is_known() {
        unknown_word("status", status.as_str(), StatusCondition::KNOWN, loc, p);
    }
}

fn unknown_node(name: &str) -> String {
    format!("unknown node {name:?}")
}

/// Name → declaration index (the first node of a name wins; later ones are reported).
fn index_nodes<'g>(graph: &'g AiGraph, p: &mut Problems) -> HashMap<&'g str, usize> {
    let mut index = HashMap::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let loc = || format!("nodes[{i}]");
        if !is_plain_name(&node.name) {
            check_name(&node.name, "node name", &format!("{}.name", loc()), p);
        }
        match index.entry(node.name.as_str()) {
            Entry::Occupied(first) => p.push(
                format!("{}.name", loc()),
                format!(
                    "duplicate node name {:?} (first declared at nodes[{}])",
                    node.name,
                    first.get()
                ),
            ),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
        if !node.op.is_known() {
            unknown_word(
                "op",
                node.op.as_str(),
                Op::KNOWN,
                format!("{}.op", loc()),
                p,
            );
        }
        check_job_spec(&node.job, || format!("{}.job", loc()), p);
    }
    index
}

/// The data edges as a petgraph graph (node index = declaration index), with their components.
struct DataGraph {
    graph: DiGraph<(), usize>,
    has_cycle: bool,
    /// Declaration index → job index.
    job_of: Vec<usize>,
    /// Job index → its nodes' declaration indices (filled in data order later).
    job_count: usize,
}

impl DataGraph {
    fn build(ai: &AiGraph, index: &HashMap<&str, usize>, p: &mut Problems) -> Self {
        let n = ai.nodes.len();
        let mut graph = DiGraph::with_capacity(n, ai.data_edges.len());
        for _ in 0..n {
            graph.add_node(());
        }
        let mut components = UnionFind::<usize>::new(n);
        let mut has_cycle = false;
        for (k, edge) in ai.data_edges.iter().enumerate() {
            let loc = || format!("data_edges[{k}]");
            let from = index.get(edge.from.as_str()).copied();
            let to = index.get(edge.to.as_str()).copied();
            if from.is_none() {
                p.push(format!("{}.from", loc()), unknown_node(&edge.from));
            }
            if to.is_none() {
                p.push(format!("{}.to", loc()), unknown_node(&edge.to));
            }
            let (Some(a), Some(b)) = (from, to) else {
                continue;
            };
            if a == b {
                has_cycle = true;
                p.push(
                    loc(),
                    format!(
                        "data edges form a cycle: {0} -> {0} (a node cannot read its own output)",
                        edge.from
                    ),
                );
                continue;
            }
            graph.add_edge(NodeIndex::new(a), NodeIndex::new(b), k);
            components.union(a, b);
        }
        for scc in petgraph::algo::tarjan_scc(&graph) {
            if scc.len() > 1 {
                has_cycle = true;
                let (first_edge, cycle) = find_cycle(&graph, &scc);
                let names: Vec<&str> = cycle.iter().map(|&i| ai.nodes[i].name.as_str()).collect();
                p.push(
                    format!("data_edges[{first_edge}]"),
                    format!("data edges form a cycle: {}", names.join(" -> ")),
                );
            }
        }
        // Jobs are numbered in the order their first-declared node appears.
        let mut job_of = vec![usize::MAX; n];
        let mut job_of_root: HashMap<usize, usize> = HashMap::new();
        for (i, slot) in job_of.iter_mut().enumerate() {
            let next = job_of_root.len();
            *slot = *job_of_root.entry(components.find(i)).or_insert(next);
        }
        let job_count = job_of_root.len();
        Self {
            graph,
            has_cycle,
            job_of,
            job_count,
        }
    }

    /// All nodes in data order (Kahn's algorithm, earliest declaration first among the ready);
    /// declaration order when the data edges have a cycle.
    fn topological_order(&self) -> Vec<usize> {
        let n = self.graph.node_count();
        if self.has_cycle {
            return (0..n).collect();
        }
        let mut indegree: Vec<usize> = (0..n)
            .map(|i| {
                self.graph
                    .neighbors_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for next in self.graph.neighbors(NodeIndex::new(i)) {
                let j = next.index();
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(Reverse(j));
                }
            }
        }
        order
    }
}

/// A cycle inside a strongly connected component: the index of its first data edge and the
/// node path, first node repeated at the end.
fn find_cycle(graph: &DiGraph<(), usize>, scc: &[NodeIndex]) -> (usize, Vec<usize>) {
    let start = *scc.iter().min().expect("non-empty component");
    let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    // Breadth-first from `start` inside the component until an edge leads back to it.
    let mut parent: HashMap<NodeIndex, (NodeIndex, usize)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for e in graph.edges(u) {
            let v = e.target();
            if !members.contains(&v) {
                continue;
            }
            if v == start {
                let mut path = vec![start.index()];
                let mut edges = vec![*e.weight()];
                let mut cur = u;
                while cur != start {
                    path.push(cur.index());
                    let (prev, edge) = parent[&cur];
                    edges.push(edge);
                    cur = prev;
                }
                path.push(start.index());
                path.reverse();
                return (*edges.last().expect("one edge at least"), path);
            }
            if v != start && !parent.contains_key(&v) {
                parent.insert(v, (u, *e.weight()));
                queue.push_back(v);
            }
        }
    }
    unreachable!(
        "a strongly connected component of two or more nodes has a cycle through each node"
    )
}

/// Merges the executor settings of each job's nodes and names the jobs.
fn build_jobs(
    ai: &AiGraph,
    data: &DataGraph,
    order: &[usize],
    index: &HashMap<&str, usize>,
    p: &mut Problems,
) -> Vec<Job> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); data.job_count];
    for &i in order {
        members[data.job_of[i]].push(i);
    }
    let mut jobs = Vec::with_capacity(members.len());
    let mut names: HashMap<String, usize> = HashMap::with_capacity(members.len());
    for nodes in &members {
        let job = merge_job(ai, nodes, p);
        let first = nodes[0];
        // A job named after a duplicate node was reported with that node already.
        let duplicate = index.get(job.name.as_str()).is_some_and(|&i| i != first)
            && ai.nodes[first].name == job.name;
        match names.entry(job.name.clone()) {
            Entry::Occupied(_) if duplicate => {}
            Entry::Occupied(other) => {
                let other_first = members[*other.get()][0];
                p.push(
                    format!("nodes[{first}].job.name"),
                    format!(
                        "job name {:?} is taken by the job of node {:?}; set a distinct job.name",
                        job.name, ai.nodes[other_first].name
                    ),
                );
            }
            Entry::Vacant(slot) => {
                slot.insert(jobs.len());
            }
        }
        jobs.push(job);
    }
    jobs
}

/// One setting of a job: its value and the node that gave it first.
struct Setting<T> {
    value: Option<(T, usize)>,
}

impl<T: PartialEq + std::fmt::Debug + Clone> Setting<T> {
    fn new() -> Self {
        Self { value: None }
    }

    fn offer(&mut self, v: Option<&T>, node: usize, field: &str, ai: &AiGraph, p: &mut Problems) {
        let Some(v) = v else { return };
        match &self.value {
            None => self.value = Some((v.clone(), node)),
            Some((old, from)) if old != v => p.push(
                format!("nodes[{node}].job.{field}"),
                format!(
                    "{field} {v:?} conflicts with {old:?} set by node {:?} of the same job",
                    ai.nodes[*from].name
                ),
            ),
            Some(_) => {}
        }
    }

    fn get(self) -> Option<T> {
        self.value.map(|(v, _)| v)
    }
}

fn merge_job(ai: &AiGraph, nodes: &[usize], p: &mut Problems) -> Job {
    let mut name = Setting::new();
    let mut working_dir = Setting::new();
    let mut image = Setting::new();
    let mut pull = Setting::new();
    let mut timeout_s = Setting::new();
    let mut retries = Setting::new();
    let mut retry_backoff_s = Setting::new();
    let mut streaming = Setting::new();
    let mut queue = Setting::new();
    let mut resources = Setting::new();
    let mut priority = Setting::new();
    let mut env: BTreeMap<String, (String, usize)> = BTreeMap::new();
    // Every node's mounts, in node order, once each: (mount, node, index in the node's list).
    let mut mounts: Vec<(String, usize, usize)> = Vec::new();
    let mut env_from: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for &i in nodes {
        let spec = &ai.nodes[i].job;
        name.offer(spec.name.as_ref(), i, "name", ai, p);
        working_dir.offer(spec.working_dir.as_ref(), i, "working_dir", ai, p);
        image.offer(spec.image.as_ref(), i, "image", ai, p);
        pull.offer(spec.pull.as_ref(), i, "pull", ai, p);
        timeout_s.offer(spec.timeout_s.as_ref(), i, "timeout_s", ai, p);
        retries.offer(spec.retries.as_ref(), i, "retries", ai, p);
        retry_backoff_s.offer(spec.retry_backoff_s.as_ref(), i, "retry_backoff_s", ai, p);
        streaming.offer(spec.streaming.as_ref(), i, "streaming", ai, p);
        queue.offer(spec.queue.as_ref(), i, "queue", ai, p);
        resources.offer(spec.resources.as_ref(), i, "resources", ai, p);
        priority.offer(spec.priority.as_ref(), i, "priority", ai, p);
        for (k, v) in &spec.env {
            match env.get(k) {
                Some((old, from)) if old != v => p.push(
                    format!("nodes[{i}].job.env.{k}"),
                    format!(
                        "env {k}={v:?} conflicts with {old:?} set by node {:?} of the same job",
                        ai.nodes[*from].name
                    ),
                ),
                Some(_) => {}
                None => {
                    env.insert(k.clone(), (v.clone(), i));
                }
            }
        }
        for (j, m) in spec.mounts.iter().enumerate() {
            if !mounts.iter().any(|(seen, _, _)| seen == m) {
                mounts.push((m.clone(), i, j));
            }
        }
        for (k, v) in &spec.env_from {
            match env_from.get(k) {
                Some((old, from)) if old != v => p.push(
                    format!("nodes[{i}].job.env_from.{k}"),
                    format!(
                        "env_from {k}={v:?} conflicts with {old:?} set by node {:?} of the same job",
                        ai.nodes[*from].name
                    ),
                ),
                Some(_) => {}
                None => {
                    env_from.insert(k.clone(), (v.clone(), i));
                }
            }
        }
    }
    for (k, (_, i)) in &env_from {
        if env.contains_key(k) {
            p.push(
                format!("nodes[{i}].job.env_from.{k}"),
                format!("{k} is set both in env and in env_from of the same job"),
            );
        }
    }
    let first = nodes[0];
    let job_name = name.get().unwrap_or_else(|| ai.nodes[first].name.clone());
    let streaming = streaming.get().unwrap_or(false);
    let job_nodes: Vec<JobNode> = nodes
        .iter()
        .map(|&i| {
            let n = &ai.nodes[i];
            JobNode {
                name: n.name.clone(),
                op: n.op.clone(),
                command: n.job.command.clone(),
                properties: n.properties.clone(),
            }
        })
        .collect();
    let commands = job_nodes.iter().filter(|n| !n.command.is_empty()).count();
    let image = image.get();
    let pull = pull.get();
    if pull.is_some() && image.is_none() {
        p.push(
            format!("nodes[{first}].job.pull"),
            format!(
                "job {job_name:?} sets pull but no image; pull only applies to a container job"
            ),
        );
    }
    if let Some(&(_, node, j)) = mounts.first()
        && image.is_none()
    {
        p.push(
            format!("nodes[{node}].job.mounts[{j}]"),
            format!(
                "job {job_name:?} sets mounts but no image; mounts only apply to a container job"
            ),
        );
    }
    // Nodes of one job may repeat a mount; two that differ on one container path conflict.
    let mut targets: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for (m, node, j) in &mounts {
        let Ok(parsed) = crate::check::parse_mount(m) else {
            continue;
        };
        let target = parsed.container.trim_end_matches('/');
        match targets.get(target) {
            Some((other, from)) if *from != *node => p.push(
                format!("nodes[{node}].job.mounts[{j}]"),
                format!(
                    "mount {m:?} conflicts with {other:?} set by node {:?} of the same job (same container path)",
                    ai.nodes[*from].name
                ),
            ),
            Some(_) => {}
            None => {
                targets.insert(target, (m, *node));
            }
        }
    }
    // (One node over the limit is reported with that node.)
    if mounts.len() > crate::check::MAX_MOUNTS
        && nodes
            .iter()
            .all(|&i| ai.nodes[i].job.mounts.len() <= crate::check::MAX_MOUNTS)
    {
        p.push(
            format!("nodes[{first}].job.mounts"),
            format!(
                "job {job_name:?} has {} mounts, at most {} allowed",
                mounts.len(),
                crate::check::MAX_MOUNTS
            ),
        );
    }
    // A container job with no command runs its image's own.
    if commands == 0 && image.is_none() {
        p.push(
            format!("nodes[{first}].job.command"),
            format!("job {job_name:?} has no command: set job.command on one of its nodes"),
        );
    } else if streaming && commands > 1 {
        p.push(
            format!("nodes[{first}].job.streaming"),
            format!(
                "streaming job {job_name:?} has {commands} commands; a streaming job runs exactly one"
            ),
        );
    }
    Job {
        name: job_name,
        nodes: job_nodes,
        env: env.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        env_from: env_from.into_iter().map(|(k, (v, _))| (k, v)).collect(),
        working_dir: working_dir.get(),
        image,
        pull,
        mounts: mounts.into_iter().map(|(m, _, _)| m).collect(),
        timeout_s: timeout_s.get(),
        retries: retries.get().unwrap_or(0),
        retry_backoff_s: retry_backoff_s.get(),
        streaming,
        queue: queue.get().unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
        resources: resources.get(),
        priority: priority.get().unwrap_or(0),
    }
}

fn convert_condition<'a>(
    c: &Condition,
    loc: &str,
    job_of_node: &impl Fn(&str) -> Option<&'a str>,
    p: &mut Problems,
) -> Option<RuleCondition> {
    match c {
        Condition::Event(ev) => {
            let before = p.len();
            check_event_condition(ev, &format!("{loc}.event"), p);
            (p.len() == before).then(|| RuleCondition::Event(ev.clone()))
        }
        Condition::JobStatus(js) => {
            check_status(&js.status, format!("{loc}.job_status.status"), p);
            match job_of_node(&js.node) {
                Some(job) => js.status.is_known().then(|| {
                    RuleCondition::JobStatus(JobStatusRule {
                        job: job.to_string(),
                        node: Some(js.node.clone()),
                        status: js.status.clone(),
                    })
                }),
                None => {
                    p.push(format!("{loc}.job_status.node"), unknown_node(&js.node));
                    None
                }
            }
        }
        Condition::AllOf(parts) | Condition::AnyOf(parts) => {
            let field = if matches!(c, Condition::AllOf(_)) {
                "all_of"
            } else {
                "any_of"
            };
            if parts.is_empty() {
                p.push(
                    format!("{loc}.{field}"),
                    format!("{field} needs at least one condition"),
                );
                return None;
            }
            let converted: Vec<Option<RuleCondition>> = parts
                .iter()
                .enumerate()
                .map(|(i, part)| {
                    convert_condition(part, &format!("{loc}.{field}[{i}]"), job_of_node, p)
                })
                .collect();
            let converted: Vec<RuleCondition> = converted.into_iter().collect::<Option<_>>()?;
            Some(if field == "all_of" {
                RuleCondition::AllOf(converted)
            } else {
                RuleCondition::AnyOf(converted)
            })
        }
    }
}
