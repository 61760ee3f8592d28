//! The MLflow REST API and the `mlflow-artifacts` API of a real embedded server, spoken as the
//! MLflow client speaks them (JSON bodies, GET parameters), without Python: experiments, runs,
//! metric history, search, the registry publishing `MODEL_VERSION_CREATED`, artifacts, and
//! MLflow's error format. `tests/mlflow/test_mlflow_compat.py` runs the real client
//! (`.ci/mlflow.sh`).

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::*;

struct Ml {
    http: reqwest::Client,
    base: String,
}

impl Ml {
    async fn call(&self, method: reqwest::Method, endpoint: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let req = if method == reqwest::Method::GET {
            let pairs: Vec<(String, String)> = body
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            self.http.get(url).query(&pairs)
        } else {
            self.http.request(method, url).json(body)
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, endpoint: &str, body: Value) -> Value {
        let (status, v) = self.call(method, endpoint, &body).await;
        assert_eq!(status, 200, "{endpoint} {body}: {v}");
        v
    }

    async fn post(&self, endpoint: &str, body: Value) -> Value {
        self.ok(reqwest::Method::POST, endpoint, body).await
    }

    async fn get(&self, endpoint: &str, query: Value) -> Value {
        self.ok(reqwest::Method::GET, endpoint, query).await
    }
}

#[tokio::test]
async fn mlflow_tracking_registry_and_artifacts_over_the_meta_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = embedded(dir.path(), &["--max-artifact-bytes", "100000"]);
    let ml = Ml {
        http: aiflow_sdk::tls::http_client_from_env().expect("HTTP client"),
        base: base.clone(),
    };

