//! Container jobs with `mounts` (on the server and on a worker), the job example of
//! docs/containers.md, and `aiflow demo --image`: a real Docker engine and the local image
//! `aiflow-test/debian:bookworm` (`.ci/docker.sh`). Without them these tests say so loudly and
//! pass without checking anything.

use crate::common;
use crate::containers::{IMAGE, containers_of, docker, engine_ready, job, start};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{embedded, post, wait_for};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_aiflow");

/// A job that reads a read-only mount and writes into a read-write one.
fn mounted_job(input: &Path, out: &Path) -> Value {
    json!({"image": IMAGE, "pull": "never",
        "mounts": [format!("{}:/out", out.display()), format!("{}:/in:ro", input.display())],
        "command": ["sh", "-c", "cat /in/hello.txt > /out/result.txt; echo written by $AIFLOW_JOB >> /out/result.txt; \
            if touch /in/nope 2>/dev/null; then echo in is writable; else echo in is read-only; fi"]})
}

/// A folder `in` holding `hello.txt` and an empty folder `out`, under `dir`.
fn folders(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (input, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(input.join("hello.txt"), "from the host\n").unwrap();
    (input, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_writes_into_a_mounted_host_folder() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = folders(dir.path());
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let workflows = format!("{base}/api/v1/workflows");

    // Bad mounts: 422 naming the mount and the reason.
    for (job, field, words) in [
        (
            json!({"image": IMAGE, "command": ["true"], "mounts": ["/ok:/ok", "relative:/x"]}),
            "nodes[0].job.mounts[1]",
            "the host path \"relative\" is not absolute",
        ),
        (
            json!({"image": IMAGE, "command": ["true"], "mounts": ["/a:/b:rx"]}),
            "nodes[0].job.mounts[0]",
            "only ro and rw are allowed",
        ),
        (
            json!({"command": ["true"], "mounts": ["/a:/b"]}),
            "nodes[0].job.mounts[0]",
            "mounts only apply to a container job",
        ),
    ] {
        let resp = http
            .post(&workflows)
            .json(&json!({"name": "bad", "nodes": [{"name": "a", "job": job}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(words)),
            "{words}: {body}"
        );
    }

    post(
        &http,
        &workflows,
        &json!({"name": "mounted", "nodes": [{"name": "write", "job": mounted_job(&input, &out)}]}),
    )
    .await;
    let id = start(&http, &base, "mounted").await;
    wait_for("the job to end", Duration::from_secs(60), || async {
        matches!(
            job(&http, &base, &id, "write").await["state"].as_str(),
            Some("SUCCEEDED" | "FAILED")
        )
    })
    .await;
    let log = common::job_log(&http, &base, &id, "write", "").await;
    assert_eq!(
        job(&http, &base, &id, "write").await["state"],
        "SUCCEEDED",
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("result.txt")).unwrap(),
        "from the host\nwritten by write\n",
        "the file the container wrote is on the host"
    );
    assert!(log.contains("in is read-only"), "{log}");
    assert!(!input.join("nope").exists());
    assert!(
        containers_of(&id).is_empty(),
        "ended containers are removed"
    );
}

/// The mounts travel with the task to a worker; the paths are the worker's machine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gives_the_container_its_mounts() {
    if !engine_ready() {
        return;
    }
    let Some(c) = common::Cluster::start("mounts").await else {
        return;
    };
    let (input, out) = folders(c.dir.path());
    let (_s1, u) = c.leading_server("s1").await;
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let _boxes = c.worker_on("boxes", &["default"], &u, &["--containers"]);
    post(
        &http,
        &format!("{u}/api/v1/workflows"),
        &json!({"name": "mounted", "nodes": [{"name": "write", "job": mounted_job(&input, &out)}]}),
    )
    .await;
    let id = start(&http, &u, "mounted").await;
    wait_for("the job to end", Duration::from_secs(60), || async {
        matches!(
            job(&http, &u, &id, "write").await["state"].as_str(),
            Some("SUCCEEDED" | "FAILED")
        )
    })
    .await;
    let log = common::job_log(&http, &u, &id, "write", "").await;
    assert_eq!(
        job(&http, &u, &id, "write").await["state"],
        "SUCCEEDED",
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("result.txt")).unwrap(),
        "from the host\nwritten by write\n"
    );
    assert!(log.contains("in is read-only"), "{log}");
}

/// The fenced blocks of `lang` in a Markdown text, in order.
fn fenced<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let open = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body.find("```").expect("a closed fence");
        blocks.push(&body[..end]);
        rest = &body[end..];
    }
    blocks
}

