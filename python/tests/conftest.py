"""A real `aiflow server` for the package's tests.

The binary comes from `AIFLOW_BIN` (default `/var/tmp/aiflow-ci-target/debug/aiflow`, the CI's
build). It listens on a free port with a temporary data folder and no DAGs, and is stopped
after the test session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import uuid
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

try:
    import aiflow
except ImportError:  # not installed: test the package of this checkout
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import aiflow

BIN = os.environ.get("AIFLOW_BIN") or "/var/tmp/aiflow-ci-target/debug/aiflow"

# The distributed shape: with `AIFLOW_TEST_POSTGRES` (an admin URL such as
# `postgres://postgres@127.0.0.1:5432/test`) and `AIFLOW_TEST_NATS` (`nats://127.0.0.1:4222`),
# every test server gets a fresh PostgreSQL database (dropped afterwards) and a NATS cluster name
# of its own, instead of SQLite in its data folder.
PG_ADMIN = os.environ.get("AIFLOW_TEST_POSTGRES", "")
NATS = os.environ.get("AIFLOW_TEST_NATS", "")


def _psql(sql: str, check: bool = True) -> None:
    done = subprocess.run(["psql", PG_ADMIN, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=check, capture_output=True)
    if done.returncode != 0:
        print(f"psql {sql!r}: {done.stderr.decode(errors='replace').strip()}", file=sys.stderr)


class Store:
    """Where a test server keeps its state: `args` (and `server_args`) for `aiflow server`,
    `token_args` for `aiflow token create`."""

    def __init__(self, tmp: Path) -> None:
        self.db = ""
        if not PG_ADMIN:
            self.args = ["--data-dir", str(tmp / "data")]
            self.token_args = self.args
            self.server_args: List[str] = []
            return
        if not NATS:
            raise RuntimeError("AIFLOW_TEST_POSTGRES needs AIFLOW_TEST_NATS too")
        tag = uuid.uuid4().hex[:10]
        self.db = f"aiflow_py_{tag}"
        _psql(f"CREATE DATABASE {self.db}")
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.args = ["--data-dir", str(tmp / "data"), "--database", url]
        self.token_args = ["--database", url]
        self.cluster = f"py{tag}"
        self.server_args = ["--nats", NATS, "--cluster", self.cluster,
                            "--nats-stream", f"PY{tag.upper()}_EVENTS"]

    def drop(self) -> None:
        if self.db:
            # Not fatal at teardown: .ci/python.sh drops what is left afterwards.
            _psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)", check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An `aiflow server` on a free port with a temporary data folder."""

    def __init__(self, tmp: Path, extra: Sequence[str] = (), store: Optional[Store] = None) -> None:
        if not os.access(BIN, os.X_OK):
            raise RuntimeError(f"no aiflow binary at {BIN} (set AIFLOW_BIN)")
        self.store = store or Store(tmp)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "wb")
        # The server reads AIFLOW_* settings from its environment: start it from a clean one.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIFLOW_")}
        env["RUST_LOG"] = os.environ.get("AIFLOW_TEST_LOG", "warn")
        self.proc = subprocess.Popen(
            [
                BIN,
                "server",
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.store.args,
                *self.store.server_args,
                "--dags",
                "none",
                *extra,
            ],
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"aiflow server exited with {self.proc.returncode}: "
                    + self.log_path.read_text()
                )
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ready":
                        self._start_worker(tmp, env)
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("aiflow server did not become ready in 60 s")

    def _start_worker(self, tmp: Path, env: Dict[str, str]) -> None:
        """The distributed shape runs jobs on workers: one on the default queue, in the
        repository (where the tests' job commands are)."""
        self.worker: Optional["subprocess.Popen[bytes]"] = None
        if not self.store.server_args:
            return
        self.worker = subprocess.Popen(
            [BIN, "--server", self.url, "worker", "--nats", NATS,
             "--cluster", self.store.cluster, "--name", "pytest", "--slots", "4",
             "--queue", "default", "--data-dir", str(tmp / "worker")],
            cwd=Path(__file__).resolve().parents[2],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def stop(self) -> None:
        if getattr(self, "worker", None) is not None:
            assert self.worker is not None
            self.worker.terminate()
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.store.drop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("aiflow"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> aiflow.Client:
    """A client of the test server, outside any job."""
    for var in ("AIFLOW_EXECUTION", "AIFLOW_JOB", "AIFLOW_JOB_EXECUTION", "AIFLOW_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return aiflow.Client(server.url, timeout=10)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with authentication on (`--auth`); `admin_token` holds an admin's token."""
    tmp = tmp_path_factory.mktemp("aiflow_auth")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFLOW_")}
    store = Store(tmp)
    out = subprocess.run(
        [BIN, "token", "create", "--role", "admin", "--name", "pytest",
         *store.token_args, "--output", "json"],
        check=True, capture_output=True, env=env,
    )
    srv = Server(tmp, ["--auth"], store)
    srv.admin_token = json.loads(out.stdout)["token"]  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()
