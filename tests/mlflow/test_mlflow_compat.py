"""The official MLflow client (mlflow-skinny 3.x) against a real `aiflow server`.

Shaped like a training script: an experiment and a run with params, tags, a metric history with
steps, log_batch and search_runs with a filter; artifacts up and down (a file and a directory);
a registered model with two versions from the run, an alias, tags, the version by alias and a
stage transition. Then the same facts through AI Flow's own API (`/api/v1`), and a workflow whose
trigger is `MODEL_VERSION_CREATED` on the model starts.

Run by `.ci/mlflow.sh`. The server binary comes from `AIFLOW_BIN` (default
`target/debug/aiflow`). The store is SQLite in a temporary folder, and PostgreSQL + NATS
JetStream (the distributed shape) in a fresh database when both answer on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("AIFLOW_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "aiflow"
)
PG_ADMIN = os.environ.get(
    "AIFLOW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", PG_ADMIN, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )


class Server:
    """An `aiflow server` on a free port with a temporary data folder."""

    def __init__(self, tmp: Path, extra: list[str], node: str = "a"):
        self.extra = extra
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp = tmp / node
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [
                BIN,
                "server",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(tmp / "data"),
                "--dags",
                "none",
                *extra,
            ],
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "RUST_LOG": os.environ.get("AIFLOW_TEST_LOG", "warn"),
                "AIFLOW_NODE": node,
            },
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"aiflow server exited with {self.proc.returncode}: "
                    + (tmp / "server.log").read_text()
                )
            try:
                if self.get("/readyz")["status"] == "ready":
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("aiflow server did not become ready in 60 s")

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def get(self, path: str):
        return self.request("GET", path)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(params=["sqlite", "distributed"])
def server(request, tmp_path):
    extra: list[str] = []
    db = None
    if request.param == "distributed":
        if not (_reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 4222)):
            pytest.skip("SKIPPED: PostgreSQL (5432) and NATS (4222) must run for the distributed shape")
        if shutil.which("psql") is None:
            pytest.skip("SKIPPED: psql is needed to create the test database")
        db = f"aiflow_t_{uuid.uuid4().hex}"
        _psql(f"CREATE DATABASE {db}")
        tag = uuid.uuid4().hex[:10]
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
        extra = [
            "--database",
            url,
            "--nats",
            "nats://127.0.0.1:4222",
            "--cluster",
            f"mlflow{tag}",
            "--nats-stream",
            f"MLFLOW{tag.upper()}_EVENTS",
        ]
    srv = Server(tmp_path, extra)
    srv.shape = request.param
    try:
        yield srv
    finally:
        srv.stop()
        if db is not None:
            _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_training_script_against_aiflow(server, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    client = MlflowClient(server.url, server.url)
    suffix = uuid.uuid4().hex[:8]
    model = f"fraud_{suffix}"

    # A workflow started by the first registration of the model (native API).
    graph = {
        "name": f"evaluate_{suffix}",
        "nodes": [
            {
                "name": "evaluate",
                "op": "evaluate",
                "job": {"command": ["sh", "-c", "echo evaluating"]},
            }
        ],
        "triggers": [
            {"event": {"key": f"model/{model}", "event_type": "MODEL_VERSION_CREATED"}}
        ],
    }
    server.request("POST", "/api/v1/workflows", graph)

    # ---- tracking
    exp_id = mlflow.set_experiment(f"fraud training {suffix}").experiment_id
    assert mlflow.get_experiment(exp_id).name == f"fraud training {suffix}"
    client.set_experiment_tag(exp_id, "team", "risk")

    data_dir = tmp_path / "out"
    (data_dir / "model").mkdir(parents=True)
    (data_dir / "model" / "weights.bin").write_bytes(os.urandom(300_000))
    (data_dir / "model" / "MLmodel").write_text("flavors: {}\n")
    (data_dir / "model" / "sub").mkdir()
    (data_dir / "model" / "sub" / "notes.txt").write_text("nested\n")
    (data_dir / "report.txt").write_text("accuracy went up\n")

    with mlflow.start_run(run_name="train-1", tags={"stage": "dev"}) as run:
        run_id = run.info.run_id
        mlflow.log_params({"lr": "0.01", "epochs": 3})
        mlflow.log_param("optimizer", "adam")
        mlflow.set_tag("dataset", "transactions-v7")
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"accuracy": 0.91, "auc": 0.95}, step=4)
        client.log_batch(
            run_id,
            metrics=[Metric("val_loss", 0.5 - i * 0.1, 1_700_000_000_000 + i, i) for i in range(3)],
            params=[Param("batch_size", "64")],
            tags=[RunTag("owner", "ml-team")],
        )
        mlflow.log_artifact(str(data_dir / "report.txt"))
        mlflow.log_artifacts(str(data_dir / "model"), artifact_path="model")
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("lr", "0.02")  # params do not change
        assert "INVALID_PARAMETER_VALUE" in str(err.value.error_code)

    # A second run that the filter below must leave out.
    with mlflow.start_run(run_name="train-2") as run2:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("accuracy", 0.5)

    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train-1"
    assert got.info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    assert got.data.params == {
        "lr": "0.01",
        "epochs": "3",
        "optimizer": "adam",
        "batch_size": "64",
    }
    assert got.data.tags["dataset"] == "transactions-v7"
    assert got.data.tags["owner"] == "ml-team"
    assert got.data.metrics["loss"] == pytest.approx(0.2)
    assert got.data.metrics["val_loss"] == pytest.approx(0.3)

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, round(m.value, 6)) for m in history] == [
        (s, round(1.0 / (s + 1), 6)) for s in range(5)
    ]

    found = mlflow.search_runs(
        experiment_ids=[exp_id],
        filter_string="metrics.accuracy > 0.9 and params.lr = '0.01' and tags.stage = 'dev'",
        output_format="list",
    )
    assert [r.info.run_id for r in found] == [run_id]
    ordered = client.search_runs([exp_id], order_by=["metrics.accuracy ASC"])
    assert [r.info.run_id for r in ordered] == [run2.info.run_id, run_id]
    with pytest.raises(MlflowException) as err:
        client.search_runs([exp_id], filter_string="metrics.accuracy >> 1")
    assert "INVALID_PARAMETER_VALUE" in str(err.value.error_code)

    # ---- artifacts, down again
    names = sorted(f.path for f in client.list_artifacts(run_id))
    assert names == ["model", "report.txt"]
    down = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "down")))
    assert (down / "report.txt").read_text() == "accuracy went up\n"
    assert (down / "model" / "weights.bin").read_bytes() == (
        data_dir / "model" / "weights.bin"
    ).read_bytes()
    assert (down / "model" / "sub" / "notes.txt").read_text() == "nested\n"
    one = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{run_id}/report.txt", dst_path=str(tmp_path / "one")
    )
    assert Path(one).read_text() == "accuracy went up\n"

    if server.shape == "distributed":
        # Another replica on the same database serves the same artifacts.
        replica = Server(tmp_path, server.extra, node="b")
        try:
            base = f"{replica.url}/api/2.0/mlflow-artifacts/artifacts"
            root = f"{exp_id}/{run_id}/artifacts/model"
            listed = replica.get(
                "/api/2.0/mlflow-artifacts/artifacts?path=" + urllib.parse.quote(root)
            )["files"]
            assert {f["path"] for f in listed} == {"MLmodel", "sub", "weights.bin"}
            with urllib.request.urlopen(f"{base}/{root}/weights.bin", timeout=30) as r:
                assert r.read() == (data_dir / "model" / "weights.bin").read_bytes()
        finally:
            replica.stop()

    # ---- the registry
    source = f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts/model"
    mv1 = mlflow.register_model(f"runs:/{run_id}/model", model)
    assert mv1.version == "1"
    mv2 = client.create_model_version(model, source, run_id, tags={"candidate": "yes"})
    assert mv2.version == "2"
    assert mv2.run_id == run_id and mv2.source == source
    client.set_registered_model_tag(model, "task", "fraud")
    client.set_model_version_tag(model, "1", "validated_by", "ci")
    client.set_registered_model_alias(model, "champion", "2")
    by_alias = client.get_model_version_by_alias(model, "champion")
    assert by_alias.version == "2"
    staged = client.transition_model_version_stage(model, "1", "Staging")
    assert staged.current_stage == "Staging"
    client.update_registered_model(model, description="fraud detector")
    rm = client.get_registered_model(model)
    assert rm.tags == {"task": "fraud"}
    assert rm.aliases == {"champion": "2"}
    assert rm.description == "fraud detector"
    assert [v.version for v in client.search_model_versions(f"name = '{model}'")] == ["2", "1"]
    assert client.get_model_version(model, "1").tags == {"validated_by": "ci"}
    assert client.get_model_version_download_uri(model, "2") == source
    with pytest.raises(MlflowException) as err:
        client.get_registered_model(f"nope_{suffix}")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    # ---- the same facts through AI Flow's own API
    api = server.get
    run_record = api(f"/api/v1/job_executions/{run_id}")
    assert run_record["state"] == "SUCCEEDED"
    assert run_record["job"] == "train-1"
    project = api(f"/api/v1/projects/{urllib.parse.quote(f'fraud training {suffix}')}")
    assert project["tags"] == {"team": "risk"}
    points = api(f"/api/v1/metrics/mlflow-experiment-{exp_id}/points?key=loss")["points"]
    mine = [p for p in points if p["job_execution"] == run_id]
    assert [p["step"] for p in mine] == [0, 1, 2, 3, 4]
    native = api(f"/api/v1/models/{model}/versions/1")
    assert native["source_job_execution"] == run_id  # lineage from the run
    assert native["uri"].startswith("mlflow-artifacts:/")
    assert native["stage"] == "VALIDATED"
    assert api(f"/api/v1/models/{model}/aliases/champion")["version"] == 2
    lineage = json.dumps(api(f"/api/v1/lineage?node=model:{model}@1"))
    assert f"job_execution:{run_id}" in lineage

    events = _wait(
        "MODEL_VERSION_CREATED events",
        lambda: (
            lambda items: items if len(items) >= 2 else None
        )(
            api(
                f"/api/v1/events?key=model/{model}&event_type=MODEL_VERSION_CREATED"
            )["items"]
        ),
    )
    assert [e["value"] for e in events] == ["1", "2"]
    types = {e["event_type"] for e in api(f"/api/v1/events?key=model/{model}")["items"]}
    assert {"MODEL_ALIAS_MOVED", "MODEL_VALIDATED"} <= types

    execs = _wait(
        "an execution started by MODEL_VERSION_CREATED",
        lambda: api(f"/api/v1/executions?workflow=evaluate_{suffix}")["items"],
    )
    assert execs, "the registration started no workflow"