    // ---- experiments
    let exp = ml
        .post(
            "experiments/create",
            json!({"name": "churn model", "tags": [{"key": "team", "value": "growth"}]}),
        )
        .await["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = ml
        .get(
            "experiments/get-by-name",
            json!({"experiment_name": "churn model"}),
        )
        .await;
    assert_eq!(got["experiment"]["experiment_id"], exp);
    assert_eq!(
        got["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/{exp}")
    );
    let (status, err) = ml
        .call(
            reqwest::Method::POST,
            "experiments/create",
            &json!({"name": "churn model"}),
        )
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let (status, err) = ml
        .call(
            reqwest::Method::GET,
            "experiments/get-by-name",
            &json!({"experiment_name": "nope"}),
        )
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    // The experiment is a project.
    let project = get(&ml.http, &format!("{base}/api/v1/projects/churn%20model")).await;
    assert_eq!(project["tags"]["team"], "growth");

    // ---- runs: params, tags, metric points with steps
    let mut runs = Vec::new();
    for (name, lr, acc) in [("a", "0.1", 0.7), ("b", "0.01", 0.9)] {
        let run = ml
            .post(
                "runs/create",
                json!({"experiment_id": exp, "run_name": name, "start_time": 1_700_000_000_000_i64}),
            )
            .await;
        let id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
        assert_eq!(
            run["run"]["info"]["artifact_uri"],
            format!("mlflow-artifacts:/{exp}/{id}/artifacts")
        );
        let metrics: Vec<Value> = (0..50)
            .map(|s| json!({"key": "loss", "value": 1.0 / f64::from(s + 1), "timestamp": 1_700_000_000_000_i64 + i64::from(s), "step": s}))
            .chain([json!({"key": "acc", "value": acc, "timestamp": 1_700_000_000_100_i64, "step": 0})])
            .collect();
        ml.post(
            "runs/log-batch",
            json!({"run_id": id, "metrics": metrics, "params": [{"key": "lr", "value": lr}], "tags": [{"key": "kind", "value": "baseline"}]}),
        )
        .await;
        runs.push(id);
    }
    let (status, err) = ml
        .call(
            reqwest::Method::POST,
            "runs/log-parameter",
            &json!({"run_id": runs[0], "key": "lr", "value": "0.5"}),
        )
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{err}"
    );
    ml.post(
        "runs/update",
        json!({"run_id": runs[1], "status": "FINISHED", "end_time": 1_700_000_100_000_i64}),
    )
    .await;
    let run = ml.get("runs/get", json!({"run_id": runs[1]})).await["run"].clone();
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["end_time"], 1_700_000_100_000_i64);
    assert!(run["data"]["metrics"].as_array().unwrap().contains(
        &json!({"key": "loss", "value": 0.02, "timestamp": 1_700_000_000_049_i64, "step": 49})
    ));
    // The run is a job execution of the meta service.
    let job = get(
        &ml.http,
        &format!("{base}/api/v1/job_executions/{}", runs[1]),
    )
    .await;
    assert_eq!(job["state"], "SUCCEEDED");
    assert_eq!(job["job"], "b");

    // A run logged from inside a job names the job's execution (`$AIFLOW_JOB_EXECUTION`): the
    // link is checked and kept in the lineage.
    let child = ml
        .post(
            "runs/create",
            json!({"experiment_id": exp, "tags": [{"key": "aiflow.job_execution", "value": runs[0]}]}),
        )
        .await["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let lineage = get(
        &ml.http,
        &format!("{base}/api/v1/lineage?node=job_execution:{child}"),
    )
    .await;
    assert!(
        lineage
            .to_string()
            .contains(&format!("job_execution:{}", runs[0])),
        "{lineage}"
    );
    let (status, err) = ml
        .call(
            reqwest::Method::POST,
            "runs/create",
            &json!({"experiment_id": exp, "tags": [{"key": "aiflow.job_execution", "value": "no-such-job"}]}),
        )
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{err}"
    );
    ml.post("runs/delete", json!({"run_id": child})).await;

    let history = ml
        .get(
            "metrics/get-history",
            json!({"run_id": runs[0], "metric_key": "loss"}),
        )
        .await;
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (0..50).collect::<Vec<_>>());

    let found = ml
        .post(
            "runs/search",
            json!({"experiment_ids": [exp], "filter": "metrics.acc > 0.8 and params.lr = '0.01'"}),
        )
        .await;
    let ids: Vec<&str> = found["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [runs[1].as_str()]);
    let ordered = ml
        .post(
            "runs/search",
            json!({"experiment_ids": [exp], "order_by": ["metrics.acc ASC"], "max_results": 1}),
        )
        .await;
    assert_eq!(ordered["runs"][0]["info"]["run_id"], runs[0]);
    assert!(ordered["next_page_token"].is_string());
    let (status, err) = ml
        .call(
            reqwest::Method::POST,
            "runs/search",
            &json!({"experiment_ids": [exp], "filter": "metrics.acc > 1 OR params.lr = 'x'"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("OR is not supported"),
        "{err}"
    );

    // ---- the registry: a version from the run publishes MODEL_VERSION_CREATED
    ml.post("registered-models/create", json!({"name": "churn"}))
        .await;
    let source = format!("mlflow-artifacts:/{exp}/{}/artifacts/model", runs[1]);
    let mv = ml
        .post(
            "model-versions/create",
            json!({"name": "churn", "source": source, "run_id": runs[1], "tags": [{"key": "candidate", "value": "yes"}]}),
        )
        .await["model_version"]
        .clone();
    assert_eq!(mv["version"], "1");
    assert_eq!(mv["status"], "READY");
    assert_eq!(mv["current_stage"], "None");
    assert_eq!(mv["run_id"], runs[1]);
    let native = get(&ml.http, &format!("{base}/api/v1/models/churn/versions/1")).await;
    assert_eq!(native["source_job_execution"], runs[1]);
    assert_eq!(native["uri"], source);
    wait_for("MODEL_VERSION_CREATED", Duration::from_secs(20), || async {
        let ev = get(
            &ml.http,
            &format!("{base}/api/v1/events?key=model/churn&event_type=MODEL_VERSION_CREATED"),
        )
        .await;
        ev["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["value"] == "1")
    })
    .await;
    ml.post(
        "registered-models/alias",
        json!({"name": "churn", "alias": "champion", "version": "1"}),
    )
    .await;
    let by_alias = ml
        .get(
            "registered-models/alias",
            json!({"name": "churn", "alias": "champion"}),
        )
        .await;
    assert_eq!(by_alias["model_version"]["version"], "1");
    let staged = ml
        .post(
            "model-versions/transition-stage",
            json!({"name": "churn", "version": "1", "stage": "Production", "archive_existing_versions": false}),
        )
        .await;
    assert_eq!(staged["model_version"]["current_stage"], "Production");
    assert_eq!(
        get(&ml.http, &format!("{base}/api/v1/models/churn/versions/1")).await["stage"],
        "DEPLOYED"
    );
    let (status, err) = ml
        .call(
            reqwest::Method::POST,
            "model-versions/transition-stage",
            &json!({"name": "churn", "version": "1", "stage": "Sideways"}),
        )
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    wait_for(
        "alias and stage events",
        Duration::from_secs(20),
        || async {
            let ev = get(&ml.http, &format!("{base}/api/v1/events?key=model/churn")).await;
            let types: Vec<&str> = ev["items"]
                .as_array()
                .map(|i| i.iter().filter_map(|e| e["event_type"].as_str()).collect())
                .unwrap_or_default();
            types
                == [
                    "MODEL_VERSION_CREATED",
                    "MODEL_ALIAS_MOVED",
                    "MODEL_DEPLOYED",
                ]
        },
    )
    .await;

    // ---- artifacts: up, list, down, refused paths and sizes, delete
    let art = format!("{base}/api/2.0/mlflow-artifacts/artifacts");
    let root = format!("{exp}/{}/artifacts", runs[1]);
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let r = ml
        .http
        .put(format!("{art}/{root}/model/weights.bin"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = ml
        .http
        .get(&art)
        .query(&[("path", format!("{root}/model"))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["files"],
        json!([{"path": "weights.bin", "is_dir": false, "file_size": 50_000}])
    );
    let down = ml
        .http
        .get(format!("{art}/{root}/model/weights.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(down.as_ref(), payload.as_slice());
    let r = ml
        .http
        .put(format!("{art}/{root}/big.bin"))
        .body(vec![0u8; 100_001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = ml
        .http
        .get(format!("{art}/{root}/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a refused upload leaves nothing behind");
    let r = ml
        .http
        .put(format!("{art}/{root}/..%2F..%2F..%2Fescape.txt"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    assert!(
        !dir.path()
            .join("artifacts")
            .join(&exp)
            .join("escape.txt")
            .exists()
    );
    let r = ml
        .http
        .delete(format!("{art}/{root}/model"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ml
        .http
        .get(format!("{art}/{root}/model/weights.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // An endpoint outside what is served says so in MLflow's format.
    let (status, err) = ml
        .call(reqwest::Method::POST, "traces/start", &json!({}))
        .await;
    assert_eq!(
        (status, err["error_code"].as_str()),
        (404, Some("ENDPOINT_NOT_FOUND"))
    );
}

/// The distributed shape (PostgreSQL + NATS): artifacts live in the database, so a file uploaded
/// through one replica is listed, downloaded and deleted through another; a registration through
/// the MLflow API publishes `MODEL_VERSION_CREATED` on the NATS bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_artifacts_and_registrations_reach_every_replica() {
    let Some(c) = Cluster::start("ml").await else {
        return;
    };
    let (_a, a) = c.server("a");
    let (_b, b) = c.server("b");
    let http = aiflow_sdk::tls::http_client_from_env().expect("HTTP client");
    let ml = Ml {
        http: http.clone(),
        base: a.clone(),
    };
    let exp = ml
        .post("experiments/create", json!({"name": "shared"}))
        .await["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = ml.post("runs/create", json!({"experiment_id": exp})).await["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let root = format!("{exp}/{run}/artifacts");
    // Three chunks and a bit: 3 MiB + 10 bytes.
    let payload: Vec<u8> = (0..(3 * 1024 * 1024 + 10))
        .map(|i| (i % 253) as u8)
        .collect();
    let r = http
        .put(format!(
            "{a}/api/2.0/mlflow-artifacts/artifacts/{root}/model/w.bin"
        ))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    http.put(format!(
        "{a}/api/2.0/mlflow-artifacts/artifacts/{root}/model/deep/x.txt"
    ))
    .body("x")
    .send()
    .await
    .unwrap();
    let listed: Value = http
        .get(format!("{b}/api/2.0/mlflow-artifacts/artifacts"))
        .query(&[("path", format!("{root}/model"))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["files"],
        json!([
            {"path": "deep", "is_dir": true},
            {"path": "w.bin", "is_dir": false, "file_size": payload.len()}
        ])
    );
    let down = http
        .get(format!(
            "{b}/api/2.0/mlflow-artifacts/artifacts/{root}/model/w.bin"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        down.as_ref() == payload.as_slice(),
        "replica b serves the bytes a stored"
    );
    // A file cannot go where a directory is.
    let r = http
        .put(format!(
            "{b}/api/2.0/mlflow-artifacts/artifacts/{root}/model"
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .delete(format!(
            "{b}/api/2.0/mlflow-artifacts/artifacts/{root}/model"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!(
            "{a}/api/2.0/mlflow-artifacts/artifacts/{root}/model/w.bin"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    ml.post("registered-models/create", json!({"name": "shared_model"}))
        .await;
    ml.post(
        "model-versions/create",
        json!({"name": "shared_model", "source": format!("mlflow-artifacts:/{root}/model"), "run_id": run}),
    )
    .await;
    wait_for(
        "MODEL_VERSION_CREATED on replica b",
        Duration::from_secs(30),
        || async {
            let ev = get(
                &http,
                &format!(
                    "{b}/api/v1/events?key=model/shared_model&event_type=MODEL_VERSION_CREATED"
                ),
            )
            .await;
            ev["items"].as_array().is_some_and(|i| i.len() == 1)
        },
    )
    .await;
}
