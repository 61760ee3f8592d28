//! Validation never panics: random bytes, random JSON, and random graphs full of mistakes.

use aiflow_translator::{
    AiGraph, AiNode, ControlEdge, DataEdge, Document, JobSpec, Trigger, validate,
};
use proptest::prelude::*;

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z*/ ]{0,8}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("START"),
            Just("RESTART"),
            Just("SUCCEEDED"),
            Just("0 */6 * * *"),
            Just("UTC"),
            Just("a"),
            Just("b"),
            Just("workflow")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("name"),
            Just("nodes"),
            Just("data_edges"),
            Just("control_edges"),
            Just("triggers"),
            Just("from"),
            Just("to"),
            Just("job"),
            Just("command"),
            Just("condition"),
            Just("event"),
            Just("key"),
            Just("job_status"),
            Just("node"),
            Just("status"),
            Just("all_of"),
            Just("any_of"),
            Just("cron"),
            Just("action"),
            Just("kind"),
            Just("jobs"),
            Just("rules")
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(keys.prop_map(String::from), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Graphs with random names: unknown references, cycles, duplicates, bad crons.
fn arb_messy_graph() -> impl Strategy<Value = AiGraph> {
    let name = "[a-d]{0,2}";
    (
        proptest::collection::vec((name, proptest::option::of("[a-z ]{0,3}")), 0..12),
        proptest::collection::vec((name, name), 0..20),
        proptest::collection::vec((name, name), 0..6),
        proptest::collection::vec("[0-9*/ ]{0,14}", 0..3),
    )
        .prop_map(|(nodes, edges, controls, crons)| AiGraph {
            name: "messy".into(),
            namespace: "default".into(),
            nodes: nodes
                .into_iter()
                .map(|(name, cmd)| AiNode {
                    name,
                    job: JobSpec {
                        command: cmd.into_iter().collect(),
                        ..JobSpec::default()
                    },
                    ..AiNode::default()
                })
                .collect(),
            data_edges: edges
                .into_iter()
                .map(|(from, to)| DataEdge { from, to })
                .collect(),
            control_edges: controls
                .into_iter()
                .map(|(to, on)| ControlEdge {
                    to,
                    action: aiflow_translator::Action::Start,
                    life: aiflow_translator::Life::Repeated,
                    condition: aiflow_translator::Condition::job_status(
                        on,
                        aiflow_translator::StatusCondition::Finished,
                    ),
                })
                .collect(),
            triggers: crons
                .into_iter()
                .map(|c| Trigger {
                    cron: Some(c),
                    ..Trigger::default()
                })
                .collect(),
            ..AiGraph::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Document::parse(&text).and_then(Document::into_workflow);
    }

    #[test]
    fn random_documents_never_panic(doc in arb_json()) {
        if let Ok(d) = Document::from_value(doc) {
            let _ = d.into_workflow();
        }
    }

    #[test]
    fn messy_graphs_give_errors_not_panics(g in arb_messy_graph()) {
        if let Err(e) = validate(&g) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(!p.message.is_empty());
            }
        }
    }
}