/// The first JSON example of docs/containers.md is posted as it stands (its image is the test
/// image; nothing is substituted), and its log is the one the doc shows after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_of_docs_containers_md_runs() {
    if !engine_ready() {
        return;
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/containers.md"))
        .unwrap();
    let example: Value =
        serde_json::from_str(fenced(&doc, "json")[0]).expect("the example is JSON");
    let expected = fenced(&doc, "text")[0];
    let name = example["name"].as_str().unwrap().to_string();
    let job_name = example["nodes"][0]["name"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(&dir.path().join("data"), &[]);
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    post(&http, &format!("{base}/api/v1/workflows"), &example).await;
    let id = start(&http, &base, &name).await;
    wait_for("the example to end", Duration::from_secs(60), || async {
        matches!(
            job(&http, &base, &id, &job_name).await["state"].as_str(),
            Some("SUCCEEDED" | "FAILED")
        )
    })
    .await;
    let log = common::job_log(&http, &base, &id, &job_name, "").await;
    assert_eq!(
        job(&http, &base, &id, &job_name).await["state"],
        "SUCCEEDED",
        "the doc says it succeeds: {log}"
    );
    let lines: Vec<&str> = log.lines().collect();
    for want in expected.replace("<execution>", &id).lines() {
        assert!(
            lines.contains(&want),
            "docs/containers.md says the log holds {want:?}; it is:\n{log}"
        );
    }
}

/// `aiflow demo --image`: every job of the example runs in a container, the model is deployed,
/// and no container of the demo is left when it exits.
#[test]
fn demo_in_containers_deploys_the_model() {
    if !engine_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["demo", "--image", IMAGE, "--listen", "127.0.0.1:0"])
        .args(["--timeout-s", "120", "--data-dir"])
        .arg(&data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run aiflow demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(
        stderr.contains(&format!("Every job runs in a container from {IMAGE}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("fraud_detector version 1 deployed"),
        "{stderr}"
    );
    let execution = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("execution"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the execution id in the summary")
        .to_string();
    // Each job ran in a container from the image (the executor's line in its log), and the
    // scripts ran in it (their own lines follow).
    let logs = data.join("logs").join(&execution);
    for (job, says) in [
        (
            "ingest",
            "[ingest] registered dataset online_features version 1",
        ),
        ("train", "[train] trained fraud_detector version 1"),
        ("evaluate", "[evaluate]"),
        (
            "deploy",
            "[deploy] deployed fraud_detector version 1 as production",
        ),
        ("predictor", ""),
    ] {
        let log = std::fs::read_to_string(logs.join(format!("{job}-1.log")))
            .unwrap_or_else(|e| panic!("{job}-1.log: {e}"));
        assert!(
            log.contains(&format!(
                "container aiflow-{execution}-{job}-1 from {IMAGE}: sh dags/jobs/"
            )),
            "{job}: {log}"
        );
        assert!(log.contains(says), "{job}: {log}");
    }
    // The predictor was restarted by the deployment, and its last container stopped at the end.
    let predictor = std::fs::read_to_string(logs.join("predictor-2.log")).unwrap();
    assert!(
        predictor.contains(&format!(
            "container aiflow-{execution}-predictor-2 from {IMAGE}"
        )),
        "{predictor}"
    );
    assert!(
        containers_of(&execution).is_empty(),
        "the demo's containers are gone: {}",
        docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.aiflow.execution={execution}")
        ])
    );
    // The model file the train job wrote through the mount is on the host.
    assert!(
        data.join("work/models/fraud_detector-v1.txt").is_file(),
        "the jobs' files are in the data folder"
    );
}
