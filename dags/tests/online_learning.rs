//! The checked-in `dags/online_learning.json` is exactly what the SDK program writes, and it
//! validates and translates.

use aiflow_translator::{Document, WorkflowTrigger};

#[test]
fn checked_in_json_matches_the_sdk_program() {
    let generated = aiflow_dags::online_learning()
        .expect("valid graph")
        .to_json_pretty();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/online_learning.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in != generated {
        std::fs::write(path, &generated).expect("write dags/online_learning.json");
        panic!(
            "dags/online_learning.json was stale and has been regenerated; review and commit it"
        );
    }
}

#[test]
fn example_translates_into_the_expected_jobs_and_rules() {
    let text = aiflow_dags::online_learning().unwrap().to_json_pretty();
    let wf = Document::parse(&text).unwrap().into_workflow().unwrap();
    let jobs: Vec<&str> = wf.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(jobs, ["ingest", "train", "evaluate", "deploy", "predictor"]);
    let ingest = wf.job("ingest").unwrap();
    let nodes: Vec<&str> = ingest.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, ["ingest", "featurise"]);
    assert!(wf.job("predictor").unwrap().streaming);
    assert_eq!(wf.rules.len(), 4);
    assert!(
        matches!(&wf.triggers[0], WorkflowTrigger::Cron { schedule, .. } if schedule == "0 0 */6 * * *")
    );
}
