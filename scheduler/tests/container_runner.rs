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

/// `docker …` on the command line, for what the test sets up around the executor.
fn docker_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command")
}

#[tokio::test]
async fn a_named_network_lets_the_job_reach_a_service_by_its_name() {
    let Some(mut exec) = engine().await else {
        return;
    };
    // A user-defined network with a "server" on it, as a Compose stack has.
    let network = unique("aiflow-test-net");
    let server = unique("aiflow-test-srv");
    let made = docker_cli(&["network", "create", &network]);
    assert!(made.status.success(), "{made:?}");
    let ran = docker_cli(&[
        "run",
        "-d",
        "--rm",
        "--network",
        &network,
        "--name",
        &server,
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(ran.status.success(), "{ran:?}");
    let dir = tempfile::tempdir().unwrap();
    let look = format!("getent hosts {server} && echo found");

    // The host's network (the default) knows no such name.
    let s = spec(dir.path(), &unique("hostnet"), &[&["sh", "-c", &look]]);
    let log = s.log_path.clone();
    let on_host = exec.launch(s, image()).await.unwrap().wait().await;
    let host_text = std::fs::read_to_string(&log).unwrap();

    // On the named network the engine's DNS answers it.
    exec.network = Some(network.clone());
    let dir2 = tempfile::tempdir().unwrap();
    let s = spec(dir2.path(), &unique("namednet"), &[&["sh", "-c", &look]]);
    let log = s.log_path.clone();
    let on_network = exec.launch(s, image()).await.unwrap().wait().await;
    let text = std::fs::read_to_string(&log).unwrap();

    let _ = docker_cli(&["rm", "-f", &server]);
    let _ = docker_cli(&["network", "rm", &network]);
    // (The log's first line repeats the command, so only whole lines count.)
    let found = |t: &str| t.lines().any(|l| l == "found");
    assert!(
        matches!(on_host, Outcome::Exited { .. }) && !found(&host_text),
        "{on_host:?}\n{host_text}"
    );
    assert_eq!(on_network, Outcome::Succeeded, "{text}");
    let answer = text
        .lines()
        .any(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.ends_with(&server));
    assert!(answer && found(&text), "{text}");
}

/// A container a previous server started (as `docker run` leaves it: the labels an attempt's
/// container carries, with the GPUs it was given) is re-adopted by the server's executor with
/// its devices busy: a job asking for a GPU meanwhile waits (it starts only once the container
/// has ended, on a freed device), and a job asking for more GPUs than there are fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_adopted_container_keeps_its_gpus_and_a_job_waits_for_them() {
    use aiflow_scheduler::exec::container::{
        LABEL_ATTEMPT, LABEL_EXECUTION, LABEL_GPUS, LABEL_JOB, LABEL_LAST, LABEL_LOG,
    };
    use aiflow_scheduler::exec::gpus::Gpus;
    use aiflow_scheduler::exec::routed::{Containers, Routed};
    use aiflow_scheduler::exec::{
        Adoption, AttemptId, Executor, LaunchRequest, LocalProcesses, Status,
    };
    use futures::StreamExt as _;
    if engine().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let execution = unique("gpus");
    let log = dir.path().join("boxed-1.log");
    let labels = [
        format!("{LABEL_EXECUTION}={execution}"),
        format!("{LABEL_JOB}=boxed"),
        format!("{LABEL_ATTEMPT}=1"),
        format!("{LABEL_LOG}={}", log.display()),
        format!("{LABEL_LAST}=true"),
        format!("{LABEL_GPUS}=0,1"),
    ];
    let mut args = vec!["run".to_string(), "-d".into()];
    for l in &labels {
        args.extend(["--label".to_string(), l.clone()]);
    }
    args.extend([
        IMAGE.to_string(),
        "sh".into(),
        "-c".into(),
        "echo up; sleep 4; exit 2".into(),
    ]);
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .expect("docker run");
    assert!(out.status.success(), "{out:?}");
    let gpus = Gpus::new(2);
    let routed = Routed::new(
        std::sync::Arc::new(LocalProcesses::new(
            aiflow_scheduler::LocalExecutor::default(),
            dir.path().to_path_buf(),
            Vec::new(),
        )),
        Containers::new(None, Duration::from_millis(500), None),
        gpus.clone(),
    );
    let mut reports = routed.reports();
    let boxed = AttemptId {
        execution: execution.clone(),
        job: "boxed".into(),
        attempt: 1,
        row: None,
    };
    assert_eq!(
        routed.adopt(&boxed, true).await,
        Adoption::Following { started: true }
    );
    assert_eq!(
        gpus.free(),
        0,
        "the re-adopted container holds both devices"
    );
    assert_eq!(
        gpus.holders().get("1").map(String::as_str),
        Some(format!("{execution}/boxed/1").as_str())
    );
    let request = |job: &str, wanted: u32| {
        let job_doc: aiflow_translator::Job = serde_json::from_value(serde_json::json!({
            "name": job, "nodes": [], "resources": {"gpus": wanted}
        }))
        .unwrap();
        let mut s = spec(
            dir.path(),
            &execution,
            &[&["sh", "-c", "echo devices=$CUDA_VISIBLE_DEVICES"]],
        );
        s.job = job.into();
        s.log_path = dir.path().join(format!("{job}-1.log"));
        LaunchRequest {
            id: AttemptId {
                execution: execution.clone(),
                job: job.into(),
                attempt: 1,
                row: None,
            },
            job: std::sync::Arc::new(job_doc),
            spec: s,
        }
    };
    let too_many = routed.launch(request("huge", 3)).await.unwrap_err();
    assert!(
        too_many.contains("resources.gpus asks for 3 GPUs; this executor has 2"),
        "{too_many}"
    );
    let launched = Instant::now();
    routed
        .launch(request("gpu", 1))
        .await
        .expect("queued for a GPU");
    // The container's end (its real exit code) comes before the waiting job's start.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(job, s): &(String, Status)| job == "gpu" && matches!(s, Status::Ended { .. }))
    {
        let r = tokio::time::timeout(Duration::from_secs(30), reports.next())
            .await
            .expect("a report")
            .expect("reports go on");
        seen.push((r.id.job.clone(), r.status.clone()));
    }
    let at = |job: &str, ended: bool| {
        seen.iter()
            .position(|(j, s)| j == job && matches!(s, Status::Ended { .. }) == ended)
            .unwrap_or_else(|| panic!("{job} {ended}: {seen:?}"))
    };
    assert!(at("boxed", true) < at("gpu", false), "{seen:?}");
    assert!(
        matches!(&seen[at("boxed", true)].1, Status::Ended { outcome: Outcome::Exited { code: 2, message }, .. }
            if message.ends_with("exited with code 2")),
        "{seen:?}"
    );
    assert!(
        matches!(
            &seen[at("gpu", true)].1,
            Status::Ended {
                outcome: Outcome::Succeeded,
                ..
            }
        ),
        "{seen:?}"
    );
    assert!(
        launched.elapsed() > Duration::from_secs(2),
        "the job waited for the container's devices"
    );
    let text = std::fs::read_to_string(dir.path().join("gpu-1.log")).unwrap();
    assert!(text.contains("devices=0\n"), "{text}");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("up\n"),
        "the container's output is in its log"
    );
    assert_eq!(gpus.free(), 2, "all devices are free again");
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={LABEL_EXECUTION}={execution}"),
        ])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the container is removed");
}
