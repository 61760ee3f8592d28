//! CLI conventions against a real server: `execution start --wait` exit codes, `--output yaml`,
//! and `--limit`/`--cursor` paging of the lists.

mod common;

use std::process::{Command, Output};

use common::{BIN, embedded};
use serde_json::{Value, json};

fn cli(base: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--server", base])
        .env_remove("AIFLOW_TOKEN")
        .env_remove("AIFLOW_CA_CERT")
        .args(args)
        .output()
        .expect("run aiflow")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn submit(base: &str, dir: &std::path::Path, name: &str, command: &str) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(
        &file,
        json!({"name": name, "nodes": [{"name": "only", "job": {"command": ["sh", "-c", command]}}]})
            .to_string(),
    )
    .unwrap();
    let o = cli(base, &["workflow", "submit", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn execution_start_wait_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    submit(&base, dir.path(), "ok", "exit 0");
    submit(&base, dir.path(), "bad", "exit 7");
    submit(&base, dir.path(), "slow", "sleep 30");
    let start = |wf: &str, wait: &str| {
        cli(
            &base,
            &["--output", "json", "execution", "start", wf, "--wait", wait],
        )
    };
    let o = start("ok", "60");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["state"], "SUCCEEDED", "{e}");

    let o = start("bad", "60");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["state"], "FAILED", "{e}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ended FAILED"),
        "{}",
        text(&o)
    );

    let o = start("slow", "1");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("still"),
        "{}",
        text(&o)
    );
    // Stopped while waited for: 3 as well.
    let id = e["id"].as_str().unwrap().to_string();
    let o = cli(&base, &["execution", "stop", &id]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn yaml_output_and_paged_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    for p in ["alpha", "beta", "gamma"] {
        let o = cli(&base, &["project", "create", p, "--description", "a: b"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = cli(&base, &["--output", "yaml", "project", "show", "beta"]);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = String::from_utf8_lossy(&o.stdout);
    assert!(yaml.contains("name: \"beta\"\n"), "{yaml}");
    assert!(yaml.contains("description: \"a: b\"\n"), "{yaml}");
    assert!(!yaml.trim_start().starts_with('{'), "{yaml}");

    // Projects, two pages of one and two.
    let o = cli(
        &base,
        &["--output", "json", "project", "list", "--limit", "1"],
    );
    let first: Value = json_of(&o);
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let o = cli(
        &base,
        &["--output", "json", "project", "list", "--cursor", &cursor],
    );
    let rest: Value = json_of(&o);
    assert_eq!(rest["items"].as_array().unwrap().len(), 2, "{rest}");

    // Workflows and executions page the same way.
    submit(&base, dir.path(), "w1", "exit 0");
    submit(&base, dir.path(), "w2", "exit 0");
    let o = cli(
        &base,
        &["--output", "json", "workflow", "list", "--limit", "1"],
    );
    let first: Value = json_of(&o);
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let o = cli(
        &base,
        &["--output", "json", "workflow", "list", "--cursor", &cursor],
    );
    let rest: Value = json_of(&o);
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);

    for wf in ["w1", "w1"] {
        let o = cli(&base, &["execution", "start", wf, "--wait", "60"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = cli(
        &base,
        &["--output", "json", "execution", "list", "--limit", "1"],
    );
    let first: Value = json_of(&o);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let o = cli(
        &base,
        &["--output", "json", "execution", "list", "--cursor", &cursor],
    );
    let rest: Value = json_of(&o);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert_ne!(first["items"][0]["id"], rest["items"][0]["id"]);
}
