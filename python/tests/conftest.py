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
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import pytest

try:
    import aiflow
except ImportError:  # not installed: test the package of this checkout
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import aiflow

BIN = os.environ.get("AIFLOW_BIN") or "/var/tmp/aiflow-ci-target/debug/aiflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An `aiflow server` on a free port with a temporary data folder."""

    def __init__(self, tmp: Path, extra: Sequence[str] = ()) -> None:
        if not os.access(BIN, os.X_OK):
            raise RuntimeError(f"no aiflow binary at {BIN} (set AIFLOW_BIN)")
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
                "--data-dir",
                str(tmp / "data"),
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
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("aiflow server did not become ready in 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


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
    out = subprocess.run(
        [BIN, "token", "create", "--role", "admin", "--name", "pytest",
         "--data-dir", str(tmp / "data"), "--output", "json"],
        check=True, capture_output=True, env=env,
    )
    srv = Server(tmp, ["--auth"])
    srv.admin_token = json.loads(out.stdout)["token"]  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()
