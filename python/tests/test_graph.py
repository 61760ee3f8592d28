"""The graph builder writes the same AI graph JSON as the Rust SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiflow.graph import Condition, Event, GraphBuilder, GraphError, Op, Status

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud_detector"
DATASET = "online_features"


def online_learning() -> GraphBuilder:
    """dags/src/lib.rs `online_learning`, line for line."""
    model_key = f"model/{MODEL}"
    g = GraphBuilder("online_learning")
    g.project("demo").description(
        "ingest → featurise → train → evaluate → deploy, with a streaming predictor"
    )
    g.node("ingest").op(Op.INGEST).description("generate a batch of transactions").command(
        ["sh", "dags/jobs/ingest.sh"]
    ).timeout_s(600).retries(2)
    g.node("featurise").op(Op.TRANSFORM).description(
        "compute features and register a dataset version"
    ).command(["sh", "dags/jobs/featurise.sh"])
    g.data_edge("ingest", "featurise")
    g.node("train").op(Op.TRAIN).description(
        "train a model and register a model version with its metrics"
    ).command(["sh", "dags/jobs/train.sh"]).timeout_s(1800).retries(1)
    g.node("evaluate").op(Op.EVALUATE).description(
        "compare the new version with the production alias"
    ).command(["sh", "dags/jobs/evaluate.sh"]).timeout_s(600).retries(1)
    g.node("deploy").op(Op.PUSH).description(
        "move the production alias to the new version"
    ).command(["sh", "dags/jobs/deploy.sh"]).timeout_s(300).retries(1)
    g.node("predictor").op(Op.PREDICT).description(
        "serve predictions with the production model"
    ).command(["sh", "dags/jobs/predictor.sh"]).retries(3).streaming()
    g.on(Event.key(f"dataset/{DATASET}").of_type("DATASET_VERSION_CREATED")).start("train")
    g.on(Event.key(model_key).of_type("MODEL_VERSION_CREATED")).start("evaluate")
    g.after("evaluate").succeeded().start("deploy")
    g.on(Event.key(model_key).of_type("MODEL_DEPLOYED")).restart("predictor")
    g.cron("0 */6 * * *", "UTC")
    return g


def test_online_learning_equals_the_rust_sdk_document() -> None:
    expected = json.loads((ROOT / "dags" / "online_learning.json").read_text())
    g = online_learning()
    assert g.build() == expected
    assert json.loads(g.to_json()) == expected
    assert g.to_json().endswith("}\n")


def test_conditions_life_and_defaults() -> None:
    g = GraphBuilder("g")
    g.namespace("team").max_concurrent_jobs(2).max_duration(3600)
    g.node("a").command(["true"]).env("X", "1").queue("gpu")
    g.node("b").op(Op.EVALUATE).command(["true"])
    g.on(
        Condition.any_of(
            [
                Event.key("model/*").of_type("MODEL_VERSION_CREATED"),
                Condition.job_status("a", Status.SUCCEEDED),
            ]
        )
    ).once().start("b")
    g.finish_on(Event.key("done"))
    doc = g.build()
    assert doc["namespace"] == "team"
    assert doc["nodes"][0] == {
        "name": "a",
        "op": "custom",
        "job": {"command": ["true"], "env": {"X": "1"}, "queue": "gpu"},
    }
    edge = doc["control_edges"][0]
    assert edge["life"] == "ONCE" and edge["action"] == "START"
    assert edge["condition"]["any_of"][1] == {"job_status": {"node": "a", "status": "SUCCEEDED"}}
    assert doc["finish_on"] == {"event": {"key": "done"}}
    assert doc["max_duration_s"] == 3600 and doc["max_concurrent_jobs"] == 2
    assert "namespace" not in GraphBuilder("h").to_dict()


def test_build_lists_edges_to_missing_nodes() -> None:
    g = GraphBuilder("bad")
    g.node("a").command(["x"])
    g.data_edge("a", "nowhere")
    g.after("ghost").succeeded().start("a")
    with pytest.raises(GraphError) as err:
        g.build()
    places = [where for where, _ in err.value.problems]
    assert "data_edges[0].to" in places
    assert "control_edges[0].condition.job_status.node" in places
