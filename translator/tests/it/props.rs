//! Properties of translation over random valid graphs.

use std::collections::HashMap;

use aiflow_translator::{
    Action, AiGraph, AiNode, Condition, ControlEdge, DataEdge, EventCondition, JobSpec, Life,
    RuleCondition, StatusCondition, translate,
};
use proptest::prelude::*;

/// A random acyclic graph: data edges only go from a lower to a higher index.
fn arb_graph() -> impl Strategy<Value = AiGraph> {
    (1usize..40)
        .prop_flat_map(|n| {
            let edges = proptest::collection::vec((0..n, 0..n), 0..n * 2);
            let controls = proptest::collection::vec((0..n, 0..n, any::<bool>(), 0usize..4), 0..n);
            (Just(n), edges, controls)
        })
        .prop_map(|(n, edges, controls)| {
            let nodes = (0..n)
                .map(|i| AiNode {
                    name: format!("n{i}"),
                    job: JobSpec {
                        command: vec![format!("cmd{i}")],
                        ..JobSpec::default()
                    },
                    ..AiNode::default()
                })
                .collect();
            let data_edges = edges
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| {
                    let (a, b) = (a.min(b), a.max(b));
                    DataEdge {
                        from: format!("n{a}"),
                        to: format!("n{b}"),
                    }
                })
                .collect();
            let control_edges = controls
                .into_iter()
                .map(|(to, on, by_status, action)| ControlEdge {
                    to: format!("n{to}"),
                    action: [Action::Start, Action::Stop, Action::Restart, Action::None][action]
                        .clone(),
                    life: if by_status {
                        Life::Once
                    } else {
                        Life::Repeated
                    },
                    condition: if by_status {
                        Condition::job_status(format!("n{on}"), StatusCondition::Succeeded)
                    } else {
                        Condition::any_of([
                            Condition::Event(EventCondition::key(format!("k/{on}"))),
                            Condition::job_status(format!("n{on}"), StatusCondition::Failed),
                        ])
                    },
                })
                .collect();
            AiGraph {
                name: "prop".into(),
                namespace: "default".into(),
                nodes,
                data_edges,
                control_edges,
                ..AiGraph::default()
            }
        })
}

fn status_jobs(c: &RuleCondition, out: &mut Vec<(String, String)>) {
    match c {
        RuleCondition::JobStatus(s) => {
            out.push((s.job.clone(), s.node.clone().unwrap_or_default()))
        }
        RuleCondition::AllOf(p) | RuleCondition::AnyOf(p) => {
            p.iter().for_each(|c| status_jobs(c, out))
        }
        RuleCondition::Event(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn translation_invariants(g in arb_graph()) {
        let wf = translate(&g).expect("random acyclic graphs are valid");
        // Every node lands in exactly one job.
        let mut job_of: HashMap<&str, &str> = HashMap::new();
        for job in &wf.jobs {
            for node in &job.nodes {
                prop_assert!(job_of.insert(&node.name, &job.name).is_none(), "{} in two jobs", node.name);
            }
        }
        prop_assert_eq!(job_of.len(), g.nodes.len());
        // No data edge crosses jobs, and data order holds inside a job.
        for e in &g.data_edges {
            prop_assert_eq!(job_of[e.from.as_str()], job_of[e.to.as_str()]);
            let job = wf.job(job_of[e.from.as_str()]).unwrap();
            let pos = |n: &str| job.nodes.iter().position(|x| x.name == n).unwrap();
            prop_assert!(pos(&e.from) < pos(&e.to), "{} must run before {}", e.from, e.to);
        }
        // Every control edge is preserved as exactly one rule on the right job.
        prop_assert_eq!(wf.rules.len(), g.control_edges.len());
        for (k, (edge, rule)) in g.control_edges.iter().zip(&wf.rules).enumerate() {
            let src = rule.source.as_ref().unwrap();
            prop_assert_eq!(src.control_edge, k);
            prop_assert_eq!(&rule.job, job_of[edge.to.as_str()]);
            prop_assert_eq!(&rule.action, &edge.action);
            let mut refs = Vec::new();
            status_jobs(&rule.condition, &mut refs);
            for (job, node) in refs {
                prop_assert_eq!(job.as_str(), job_of[node.as_str()]);
            }
        }
        // Deterministic, also through the JSON document.
        let again = translate(&g).unwrap();
        prop_assert_eq!(wf.to_json_pretty(), again.to_json_pretty());
        let reparsed: AiGraph = serde_json::from_str(&g.to_json_pretty()).unwrap();
        prop_assert_eq!(translate(&reparsed).unwrap().to_json_pretty(), wf.to_json_pretty());
    }
}
