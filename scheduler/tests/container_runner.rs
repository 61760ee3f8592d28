//! The container executor against a real Docker engine (`.ci/docker.sh` starts one and builds the
//! local image `aiflow-test/debian:bookworm`). Without an engine every test says so loudly and
//! passes without checking anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aiflow_scheduler::exec::container::{ContainerExecutor, ContainerSpec, container_name};
use aiflow_scheduler::{LaunchSpec, Outcome};
use aiflow_translator::Pull;

const IMAGE: &str = "aiflow-test/debian:bookworm";

/// The engine and the test image, or `None` after a loud notice.
async fn engine() -> Option<ContainerExecutor> {
    let exec = match ContainerExecutor::connect(None).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED: no Docker engine ({e}); run .ci/docker.sh to start one ***\n"
            );
            return None;
        }
    };
    if exec.docker().inspect_image(IMAGE).await.is_err() {
        eprintln!(
            "\n*** SKIPPED: the image {IMAGE} is missing; run .ci/docker.sh to build it ***\n"
        );
        return None;
    }
    let mut exec = exec;
    exec.grace = Duration::from_millis(500);
    Some(exec)
}

fn spec(dir: &std::path::Path, execution: &str, commands: &[&[&str]]) -> LaunchSpec {
    LaunchSpec {
        workflow: "wf".into(),
        execution: execution.into(),
        job: "train".into(),
        attempt: 1,
        commands: commands
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect(),
        env: BTreeMap::from([
            ("AIFLOW_JOB".to_string(), "train".to_string()),
            ("GREETING".to_string(), "hello there".to_string()),
        ]),
        working_dir: Some("/tmp".into()),
        timeout: None,
        log_path: dir.join("train-1.log"),
    }
}

fn image() -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.into(),
        pull: Some(Pull::Never),
        ..Default::default()
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), uuid_ish())
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_007
}

async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > until {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn output_environment_and_exit_code_of_a_container() {
    let Some(exec) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let execution = unique("exit");
    let s = spec(
        dir.path(),
        &execution,
        &[
            &["sh", "-c", "echo first $AIFLOW_JOB \"$GREETING\" in $(pwd)"],
            &["sh", "-c", "echo hi; echo oops >&2; exit 3"],
            &["sh", "-c", "echo never"],
        ],
    );
    let log = s.log_path.clone();
    let out = exec.launch(s, image()).await.unwrap().wait().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        matches!(&out, Outcome::Exited { code: 3, message } if message.ends_with("exited with code 3")),
        "{out:?}\n{text}"
    );
    assert!(text.contains("first train hello there in /tmp\n"), "{text}");
    assert!(text.contains("hi\n") && text.contains("oops\n"), "{text}");
    assert!(
        !text.contains("never\n"),
        "the sequence stops at the failure: {text}"
    );
    assert!(
        exec.containers_of(&execution).await.unwrap().is_empty(),
        "every container of the attempt is removed"
    );
}

#[tokio::test]
async fn no_command_runs_the_images_own_and_success_is_success() {
    let Some(exec) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), &unique("own"), &[]);
    s.commands.clear();
    // The test image's own command is /bin/sh, which ends at once with no input.
    let out = exec.launch(s, image()).await.unwrap().wait().await;
    assert_eq!(out, Outcome::Succeeded);
}

#[tokio::test]
async fn limits_are_set_and_a_stop_removes_the_container() {
    let Some(exec) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let execution = unique("stop");
    let s = spec(
        dir.path(),
        &execution,
        &[&["sh", "-c", "trap '' TERM; echo ready; sleep 60"]],
    );
    let log = s.log_path.clone();
    let name = container_name(&s, 0);
    let c = ContainerSpec {
        cpus: Some(0.5),
        memory_mb: Some(64),
        ..image()
    };
    let mut job = exec.launch(s, c).await.unwrap();
    assert!(job.started().await);
    let text = wait_for_log(&log, "ready\n").await;
    assert!(text.contains("ready\n"), "{text}");
    let inspect = exec.docker().inspect_container(&name, None).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["io.aiflow.execution"], execution);
    assert_eq!(labels["io.aiflow.job"], "train");
    assert_eq!(labels["io.aiflow.attempt"], "1");
    let started = Instant::now();
    job.stop();
    let out = job.wait().await;
    assert_eq!(out, Outcome::Stopped);
    assert!(started.elapsed() < Duration::from_secs(15));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGTERM") && text.contains("SIGKILL"),
        "{text}"
    );
    assert!(
        exec.docker().inspect_container(&name, None).await.is_err(),
        "the container is removed"
    );
}

#[tokio::test]
async fn a_timeout_stops_and_removes_the_container() {
    let Some(exec) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let execution = unique("timeout");
    let mut s = spec(dir.path(), &execution, &[&["sleep", "60"]]);
    s.timeout = Some(Duration::from_secs(1));
    let out = exec.launch(s, image()).await.unwrap().wait().await;
    assert_eq!(out, Outcome::TimedOut);
    assert!(exec.containers_of(&execution).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_image_fails_naming_it_and_the_engines_reason() {
    let Some(exec) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &unique("missing"), &[&["true"]]);
    let log = s.log_path.clone();
    let never = ContainerSpec {
        image: "aiflow-test/no-such-image:1".into(),
        pull: Some(Pull::Never),
        ..Default::default()
    };
    let out = exec.launch(s.clone(), never).await.unwrap().wait().await;
    assert!(
        matches!(&out, Outcome::Failed { message } if message.contains("aiflow-test/no-such-image:1") && message.contains("pull is never")),
        "{out:?}"
    );
    // Pulling from a registry that cannot be reached: the engine's reason is in the log.
    let pull = ContainerSpec {
        image: "127.0.0.1:1/aiflow/absent:1".into(),
        pull: None,
        ..Default::default()
    };
    let out = exec.launch(s, pull).await.unwrap().wait().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        matches!(&out, Outcome::Failed { message } if message.starts_with("cannot pull the image 127.0.0.1:1/aiflow/absent:1: ") && message.len() > 60),
        "{out:?}"
    );
    assert!(
        text.contains("cannot pull the image 127.0.0.1:1/aiflow/absent:1"),
        "{text}"
    );
}
