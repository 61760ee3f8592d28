//! The content of AI Flow's own artifacts (`PUT|GET /api/v1/artifacts/{name}/content`,
//! `aiflow artifact put|get`) on a real server, embedded (files under the data folder) and
//! distributed (PostgreSQL + NATS, two replicas): a round trip, a checksum mismatch and an
//! over-size file refused with nothing kept, and a missing file answered with 404.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;
use common::*;

/// The server's `--max-artifact-bytes` in these tests.
const LIMIT: usize = 3_000_000;

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cli(base: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["--server", base, "--output", "json"])
        .args(args)
        .env_remove("AIFLOW_TOKEN")
        .output()
        .expect("run aiflow")
}

async fn put(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    body: impl Into<reqwest::Body>,
    sha: Option<&str>,
) -> (u16, Value) {
    let mut rb = http
        .put(format!("{base}/api/v1/artifacts/{name}/content"))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(s) = sha {
        rb = rb.header("x-checksum-sha256", s);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn content(http: &reqwest::Client, base: &str, name: &str) -> (u16, Vec<u8>) {
    let r = http
        .get(format!("{base}/api/v1/artifacts/{name}/content"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// Everything a store must do; uploads go to `a`, downloads come from `b` (another replica in
/// the distributed shape).
async fn exercise(a: &str, b: &str, work: &Path) {
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    for name in ["ranker", "pinned", "empty", "big"] {
        post(
            &http,
            &format!("{a}/api/v1/artifacts"),
            &json!({"name": name, "uri": format!("s3://models/{name}")}),
        )
        .await;
    }

    // ---- round trip through the CLI: 2.5 MiB, three database chunks.
    let payload: Vec<u8> = (0..(5 * 512 * 1024 + 7)).map(|i| (i % 251) as u8).collect();
    let sum = sha_hex(&payload);
    let file = work.join("model.bin");
    std::fs::write(&file, &payload).unwrap();
    let out = cli(a, &["artifact", "put", "ranker", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["sha256"], sum, "the upload records the file's sha256");
    assert_eq!(shown["size"], payload.len());
    let meta = get(&http, &format!("{b}/api/v1/artifacts/ranker")).await;
    assert_eq!(
        (meta["sha256"].as_str(), meta["size"].as_u64()),
        (Some(sum.as_str()), Some(payload.len() as u64))
    );
    let r = http
        .get(format!("{b}/api/v1/artifacts/ranker/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-checksum-sha256"], sum.as_str());
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let got = r.bytes().await.unwrap();
    assert!(got.as_ref() == payload.as_slice(), "the bytes come back");
    let back = work.join("back.bin");
    let out = cli(
        b,
        &["artifact", "get", "ranker", "-o", back.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&back).unwrap() == payload,
        "aiflow artifact get -o"
    );
    let out = cli(b, &["artifact", "get", "ranker"]);
    assert!(out.status.success());
    assert!(out.stdout == payload, "aiflow artifact get to stdout");

    // ---- a checksum mismatch is refused and keeps the stored file.
    let other = b"not the model".to_vec();
    let (status, err) = put(
        &http,
        a,
        "ranker",
        other.clone(),
        Some(&sha_hex(b"something else")),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "checksum_mismatch");
    assert_eq!(err["error"]["field"], "x-checksum-sha256");
    // Without a header, the sha256 recorded on the artifact is the one expected.
    let (status, err) = put(&http, a, "ranker", other.clone(), None).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("sha256")),
        "{err}"
    );
    let (status, got) = content(&http, b, "ranker").await;
    assert!(
        status == 200 && got == payload,
        "nothing replaced the stored file"
    );
    // Bytes that differ from a header that matches the record: refused after streaming.
    let (status, err) = put(&http, a, "ranker", other.clone(), Some(&sum)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("checksum_mismatch")),
        "{err}"
    );
    // A recorded checksum and a header that disagree: refused before reading.
    http.patch(format!("{a}/api/v1/artifacts/pinned"))
        .json(&json!({"sha256": sha_hex(b"pinned bytes")}))
        .send()
        .await
        .unwrap();
    let (status, _) = put(
        &http,
        a,
        "pinned",
        b"pinned bytes".to_vec(),
        Some(&sha_hex(b"x")),
    )
    .await;
    assert_eq!(status, 422);
    let (status, err) = content(&http, b, "pinned").await;
    assert_eq!(status, 404, "a refused first upload leaves no file");
    let err: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(err["error"]["field"], "content");
    let (status, v) = put(&http, a, "pinned", b"pinned bytes".to_vec(), None).await;
    assert_eq!(
        status, 200,
        "the recorded checksum accepts the right bytes: {v}"
    );
    let (status, err) = put(&http, a, "pinned", b"x".to_vec(), Some("not-hex")).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("x-checksum-sha256"))
    );

    // ---- over the size limit: with a length (refused before reading) and streamed.
    let big = vec![7u8; LIMIT + 1];
    let (status, err) = put(&http, a, "big", big.clone(), None).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "payload_too_large");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let (status, err) = put(
        &http,
        a,
        "big",
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        None,
    )
    .await;
    assert_eq!(status, 413, "a streamed body over the limit: {err}");
    assert_eq!(content(&http, b, "big").await.0, 404, "nothing kept");
    let meta = get(&http, &format!("{b}/api/v1/artifacts/big")).await;
    assert_eq!(meta["sha256"], Value::Null);

    // ---- missing content, a missing artifact, a body that is not a file.
    let (status, body) = content(&http, b, "empty").await;
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(content(&http, b, "nope").await.0, 404);
    assert_eq!(put(&http, a, "nope", b"x".to_vec(), None).await.0, 404);
    let r = http
        .put(format!("{a}/api/v1/artifacts/ranker/content"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let out = cli(b, &["artifact", "get", "empty"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no content"), "{stderr}");

    // ---- the MLflow API neither lists nor reaches the native files.
    let listed = get(&http, &format!("{b}/api/2.0/mlflow-artifacts/artifacts")).await;
    assert_eq!(listed["files"], json!([]), "{listed}");
    let r = http
        .get(format!(
            "{b}/api/2.0/mlflow-artifacts/artifacts/.aiflow-artifacts/1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // ---- a deleted and re-registered name starts without content.
    http.delete(format!("{a}/api/v1/artifacts/ranker"))
        .send()
        .await
        .unwrap();
    post(
        &http,
        &format!("{a}/api/v1/artifacts"),
        &json!({"name": "ranker", "uri": "s3://models/ranker/2"}),
    )
    .await;
    assert_eq!(content(&http, b, "ranker").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_content_on_the_embedded_server() {
    let dir = tempfile::tempdir().unwrap();
    let limit = LIMIT.to_string();
    let (_server, base) = embedded(&dir.path().join("data"), &["--max-artifact-bytes", &limit]);
    exercise(&base, &base, dir.path()).await;
    // Files under the data folder, no upload left half-written.
    let kept: Vec<String> = std::fs::read_dir(dir.path().join("data/artifacts/.aiflow-artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 2, "ranker (first id) and pinned: {kept:?}");
    assert!(kept.iter().all(|k| k.parse::<i64>().is_ok()), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_content_on_the_distributed_server() {
    let Some(c) = Cluster::start("art").await else {
        return;
    };
    let limit = LIMIT.to_string();
    let (_a, a) = c.server_with("a", &["--max-artifact-bytes", &limit]);
    let (_b, b) = c.server_with("b", &["--max-artifact-bytes", &limit]);
    exercise(&a, &b, c.dir.path()).await;
}
