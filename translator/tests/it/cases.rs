//! Validation and translation, case by case.

use aiflow_translator::{
    Action, Document, RuleCondition, StatusCondition, ValidationErrors, WorkflowTrigger, translate,
    validate,
};
use serde_json::json;

use crate::graph;

fn locations(e: &ValidationErrors) -> Vec<&str> {
    e.problems.iter().map(|p| p.location.as_str()).collect()
}

fn cmd() -> serde_json::Value {
    json!({"command": ["true"]})
}

#[test]
fn cycle_duplicate_and_bad_cron_are_all_reported() {
    let g = graph(json!({
        "name": "bad",
        "nodes": [
            {"name": "a", "job": cmd()}, {"name": "b"}, {"name": "c"}, {"name": "a", "job": cmd()}
        ],
        "data_edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "a"}],
        "triggers": [{"cron": "0 99 * * *"}]
    }));
    let e = validate(&g).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("nodes[3].name: duplicate node name \"a\""),
        "{text}"
    );
    assert!(
        text.contains("data edges form a cycle: a -> b -> c -> a"),
        "{text}"
    );
    assert!(
        text.contains("triggers[0].cron: invalid cron expression"),
        "{text}"
    );
    assert_eq!(e.problems.len(), 3, "{text}");
}

#[test]
fn unknown_references_and_words_name_their_place() {
    let g = graph(json!({
        "name": "refs",
        "nodes": [{"name": "a", "op": "dance", "job": cmd()}],
        "data_edges": [{"from": "a", "to": "ghost"}],
        "control_edges": [
            {"to": "nobody", "action": "JUMP", "life": "SOMETIMES",
             "condition": {"all_of": [
                {"event": {"key": ""}},
                {"job_status": {"node": "phantom", "status": "DONE"}}
             ]}}
        ],
        "triggers": [{"cron": "* * * * *", "timezone": "Mars/Olympus"}, {"interval_s": 0}, {}]
    }));
    let e = validate(&g).unwrap_err();
    let locs = locations(&e);
    for expected in [
        "nodes[0].op",
        "data_edges[0].to",
        "control_edges[0].to",
        "control_edges[0].action",
        "control_edges[0].life",
        "control_edges[0].condition.all_of[0].event.key",
        "control_edges[0].condition.all_of[1].job_status.node",
        "control_edges[0].condition.all_of[1].job_status.status",
        "triggers[0].timezone",
        "triggers[1].interval_s",
        "triggers[2]",
    ] {
        assert!(locs.contains(&expected), "missing {expected} in {locs:?}");
    }
}

