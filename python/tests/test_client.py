"""aiflow.Client against a real `aiflow server` (the `server` fixture of conftest.py)."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

import aiflow
from aiflow.graph import GraphBuilder

from test_graph import online_learning


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_client_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIFLOW_URL", raising=False)
    monkeypatch.delenv("AIFLOW_TOKEN", raising=False)
    c = aiflow.Client()
    assert c.url == aiflow.DEFAULT_URL and c.token is None
    monkeypatch.setenv("AIFLOW_URL", "http://aiflow:9000/api/v1/")
    monkeypatch.setenv("AIFLOW_TOKEN", "t0k")
    c = aiflow.Client()
    assert c.url == "http://aiflow:9000" and c.token == "t0k"
    assert c._headers(True)["Authorization"] == "Bearer t0k"
    assert c._headers(True)["Content-Type"] == "application/json"


def test_send_event_returns_the_stored_event_with_its_offset(client: aiflow.Client) -> None:
    key = _name("py/send")
    first = client.send_event(key, "1", event_type="DATA_LANDED", context={"run": 7})
    assert first["key"] == key and first["value"] == "1"
    assert first["event_type"] == "DATA_LANDED"
    assert isinstance(first["offset"], int) and first["offset"] > 0
    assert first["context"] == {"run": 7}  # outside a job: no execution added
    second = client.send_event(key, "2", namespace="other")
    assert second["offset"] > first["offset"] and second["namespace"] == "other"
    again = client.send_event(key, "3", idempotency_key=key)
    same = client.send_event(key, "4", idempotency_key=key)
    assert same["offset"] == again["offset"] and same["value"] == "3"
    listed = client.list_events(key=key)
    assert [e["value"] for e in listed] == ["1", "2", "3"]  # every namespace
    assert [e["value"] for e in client.list_events(key=key, namespace="other")] == ["2"]


def test_send_event_inside_a_job_names_the_execution(
    client: aiflow.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _name("py/in_job")
    monkeypatch.setenv("AIFLOW_EXECUTION", "exec-1")
    assert client.send_event(key)["context"]["execution"] == "exec-1"
    kept = client.send_event(key, context={"execution": "mine", "x": 1})["context"]
    assert kept == {"execution": "mine", "x": 1}
    assert client.send_event(key, context=[1])["context"] == [1]


def test_listen_replays_then_follows_live(client: aiflow.Client) -> None:
    key = _name("py/listen")
    sent = [client.send_event(key, str(i), event_type="TICK") for i in range(3)]
    client.send_event(key, "other type", event_type="TOCK")
    stream = client.listen(key=key, event_type="TICK", from_offset=sent[0]["offset"])
    got: List[Dict[str, Any]] = [next(stream) for _ in range(3)]
    assert [e["offset"] for e in got] == [e["offset"] for e in sent]

    live: Dict[str, Any] = {}

    def publish() -> None:
        time.sleep(0.5)
        live.update(client.send_event(key, "live", event_type="TICK"))

    t = threading.Thread(target=publish)
    t.start()
    event = next(stream)
    t.join()
    stream.close()
    assert event["value"] == "live" and event["offset"] == live["offset"]


def test_listen_without_from_offset_starts_with_new_events(client: aiflow.Client) -> None:
    key = _name("py/new")
    client.send_event(key, "old")
    stream = client.listen(key=key)
    box: Dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(next(stream)), daemon=True)
    t.start()
    # Publish until the listener has one: whatever opened the stream first, "old" never comes.
    deadline = time.time() + 30
    while t.is_alive() and time.time() < deadline:
        client.send_event(key, "new")
        t.join(timeout=0.5)
    assert box.get("value") == "new", box
    stream.close()


def test_listen_resumes_after_a_dropped_connection(client: aiflow.Client) -> None:
    """A proxy that cuts every connection after the first event: the client reconnects with
    `Last-Event-ID` and sees each event once."""
    import socket

    upstream = ("127.0.0.1", int(client.url.rsplit(":", 1)[1]))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    connections: List[int] = []

    def pipe(src: socket.socket, dst: socket.socket, cut_after_event: bool) -> None:
        buf = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if not cut_after_event:
                    dst.sendall(chunk)
                    continue
                # Forward up to the end of the first event's chunk (`…}\n\n\r\n`), then drop
                # the connection.
                start = len(buf)
                buf += chunk
                at = buf.find(b'"offset"')
                end = buf.find(b"\n\n\r\n", at) if at >= 0 else -1
                if end >= 0:
                    dst.sendall(buf[start : end + 4])
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            up = socket.create_connection(upstream)
            threading.Thread(target=pipe, args=(conn, up, False), daemon=True).start()
            threading.Thread(target=pipe, args=(up, conn, True), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    proxied = aiflow.Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10)
    key = _name("py/resume")
    sent = [client.send_event(key, str(i)) for i in range(4)]
    stream = proxied.listen(key=key, from_offset=sent[0]["offset"], reconnect_delay=0.1)
    got = [next(stream) for _ in range(4)]
    stream.close()
    listener.close()
    assert [e["offset"] for e in got] == [e["offset"] for e in sent]
    assert len(connections) >= 2


def _true_workflow(name: str) -> Dict[str, Any]:
    g = GraphBuilder(name)
    g.node("t").command(["true"]).timeout_s(60)
    return g.build()


def test_submit_start_and_wait(client: aiflow.Client) -> None:
    name = _name("py_true")
    submitted = client.submit_workflow(_true_workflow(name))
    assert submitted
    execution = client.start_execution(name)
    assert execution["workflow"] == name and execution["state"] == "RUNNING"
    done = client.wait(execution["id"], timeout=60)
    assert done["id"] == execution["id"]
    assert done["state"] == "SUCCEEDED", done


def test_wait_times_out(client: aiflow.Client) -> None:
    name = _name("py_sleep")
    g = GraphBuilder(name)
    g.node("s").command(["sleep", "30"]).timeout_s(60)
    client.submit_workflow(g)
    execution = client.start_execution(name)
    with pytest.raises(TimeoutError):
        client.wait(execution["id"], timeout=0.5, poll=0.1)
    client.request("POST", f"/executions/{execution['id']}/stop")
    assert client.wait(execution["id"], timeout=60)["state"] != "RUNNING"


def test_a_job_sends_an_event_with_the_package(client: aiflow.Client) -> None:
    """A job runs `python -c` with the installed package; Client() takes its settings from the
    job's environment and the event names the job's execution."""
    name = _name("py_job")
    key = _name("py/from_job")
    metric = _name("py_job_loss")
    model = _name("py_job_model")
    code = (
        "import aiflow; c = aiflow.Client(); "
        f"e = c.send_event({key!r}, 'hello', event_type='PY_JOB'); "
        f"c.log_metric({metric!r}, 'loss', 0.25, step=3); "
        f"c.register_model_version({model!r}, 'file:///tmp/job_model'); "
        "print(e['offset'])"
    )
    g = GraphBuilder(name)
    # The job's Python imports the package these tests import (installed, or on PYTHONPATH).
    package_root = str(Path(aiflow.__file__).resolve().parents[1])
    g.node("send").command([sys.executable, "-c", code]).env("PYTHONPATH", package_root)
    g.node("send").timeout_s(120)
    client.submit_workflow(g)
    execution = client.start_execution(name)
    done = client.wait(execution["id"], timeout=120)
    assert done["state"] == "SUCCEEDED", (done, client.execution_jobs(execution["id"]))
    events = client.list_events(key=key)
    assert len(events) == 1
    assert events[0]["value"] == "hello" and events[0]["event_type"] == "PY_JOB"
    assert events[0]["context"]["execution"] == execution["id"]
    # The job's metric point and model version name the job execution that made them.
    [job] = [j for j in client.execution_jobs(execution["id"]) if j.get("job") == "send"][:1]
    [point] = client.metric_points(metric, "loss")
    assert point["step"] == 3 and point.get("job_execution") == job["id"], (point, job)
    assert client.request("GET", f"/metrics/{metric}")["subject"] == "send"
    version = client.get_model_version(model, 1)
    assert version["source_job_execution"] == job["id"], version


def test_log_metric_creates_the_metric_and_appends_points(client: aiflow.Client) -> None:
    metric = _name("py_loss")
    assert client.log_metric(metric, "loss", 0.9, step=1) == {"written": 1}
    client.log_metric(metric, "loss", 0.5, step=2)
    points = client.metric_points(metric, "loss")
    assert [(p["step"], p["value"]) for p in points] == [(1, 0.9), (2, 0.5)]
    assert client.request("GET", f"/metrics/{metric}")["kind"] == "job"


def test_register_model_version_and_alias_lookup(client: aiflow.Client) -> None:
    model = _name("py_model")
    v1 = client.register_model_version(model, "file:///tmp/m1.pkl", tags={"by": "pytest"})
    v2 = client.register_model_version(model, "file:///tmp/m2.pkl", description="second")
    assert (v1["model"], v1["version"], v1["status"]) == (model, 1, "READY")
    assert v2["version"] == 2 and v2["uri"] == "file:///tmp/m2.pkl"
    client.set_model_alias(model, "production", 1)
    assert client.get_model_alias(model, "production")["version"] == 1
    client.set_model_alias(model, "production", 2)
    alias = client.get_model_alias(model, "production")
    assert (alias["model"], alias["alias"], alias["version"]) == (model, "production", 2)
    by_alias = client.get_model_version_by_alias(model, "production")
    assert by_alias["version"] == 2 and "production" in by_alias["aliases"]
    moves = client.alias_history(model, "production")
    assert [m["to_version"] for m in moves][-2:] in ([1, 2], [2, 1])
    # A metric about the model, kind "model".
    metric = _name("py_acc")
    client.log_metric(metric, "accuracy", 0.93, kind="model", subject=model, model_version=2)
    [point] = client.metric_points(metric, "accuracy")
    assert point["value"] == 0.93 and point.get("model_version") == 2
    # The registration was announced.
    events = client.list_events(key=f"model/{model}", event_type="MODEL_VERSION_CREATED")
    assert len(events) == 2


def test_upload_and_download_an_artifact_file(client: aiflow.Client, tmp_path: Path) -> None:
    name = _name("weights")
    data = bytes(range(256)) * 9000  # 2.2 MiB: several database chunks on PostgreSQL
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    with pytest.raises(aiflow.ApiError) as missing:
        client.upload_artifact(name, src)
    assert missing.value.status == 404
    stored = client.upload_artifact(name, src, uri=f"s3://models/{name}", kind="weights")
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["size"] == len(data) and stored["kind"] == "weights"
    back = tmp_path / "back.bin"
    assert client.download_artifact(name, back) == len(data)
    assert back.read_bytes() == data
    # Other bytes than the recorded ones are refused, and the stored file stays.
    src.write_bytes(b"tampered")
    with pytest.raises(aiflow.ApiError) as refused:
        client.upload_artifact(name, src)
    assert (refused.value.status, refused.value.code) == (422, "checksum_mismatch")
    client.download_artifact(name, back)
    assert back.read_bytes() == data
    empty = _name("empty")
    client.request("POST", "/artifacts", {"name": empty, "uri": "s3://nowhere"})
    with pytest.raises(aiflow.ApiError) as none:
        client.download_artifact(empty, tmp_path / "none.bin")
    assert none.value.status == 404 and none.value.field == "content"
    assert not (tmp_path / "none.bin").exists()


def test_errors_are_api_errors(client: aiflow.Client) -> None:
    with pytest.raises(aiflow.ApiError) as missing:
        client.get_execution("no-such-execution")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert missing.value.message
    with pytest.raises(aiflow.ApiError) as alias:
        client.get_model_alias(_name("nomodel"), "production")
    assert alias.value.status == 404
    bad = {"name": "bad", "nodes": [{"name": "a", "job": {"command": ["x"]}}],
           "data_edges": [{"from": "a", "to": "nowhere"}]}
    with pytest.raises(aiflow.ApiError) as invalid:
        client.submit_workflow(bad)
    assert invalid.value.status == 422
    assert invalid.value.field, invalid.value
    assert "422" in str(invalid.value)
    with pytest.raises(aiflow.ApiError) as empty_key:
        client.send_event("")
    assert empty_key.value.status in (400, 422) and empty_key.value.field == "key"


def test_the_server_accepts_the_python_built_graph(client: aiflow.Client) -> None:
    submitted = client.submit_workflow(online_learning())
    assert submitted["name"] == "online_learning" if "name" in submitted else submitted


def test_tokens_are_sent_and_a_job_gets_its_own(
    auth_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With authentication on: no token is a 401 ApiError, the admin's token works, and a job's
    `Client()` publishes with the token the scheduler gave it, for its own execution."""
    for var in ("AIFLOW_EXECUTION", "AIFLOW_JOB", "AIFLOW_JOB_EXECUTION", "AIFLOW_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(aiflow.ApiError) as anonymous:
        aiflow.Client(auth_server.url).send_event("py/auth")
    assert anonymous.value.status == 401
    monkeypatch.setenv("AIFLOW_TOKEN", auth_server.admin_token)
    admin = aiflow.Client(auth_server.url)
    assert admin.send_event("py/auth", "admin")["offset"] > 0

    name = _name("py_auth_job")
    key = _name("py/auth_job")
    code = f"import aiflow; aiflow.Client().send_event({key!r}, 'from the job')"
    g = GraphBuilder(name)
    package_root = str(Path(aiflow.__file__).resolve().parents[1])
    g.node("send").command([sys.executable, "-c", code]).env("PYTHONPATH", package_root)
    admin.submit_workflow(g)
    execution = admin.start_execution(name)
    done = admin.wait(execution["id"], timeout=120)
    assert done["state"] == "SUCCEEDED", (done, admin.execution_jobs(execution["id"]))
    [event] = admin.list_events(key=key)
    assert event["context"]["execution"] == execution["id"]
