//! The checked-in `dags/federated_averaging.json` is exactly what the SDK program writes, and
//! it validates and translates into the jobs, queues and rules the example relies on.

use aiflow_translator::{Action, Document, RuleCondition};

#[test]
fn checked_in_json_matches_the_sdk_program() {
    let generated = aiflow_dags::federated_averaging()
        .expect("valid graph")
        .to_json_pretty();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/federated_averaging.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in != generated {
        std::fs::write(path, &generated).expect("write dags/federated_averaging.json");
        panic!(
            "dags/federated_averaging.json was stale and has been regenerated; review and commit it"
        );
    }
}

#[test]
fn example_translates_into_learners_on_site_queues_and_an_all_of_aggregation() {
    let text = aiflow_dags::federated_averaging().unwrap().to_json_pretty();
    let wf = Document::parse(&text).unwrap().into_workflow().unwrap();
    let jobs: Vec<(&str, &str)> = wf
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.queue.as_str()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("init", "aggregator"),
            ("learn_site_a", "site-a"),
            ("learn_site_b", "site-b"),
            ("learn_site_c", "site-c"),
            ("aggregate", "aggregator"),
        ]
    );
    // One START per learner on the model event, one START of the aggregator.
    assert_eq!(wf.rules.len(), 4);
    assert!(wf.rules.iter().all(|r| r.action == Action::Start));
    let aggregate = wf.rules.iter().find(|r| r.job == "aggregate").unwrap();
    let RuleCondition::AllOf(parts) = &aggregate.condition else {
        panic!(
            "the aggregation waits for all_of: {:?}",
            aggregate.condition
        );
    };
    let keys: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            RuleCondition::Event(e) => Some(e.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        ["fl/update/site-a", "fl/update/site-b", "fl/update/site-c"]
    );
    assert!(matches!(&wf.finish_on, Some(RuleCondition::Event(e)) if e.key == "fl/done"));
    // Only init starts with an execution; nothing starts one by itself.
    assert!(wf.triggers.is_empty());
}
