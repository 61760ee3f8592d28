//! A short run of the load and soak tool (`aiflow-load`) against the real server: every kind of
//! request gets answered, none fails, and the server's memory figures are reported.

use std::process::Command;

#[test]
fn load_smoke_run_has_no_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_aiflow-load"))
        .args([
            "--duration",
            "3s",
            "--connections",
            "4",
            "--progress-s",
            "1",
        ])
        .arg("--aiflow")
        .arg(env!("CARGO_BIN_EXE_aiflow"))
        .arg("--dags")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/dags"))
        .output()
        .expect("run aiflow-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiflow-load failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "POST /events",
        "GET /events?limit=100",
        "GET /workflows",
        "GET /executions",
        "GET /models",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no line for {kind}:\n{text}"));
        let cols: Vec<&str> = line[kind.len()..].split_whitespace().collect();
        let sent: u64 = cols[0].parse().expect("request count");
        assert!(sent > 0, "{kind} sent nothing:\n{text}");
        assert_eq!(cols[1], "0", "{kind} had errors:\n{text}");
    }
    assert!(text.contains("throughput:"), "{text}");
    assert!(text.contains("server RSS: start"), "{text}");
    assert!(text.contains(" 0 errors"), "{text}");
}

#[test]
fn load_refuses_addresses_off_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_aiflow-load"))
        .args(["--duration", "1s", "--server", "http://192.0.2.1:8080"])
        .output()
        .expect("run aiflow-load");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
