//! HTTPS end to end: `aiflow server --tls-cert/--tls-key` with certificates of a private CA
//! made here, the CLI, the SDK and a job talking to it, and what is refused. Also PostgreSQL
//! URLs with `sslmode`.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Proc};

/// A CA of its own and a server certificate it issued for `localhost` and `127.0.0.1`, as PEM
/// files in `dir`: (ca.pem, server.pem, server.key).
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "aiflow test server");
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-server.pem")),
        dir.join(format!("{name}-server.key")),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// `aiflow server` over HTTPS with `cert`/`key`, its jobs trusting `ca`; returns it and the
/// base URL from its banner.
fn tls_server(data: &Path, cert: &Path, key: &Path, ca: &Path) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--dags", "none"])
        .arg("--data-dir")
        .arg(data)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("AIFLOW_CA_CERT", ca)
        .env("RUST_LOG", "warn")
        .env_remove("AIFLOW_DATABASE")
        .env_remove("AIFLOW_NATS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aiflow server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("API") {
                let _ = tx.send(rest.trim().trim_end_matches("/api/v1").to_string());
            } else if line.contains("ERROR") || line.contains("error:") {
                eprintln!("[server] {line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed its banner");
    (
        Proc {
            child,
            name: "tls-server".into(),
        },
        url,
    )
}

/// The CLI against `base`, trusting `ca` through `AIFLOW_CA_CERT` when given.
fn cli(base: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["--server", base, "--output", "json"])
        .env_remove("AIFLOW_TOKEN")
        .env_remove("AIFLOW_CA_CERT");
    if let Some(ca) = ca {
        c.env("AIFLOW_CA_CERT", ca);
    }
    c.args(args).output().expect("run aiflow")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_end_to_end_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_ca(dir.path(), "good");
    let (other_ca, _, _) = make_ca(dir.path(), "other");
    let (_server, base) = tls_server(&dir.path().join("data"), &cert, &key, &ca);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    // The CLI, trusting the CA through the environment and through --ca-cert.
    let o = cli(&base, Some(&ca), &["project", "create", "over-tls"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(BIN)
        .args(["--server", &base, "--output", "json", "--ca-cert"])
        .arg(&ca)
        .args(["project", "list"])
        .env_remove("AIFLOW_CA_CERT")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("over-tls"),
        "{}",
        text(&o)
    );

    // `aiflow status` reads /readyz and /metrics outside /api/v1 over HTTPS too.
    let o = cli(&base, Some(&ca), &["status", "--interval", "0"]);
    assert!(o.status.success(), "{}", text(&o));

    // The SDK.
    let sdk = aiflow_sdk::Client::new(&base).with_ca_cert(&ca);
    let p = sdk
        .get_project("over-tls")
        .await
        .expect("project over HTTPS");
    assert_eq!(p.name, "over-tls");

    // A job of the server reaches it over HTTPS too (AIFLOW_URL is https://, the CA inherited).
    let doc = serde_json::json!({
        "name": "tls-job",
        "nodes": [{"name": "create", "job": {"command": [BIN, "project", "create", "made-by-a-job"]}}],
    });
    sdk.submit_document(&doc).await.expect("submit");
    let o = cli(
        &base,
        Some(&ca),
        &["execution", "start", "tls-job", "--wait", "60"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let made = sdk.get_project("made-by-a-job").await;
    assert!(made.is_ok(), "the job's project: {made:?}");

    // The Python package, as a job would use it.
    let py = Command::new("python3")
        .args([
            "-c",
            "import aiflow; print(aiflow.Client().send_event('over-tls', 'v')['offset'])",
        ])
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/python/src"),
        )
        .env("AIFLOW_URL", &base)
        .env("AIFLOW_CA_CERT", &ca)
        .env_remove("AIFLOW_TOKEN")
        .output();
    match py {
        Ok(o) => assert!(o.status.success(), "python over HTTPS: {}", text(&o)),
        Err(e) => common::report(&format!(
            "python3 not found ({e}); its HTTPS is not checked"
        )),
    }

    // Refused: no CA (only the system roots), a CA that did not issue the certificate.
    for ca in [None, Some(other_ca.as_path())] {
        let o = cli(&base, ca, &["project", "list"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(err.contains("certificate"), "{}", text(&o));
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
    let e = aiflow_sdk::Client::new(&base)
        .with_ca_cert(&other_ca)
        .list_projects(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, aiflow_sdk::Error::Connect { .. }),
        "unknown CA: {e}"
    );
    // A CA file that is not there: a clear error before any request.
    let missing = dir.path().join("missing.pem");
    let o = cli(&base, Some(&missing), &["project", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.pem"),
        "{}",
        text(&o)
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = base.replacen("https://", "http://", 1);
    let r = aiflow_sdk::tls::http_client_from_env()
        .unwrap()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");
    let addr = base.trim_start_matches("https://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    })
    .await
    .unwrap();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("\"ok\""),
        "{answer:?}"
    );
}

#[test]
fn a_certificate_without_its_key_or_an_unreadable_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = make_ca(dir.path(), "good");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--dags", "none"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env_remove("AIFLOW_DATABASE")
            .env_remove("AIFLOW_NATS")
            .output()
            .unwrap()
    };
    let o = run(&["--tls-cert".as_ref(), cert.as_os_str()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tls_key: needed with tls_cert"),
        "{}",
        text(&o)
    );
    // The key where the certificate should be: no certificate in it.
    let o = run(&[
        "--tls-cert".as_ref(),
        key.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tls_cert:"),
        "{}",
        text(&o)
    );
}

/// `sslmode` of a PostgreSQL URL is honoured: `require` encrypts, `disable` does not, and
/// `verify-full` refuses a server certificate no trusted CA issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_honour_sslmode() {
    if !common::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let _shared = common::SHARED_SERVICES.read().await;
    let Some(db) = aiflow_db::testing::TestDb::postgres().await else {
        return;
    };
    let with = |mode: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}sslmode={mode}", db.url)
    };
    let ssl_of = |url: String| async move {
        let d = aiflow_db::Db::connect(&aiflow_db::DbConfig::new(&url)).await?;
        let on: String = sqlx::query_scalar(
            "SELECT CAST(ssl AS TEXT) FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&d.pool)
        .await?;
        anyhow::Ok(on)
    };
    let server_has_ssl = match ssl_of(with("require")).await {
        Ok(on) => {
            assert_eq!(on, "true", "sslmode=require is encrypted");
            true
        }
        Err(e) => {
            common::report(&format!(
                "PostgreSQL here does not offer SSL ({e:#}); only sslmode=disable is checked"
            ));
            false
        }
    };
    assert_eq!(ssl_of(with("disable")).await.unwrap(), "false");
    if server_has_ssl {
        let e = ssl_of(with("verify-full")).await.unwrap_err();
        let e = format!("{e:#}").to_lowercase();
        assert!(
            e.contains("certificate") || e.contains("tls") || e.contains("ssl"),
            "{e}"
        );
    }
}