#[test]
fn conflicting_executor_settings_in_one_job() {
    let g = graph(json!({
        "name": "conflict",
        "nodes": [
            {"name": "a", "job": {"command": ["x"], "timeout_s": 60, "env": {"K": "1"}}},
            {"name": "b", "job": {"timeout_s": 90, "env": {"K": "2"}, "queue": "gpu"}},
            {"name": "c", "job": {"queue": "cpu"}}
        ],
        "data_edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    }));
    let e = validate(&g).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("nodes[1].job.timeout_s: timeout_s 90 conflicts with 60 set by node \"a\""),
        "{text}"
    );
    assert!(text.contains("nodes[1].job.env.K"), "{text}");
    assert!(text.contains("nodes[2].job.queue"), "{text}");
}

#[test]
fn job_without_command_and_streaming_with_two() {
    let g = graph(json!({
        "name": "cmds",
        "nodes": [
            {"name": "a"},
            {"name": "s1", "job": {"command": ["x"], "streaming": true}},
            {"name": "s2", "job": {"command": ["y"]}}
        ],
        "data_edges": [{"from": "s1", "to": "s2"}]
    }));
    let e = validate(&g).unwrap_err();
    let locs = locations(&e);
    assert!(locs.contains(&"nodes[0].job.command"), "{locs:?}");
    assert!(locs.contains(&"nodes[1].job.streaming"), "{locs:?}");
}

#[test]
fn components_become_jobs_in_data_order() {
    let g = graph(json!({
        "name": "order",
        "nodes": [
            {"name": "c", "job": {"command": ["c"]}},
            {"name": "a", "job": {"command": ["a"], "retries": 3}},
            {"name": "b", "job": {"command": ["b"], "retries": 3}},
            {"name": "x", "job": {"command": ["x"], "name": "solo"}}
        ],
        "data_edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
        "control_edges": [
            {"to": "x", "action": "START", "condition": {"job_status": {"node": "b", "status": "SUCCEEDED"}}}
        ]
    }));
    let wf = translate(&g).unwrap();
    assert_eq!(wf.jobs.len(), 2);
    let abc: Vec<&str> = wf.jobs[0].nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(abc, ["a", "b", "c"]);
    assert_eq!(
        wf.jobs[0].name, "a",
        "named after its first node in data order"
    );
    assert_eq!(wf.jobs[0].retries, 3);
    assert_eq!(wf.jobs[0].commands().count(), 3);
    assert_eq!(wf.jobs[1].name, "solo");
    assert_eq!(wf.rules.len(), 1);
    assert_eq!(wf.rules[0].job, "solo");
    assert_eq!(wf.rules[0].action, Action::Start);
    match &wf.rules[0].condition {
        RuleCondition::JobStatus(s) => {
            assert_eq!(s.job, "a", "job_status names the job holding node b");
            assert_eq!(s.status, StatusCondition::Succeeded);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn triggers_are_parsed() {
    let g = graph(json!({
        "name": "trig",
        "nodes": [{"name": "a", "job": cmd()}],
        "triggers": [
            {"cron": "30 2 * * 0", "timezone": "Europe/Paris", "catchup": "latest"},
            {"interval_s": 60},
            {"event": {"key": "dataset/raw/*"}, "delay_s": 5},
            {"all_of": [{"cron": "0 * * * *"}, {"event": {"key": "x"}}]}
        ]
    }));
    let wf = translate(&g).unwrap();
    assert!(
        matches!(&wf.triggers[0], WorkflowTrigger::Cron { schedule, timezone, .. }
        if schedule == "0 30 2 * * 1" && timezone == "Europe/Paris")
    );
    assert!(matches!(
        &wf.triggers[1],
        WorkflowTrigger::Interval { interval_s: 60 }
    ));
    assert!(matches!(
        &wf.triggers[2],
        WorkflowTrigger::Event { delay_s: 5, .. }
    ));
    assert!(matches!(&wf.triggers[3], WorkflowTrigger::AllOf { all_of } if all_of.len() == 2));
}

#[test]
fn syntax_and_type_errors_name_their_place() {
    let e = Document::parse("{\"name\": \"x\", \"nodes\": [").unwrap_err();
    assert!(e.problems[0].location.starts_with("line 1"), "{e}");
    let e =
        Document::parse(r#"{"name": "x", "nodes": [{"name": "a", "job": {"timeout_s": "soon"}}]}"#)
            .unwrap_err();
    assert_eq!(e.problems[0].location, "nodes[0].job.timeout_s", "{e}");
    let e = Document::parse(r#"{"name": "x", "nodes": [], "colour": 1}"#).unwrap_err();
    assert!(e.problems[0].message.contains("colour"), "{e}");
}

#[test]
fn workflow_documents_round_trip_and_are_checked() {
    let g = graph(json!({
        "name": "wf",
        "nodes": [{"name": "a", "job": cmd()}, {"name": "b", "job": cmd()}],
        "control_edges": [{"to": "b", "action": "START", "condition": {"job_status": {"node": "a", "status": "SUCCEEDED"}}}]
    }));
    let wf = translate(&g).unwrap();
    let text = wf.to_json_pretty();
    let back = Document::parse(&text).unwrap().into_workflow().unwrap();
    assert_eq!(back, wf);
    // A rule naming an unknown job is reported.
    let mut broken: serde_json::Value = serde_json::from_str(&text).unwrap();
    broken["rules"][0]["job"] = json!("zzz");
    broken["rules"][0]["condition"]["job_status"]["job"] = json!("yyy");
    let e = Document::from_value(broken)
        .unwrap()
        .into_workflow()
        .unwrap_err();
    let locs = locations(&e);
    assert!(locs.contains(&"rules[0].job"), "{locs:?}");
    assert!(
        locs.contains(&"rules[0].condition.job_status.job"),
        "{locs:?}"
    );
}

#[test]
fn translation_snapshot_of_the_example_shape() {
    let g = graph(json!({
        "name": "snap",
        "project": "demo",
        "nodes": [
            {"name": "ingest", "op": "ingest", "job": {"command": ["sh", "-c", "echo ingest"], "env": {"B": "2", "A": "1"}}},
            {"name": "train", "op": "train", "job": {"command": ["train"]}},
            {"name": "serve", "op": "predict", "job": {"command": ["serve"], "streaming": true}}
        ],
        "data_edges": [{"from": "ingest", "to": "train"}],
        "control_edges": [{"to": "serve", "action": "RESTART", "condition": {"event": {"key": "model/x", "event_type": "MODEL_DEPLOYED"}}}],
        "triggers": [{"cron": "0 */6 * * *", "timezone": "UTC"}]
    }));
    insta::assert_snapshot!(translate(&g).unwrap().to_json_pretty());
}

#[test]
fn finish_on_is_checked_and_translated_like_a_condition() {
    let g = graph(json!({
        "name": "rounds",
        "nodes": [{"name": "a", "job": cmd()}],
        "finish_on": {"any_of": [{"event": {"key": "fl/done"}},
                                 {"job_status": {"node": "a", "status": "FAILED"}}]}
    }));
    let wf = translate(&g).unwrap();
    let Some(RuleCondition::AnyOf(parts)) = &wf.finish_on else {
        panic!("finish_on translated: {:?}", wf.finish_on);
    };
    assert!(matches!(&parts[0], RuleCondition::Event(e) if e.key == "fl/done"));
    assert!(
        matches!(&parts[1], RuleCondition::JobStatus(j) if j.job == "a" && j.status == StatusCondition::Failed)
    );
    // The workflow document keeps it (and a workflow without it has none).
    let text = serde_json::to_string(&wf).unwrap();
    let back = Document::parse(&text).unwrap().into_workflow().unwrap();
    assert_eq!(back.finish_on, wf.finish_on);

    let bad = graph(json!({
        "name": "rounds",
        "nodes": [{"name": "a", "job": cmd()}],
        "finish_on": {"all_of": [{"event": {"key": ""}}, {"job_status": {"node": "ghost", "status": "SUCCEEDED"}}]}
    }));
    let e = validate(&bad).unwrap_err();
    let locs = locations(&e);
    assert!(locs.contains(&"finish_on.all_of[0].event.key"), "{locs:?}");
    assert!(
        locs.contains(&"finish_on.all_of[1].job_status.node"),
        "{locs:?}"
    );
}

#[test]
fn absurd_numbers_are_refused_naming_their_field() {
    use aiflow_translator::{MAX_DURATION_S, MAX_RETRY_BACKOFF_S};
    let huge = 10_000_000_000_000_u64;
    let g = graph(json!({
        "name": "absurd",
        "max_duration_s": huge,
        "nodes": [
            {"name": "a", "job": {"command": ["true"], "timeout_s": u64::MAX, "retries": 1_000_000,
                "retry_backoff_s": huge,
                "resources": {"cpus": 1e308, "memory_mb": u64::MAX, "gpus": u32::MAX}}},
            {"name": "b", "job": {"command": ["true"], "resources": {"cpus": -1.0}}},
        ],
        "triggers": [
            {"event": {"key": "k"}, "delay_s": huge},
            {"interval_s": huge},
            {"all_of": [{"interval_s": 60}, {"event": {"key": "k"}, "delay_s": huge}]},
        ]
    }));
    let e = translate(&g).unwrap_err();
    let mut locs = locations(&e);
    locs.sort_unstable();
    assert_eq!(
        locs,
        [
            "max_duration_s",
            "nodes[0].job.resources.cpus",
            "nodes[0].job.resources.gpus",
            "nodes[0].job.resources.memory_mb",
            "nodes[0].job.retries",
            "nodes[0].job.retry_backoff_s",
            "nodes[0].job.timeout_s",
            "nodes[1].job.resources.cpus",
            "triggers[0].delay_s",
            "triggers[1].interval_s",
            "triggers[2].all_of[1].delay_s",
        ],
        "{e}"
    );
    assert!(
        e.to_string().contains("over the largest allowed value"),
        "{e}"
    );

    // The largest allowed values pass.
    let g = graph(json!({
        "name": "big",
        "max_duration_s": MAX_DURATION_S,
        "nodes": [{"name": "a", "job": {"command": ["true"], "timeout_s": MAX_DURATION_S,
            "retries": 1000, "retry_backoff_s": MAX_RETRY_BACKOFF_S,
            "resources": {"cpus": 4096.0, "memory_mb": 16_777_216, "gpus": 1024}}}],
        "triggers": [{"event": {"key": "k"}, "delay_s": MAX_DURATION_S}, {"interval_s": MAX_DURATION_S}]
    }));
    let wf = translate(&g).unwrap();

    // A workflow document (written by hand, or stored by an older server) is checked the
    // same way.
    let mut doc = serde_json::to_value(&wf).unwrap();
    doc["jobs"][0]["retry_backoff_s"] = json!(huge);
    doc["jobs"][0]["timeout_s"] = json!(u64::MAX);
    doc["jobs"][0]["resources"]["cpus"] = json!(1e308);
    doc["triggers"][0]["delay_s"] = json!(huge);
    doc["triggers"][1]["interval_s"] = json!(huge);
    doc["max_duration_s"] = json!(huge);
    let e = Document::from_value(doc)
        .unwrap()
        .into_workflow()
        .unwrap_err();
    let mut locs = locations(&e);
    locs.sort_unstable();
    assert_eq!(
        locs,
        [
            "jobs[0].resources.cpus",
            "jobs[0].retry_backoff_s",
            "jobs[0].timeout_s",
            "max_duration_s",
            "triggers[0].delay_s",
            "triggers[1].interval_s",
        ],
        "{e}"
    );
}

#[test]
fn container_image_and_pull_are_translated_and_checked() {
    // A job with an image and no command runs the image's own; pull is carried over.
    let g = graph(json!({
        "name": "boxed",
        "nodes": [
            {"name": "train", "job": {"image": "registry.local:5000/ml/trainer:v1.2", "pull": "never",
             "command": ["python3", "train.py"]}},
            {"name": "serve", "job": {"image": "aiflow-test/debian:bookworm"}}
        ]
    }));
    let wf = translate(&g).unwrap();
    assert_eq!(
        wf.jobs[0].image.as_deref(),
        Some("registry.local:5000/ml/trainer:v1.2")
    );
    assert_eq!(wf.jobs[0].pull, Some(aiflow_translator::Pull::Never));
    assert_eq!(
        wf.jobs[1].image.as_deref(),
        Some("aiflow-test/debian:bookworm")
    );
    assert_eq!(wf.jobs[1].pull, None);
    assert_eq!(wf.jobs[1].commands().count(), 0);
    let back = Document::parse(&wf.to_json_pretty())
        .unwrap()
        .into_workflow()
        .unwrap();
    assert_eq!(back, wf);

    // Bad references, an unknown pull, pull without image: each named by its field.
    let g = graph(json!({
        "name": "bad",
        "nodes": [
            {"name": "a", "job": {"image": "Upper/Case", "command": ["true"]}},
            {"name": "b", "job": {"image": "ok:bad tag", "command": ["true"]}},
            {"name": "c", "job": {"image": "debian", "pull": "sometimes", "command": ["true"]}},
            {"name": "d", "job": {"pull": "always", "command": ["true"]}},
            {"name": "e", "job": {"image": "", "command": ["true"]}},
            {"name": "f", "job": {"command": ["true"]}},
            {"name": "g", "job": {"image": "debian:bookworm"}}
        ],
        "data_edges": [{"from": "f", "to": "g"}]
    }));
    let e = validate(&g).unwrap_err();
    let text = e.to_string();
    let locs = locations(&e);
    assert!(locs.contains(&"nodes[0].job.image"), "{text}");
    assert!(text.contains("invalid name component \"Upper\""), "{text}");
    assert!(locs.contains(&"nodes[1].job.image"), "{text}");
    assert!(locs.contains(&"nodes[2].job.pull"), "{text}");
    assert!(
        text.contains("unknown pull \"sometimes\", expected one of if_missing, always, never"),
        "{text}"
    );
    assert!(locs.contains(&"nodes[3].job.pull"), "{text}");
    assert!(
        text.contains("pull only applies to a container job"),
        "{text}"
    );
    assert!(locs.contains(&"nodes[4].job.image"), "{text}");
    assert!(
        !locs
            .iter()
            .any(|l| l.starts_with("nodes[5]") || l.starts_with("nodes[6]")),
        "an image set on one node of a job applies to the whole job: {text}"
    );

    // The workflow document is checked the same way.
    let mut doc: serde_json::Value = serde_json::from_str(&wf.to_json_pretty()).unwrap();
    doc["jobs"][0]["image"] = json!("-bad");
    doc["jobs"][1]["pull"] = json!("weekly");
    let e = Document::from_value(doc)
        .unwrap()
        .into_workflow()
        .unwrap_err();
    let locs = locations(&e);
    assert!(locs.contains(&"jobs[0].image"), "{e}");
    assert!(locs.contains(&"jobs[1].pull"), "{e}");
}

#[test]
fn image_references_as_an_engine_takes_them() {
    use aiflow_translator::image_problem;
    for ok in [
        "debian",
        "debian:bookworm",
        "aiflow-test/debian:bookworm",
        "localhost/x",
        "registry.example:5000/team/trainer:v1.2_rc-3",
        "ghcr.io/a/b/c",
        "debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "debian:12@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(image_problem(ok), None, "{ok}");
    }
    for bad in [
        "",
        "Debian",
        "a//b",
        "debian:",
        "debian:.x",
        "debian@sha256:zz",
        "with space",
        "x/-y",
        "host:port/x",
    ] {
        assert!(image_problem(bad).is_some(), "{bad:?} should be refused");
    }
}

#[test]
fn env_from_names_plain_secrets_and_never_clashes_with_env() {
    let g = graph(json!({
        "name": "secrets",
        "nodes": [
            {"name": "a", "job": {"command": ["true"], "env": {"TOKEN": "x"},
              "env_from": {"TOKEN": "api-token", "DB": "../etc/shadow", "BAD-NAME": "ok"}}},
            {"name": "b", "job": {"command": ["true"], "env_from": {"K": "good.secret_1"}}}
        ]
    }));
    let e = validate(&g).unwrap_err();
    let text = e.to_string();
    let mut at = locations(&e);
    at.sort_unstable();
    assert_eq!(
        at,
        [
            "nodes[0].job.env_from.BAD-NAME",
            "nodes[0].job.env_from.DB",
            "nodes[0].job.env_from.TOKEN"
        ],
        "{text}"
    );
    assert!(
        text.contains("secret name \"../etc/shadow\" is invalid"),
        "{text}"
    );
    assert!(
        text.contains("TOKEN is set both in env and in env_from"),
        "{text}"
    );
    // A good one is kept in the workflow, by name.
    let ok = graph(json!({"name": "s", "nodes": [
        {"name": "b", "job": {"command": ["true"], "env_from": {"K": "good.secret_1"}}}]}));
    let w = translate(&ok).unwrap();
    assert_eq!(w.jobs[0].env_from["K"], "good.secret_1");
}

#[test]
fn container_mounts_are_translated_and_checked() {
    // Mounts of the nodes of one job are joined (a repeated one once); they reach the workflow.
    let g = graph(json!({
        "name": "mounted",
        "nodes": [
            {"name": "a", "job": {"image": "debian", "command": ["true"],
             "mounts": ["/srv/data:/data", "/opt/models:/models:ro"]}},
            {"name": "b", "job": {"mounts": ["/srv/data:/data", "/tmp/out:/out:rw"], "command": ["true"]}}
        ],
        "data_edges": [{"from": "a", "to": "b"}]
    }));
    let wf = translate(&g).unwrap();
    assert_eq!(
        wf.jobs[0].mounts,
        [
            "/srv/data:/data",
            "/opt/models:/models:ro",
            "/tmp/out:/out:rw"
        ]
    );
    let text = wf.to_json_pretty();
    let back = Document::parse(&text).unwrap().into_workflow().unwrap();
    assert_eq!(back, wf);
    // No mounts: the field is left out of the document.
    let plain = translate(&graph(
        json!({"name": "plain", "nodes": [{"name": "a", "job": {"image": "debian"}}]}),
    ))
    .unwrap();
    assert!(!plain.to_json_pretty().contains("mounts"));

    // Each bad mount is named by its index, with the reason.
    let g = graph(json!({
        "name": "bad",
        "nodes": [
            {"name": "a", "job": {"image": "debian", "command": ["true"], "mounts": [
                "relative:/x", "/h:in", "/h:/x:z", "/h", "/a:/b:ro:extra", "/h:/", "",
                "/h/../etc:/y", "/h:/ok", "/other:/ok/"
            ]}},
            {"name": "b", "job": {"command": ["true"], "mounts": ["/h:/x"]}},
            {"name": "c", "job": {"image": "debian", "command": ["true"], "mounts": ["/h:/same"]}},
            {"name": "d", "job": {"mounts": ["/other:/same:ro"]}}
        ],
        "data_edges": [{"from": "c", "to": "d"}]
    }));
    let e = validate(&g).unwrap_err();
    let text = e.to_string();
    let has = |loc: &str, words: &str| {
        assert!(
            e.problems
                .iter()
                .any(|p| p.location == loc && p.message.contains(words)),
            "{loc}: {words}\n{text}"
        );
    };
    has(
        "nodes[0].job.mounts[0]",
        "the host path \"relative\" is not absolute",
    );
    has(
        "nodes[0].job.mounts[1]",
        "the container path \"in\" is not absolute",
    );
    has("nodes[0].job.mounts[2]", "only ro and rw are allowed");
    has(
        "nodes[0].job.mounts[3]",
        "is not /host/path:/in/container[:ro|rw]",
    );
    has(
        "nodes[0].job.mounts[4]",
        "is not /host/path:/in/container[:ro|rw]",
    );
    has("nodes[0].job.mounts[5]", "the container path cannot be /");
    has("nodes[0].job.mounts[6]", "mount is empty");
    has("nodes[0].job.mounts[7]", "'..' component");
    has(
        "nodes[0].job.mounts[9]",
        "a second mount on the container path \"/ok\"",
    );
    has(
        "nodes[1].job.mounts[0]",
        "sets mounts but no image; mounts only apply to a container job",
    );
    has(
        "nodes[3].job.mounts[0]",
        "conflicts with \"/h:/same\" set by node \"c\"",
    );
    assert!(!locations(&e).contains(&"nodes[0].job.mounts[8]"), "{text}");

    // The workflow document is checked the same way.
    let mut doc: serde_json::Value = serde_json::from_str(&wf.to_json_pretty()).unwrap();
    doc["jobs"][0]["mounts"] = json!(["/h:/x", "/h:x"]);
    let e = Document::from_value(doc.clone())
        .unwrap()
        .into_workflow()
        .unwrap_err();
    assert_eq!(locations(&e), ["jobs[0].mounts[1]"], "{e}");
    doc["jobs"][0]
        .as_object_mut()
        .unwrap()
        .remove("image")
        .unwrap();
    doc["jobs"][0]["mounts"] = json!(["/h:/x"]);
    let e = Document::from_value(doc)
        .unwrap()
        .into_workflow()
        .unwrap_err();
    assert_eq!(locations(&e), ["jobs[0].mounts"], "{e}");
    assert!(
        e.to_string()
            .contains("mounts only apply to a container job")
    );
}

#[test]
fn mounts_parse_as_an_engine_takes_them() {
    use aiflow_translator::{MAX_MOUNTS, parse_mount};
    let m = parse_mount("/data:/data:ro").unwrap();
    assert_eq!((m.host, m.container, m.read_only), ("/data", "/data", true));
    let m = parse_mount("/srv/in:/in").unwrap();
    assert_eq!(
        (m.host, m.container, m.read_only),
        ("/srv/in", "/in", false)
    );
    assert!(!parse_mount("/a/b:/c/d:rw").unwrap().read_only);
    for bad in [
        "",
        "/a",
        "a:/b",
        "/a:b",
        "/a:/b:rx",
        "/a:/b:ro:z",
        "/a:/",
        "/a\n:/b",
    ] {
        assert!(parse_mount(bad).is_err(), "{bad:?} should be refused");
    }
    // Too many mounts on one node.
    let many: Vec<String> = (0..=MAX_MOUNTS).map(|i| format!("/h{i}:/c{i}")).collect();
    let e = validate(&graph(json!({
        "name": "many",
        "nodes": [{"name": "a", "job": {"image": "debian", "mounts": many}}]
    })))
    .unwrap_err();
    assert!(locations(&e).contains(&"nodes[0].job.mounts"), "{e}");
}
