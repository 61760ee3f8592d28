//! Start overhead of a container job beside the same job as a process: the time from the
//! executor's launch to the job's process running (its pid known), and to its end, for
//! `sh -c 'exit 0'` in the local image `aiflow-test/debian:bookworm` (`.ci/docker.sh` builds it)
//! and as a host process.
//!
//! `cargo run --release -p aiflow-scheduler --bin bench_containers -- [RUNS]` (default 30).

use std::time::{Duration, Instant};

use aiflow_scheduler::exec::container::{ContainerExecutor, ContainerSpec};
use aiflow_scheduler::{LaunchSpec, LocalExecutor, Outcome};
use aiflow_translator::Pull;

const IMAGE: &str = "aiflow-test/debian:bookworm";

fn spec(dir: &std::path::Path, i: usize) -> LaunchSpec {
    LaunchSpec {
        workflow: "bench".into(),
        execution: format!("bench-{}-{i}", std::process::id()),
        job: "j".into(),
        attempt: 1,
        commands: vec![vec!["sh".into(), "-c".into(), "exit 0".into()]],
        env: [("AIFLOW_JOB".to_string(), "j".to_string())].into(),
        working_dir: None,
        timeout: None,
        log_path: dir.join(format!("j-{i}.log")),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn line(what: &str, mut started: Vec<Duration>, mut ended: Vec<Duration>) {
    started.sort();
    ended.sort();
    println!(
        "{what:<10} launch->running p50 {:>7.1} ms  p99 {:>7.1} ms | launch->ended p50 {:>7.1} ms  p99 {:>7.1} ms",
        percentile(&started, 0.5).as_secs_f64() * 1e3,
        percentile(&started, 0.99).as_secs_f64() * 1e3,
        percentile(&ended, 0.5).as_secs_f64() * 1e3,
        percentile(&ended, 0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("aiflow-bench-containers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let containers = match ContainerExecutor::connect(None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no Docker engine: {e} (run .ci/docker.sh)");
            std::process::exit(2);
        }
    };
    let image = ContainerSpec {
        image: IMAGE.into(),
        pull: Some(Pull::Never),
        ..Default::default()
    };
    let local = LocalExecutor::default();
    let (mut ps, mut pe, mut cs, mut ce) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let t = Instant::now();
        let mut job = local.launch(spec(&dir, i)).await.expect("launch");
        job.started().await;
        ps.push(t.elapsed());
        assert_eq!(job.wait().await, Outcome::Succeeded);
        pe.push(t.elapsed());

        let t = Instant::now();
        let mut job = containers
            .launch(spec(&dir, runs + i), image.clone())
            .await
            .expect("launch");
        job.started().await;
        cs.push(t.elapsed());
        let out = job.wait().await;
        assert_eq!(out, Outcome::Succeeded, "container run {i}");
        ce.push(t.elapsed());
    }
    println!("{runs} runs each of sh -c 'exit 0'");
    line("process", ps, pe);
    line("container", cs, ce);
    let _ = std::fs::remove_dir_all(&dir);
}
