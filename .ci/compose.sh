#!/usr/bin/env bash
# deploy/docker-compose.yml for real on this machine's Docker engine, with no registry: builds
# the images of deploy/ from Debian packages on the local base image (.ci/docker.sh), starts the
# stack (PostgreSQL, NATS, two servers, two workers) under the project name aiflow-ci on ports
# that leave this machine's own PostgreSQL and NATS alone, runs a workflow whose job is a
# container of aiflow/jobs:local on the container worker (python3 and the `aiflow` package,
# sending an event to AIFLOW_URL from inside the container), checks its state, its log, the event
# and the worker's `containers`, and takes the stack down again (also on failure).
#
# Skips loudly (exit 0) only when no Docker engine runs; anything else that fails fails the
# run, with the stack's logs printed.
#
# The aiflow image gets the debug binary `cargo test --workspace` built
# ($CARGO_TARGET_DIR/debug/aiflow, or AIFLOW_BIN), copied into a temporary build context: CI
# makes no release build. Users copy the release binary (docs/deployment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

BASE="${AIFLOW_TEST_IMAGE:-aiflow-test/debian:bookworm}"
BIN="${AIFLOW_BIN:-${CARGO_TARGET_DIR:-target}/debug/aiflow}"
PROJECT="${AIFLOW_COMPOSE_PROJECT:-aiflow-ci}"
export AIFLOW_NETWORK="${AIFLOW_NETWORK:-aiflow-ci}"
export AIFLOW_PORT1="${AIFLOW_PORT1:-18080}"
export AIFLOW_PORT2="${AIFLOW_PORT2:-18081}"
export AIFLOW_NATS_PORT="${AIFLOW_NATS_PORT:-14222}"
export AIFLOW_POSTGRES_PORT="${AIFLOW_POSTGRES_PORT:-15432}"
export AIFLOW_BASE_IMAGE="$BASE"
JOB_IMAGE="aiflow/jobs:local"

start=$(date +%s)
lap=$start
timing() {
  local now
  now=$(date +%s)
  echo "ci: compose: $1 in $((now - lap)) s ($((now - start)) s in all)"
  lap=$now
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "ci: WARNING: no Docker engine answers; deploy/docker-compose.yml is NOT checked (SKIPPED)" >&2
  exit 0
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "ci: compose: installing Debian's docker-compose"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends docker-compose >/dev/null; } \
    || { echo "ci: compose: docker-compose could not be installed" >&2; exit 1; }
fi
echo "ci: compose: $(docker-compose version --short 2>/dev/null || echo '?') on Docker $(docker version --format '{{.Server.Version}}')"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "ci: compose: the base image $BASE is missing (.ci/docker.sh builds it)" >&2
  exit 1
fi
if ! [ -x "$BIN" ]; then
  echo "ci: compose: no aiflow binary at $BIN (cargo build --bin aiflow)" >&2
  exit 1
fi

compose() { docker-compose -p "$PROJECT" -f "$repo/deploy/docker-compose.yml" "$@"; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/aiflow-compose.XXXXXX")"
context="$tmp/context"
mkdir "$context"
up=0
finish() {
  local rc=$?
  if [ "$up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "ci: compose: FAILED; the stack's logs:" >&2
      compose ps >&2 || true
      compose logs --no-color --tail=200 >&2 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || echo "ci: compose: WARNING: down failed" >&2
  fi
  rm -rf "$tmp"
  [ "$rc" = 0 ] || echo "ci: compose: FAILED after $(($(date +%s) - start)) s" >&2
  exit "$rc"
}
trap finish EXIT

# A stack left by an interrupted run would hold the ports and the network.
compose down -v --remove-orphans >/dev/null 2>&1 || true

# The images, at once (a cold build mostly waits on the Debian mirror), each on the engine's
# layer cache (a warm run only sends the contexts). The apt steps run on the host's network.
build() {
  local tag="$1" log="$tmp/build-${1//[\/:]/_}.log"
  shift
  local t0
  t0=$(date +%s)
  if ! docker build -q --network host --build-arg "BASE=$BASE" -t "$tag" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "ci: compose: building $tag failed" >&2
    return 1
  fi
  echo "ci: compose: built $tag in $(($(date +%s) - t0)) s"
}
cp "$BIN" "$context/aiflow"
cp deploy/Dockerfile "$context/Dockerfile"
pids=()
build aiflow:local "$context" & pids+=($!)
build aiflow/postgres:15 deploy/images/postgres & pids+=($!)
build aiflow/nats:2.9 deploy/images/nats & pids+=($!)
build "$JOB_IMAGE" -f deploy/images/jobs/Dockerfile . & pids+=($!)
built=0
for pid in "${pids[@]}"; do wait "$pid" || built=1; done
[ "$built" = 0 ] || exit 1
rm -f "$context/aiflow"
# Superseded builds (a new binary each run) would pile up on the engine.
docker image prune -f --filter label=io.aiflow.deploy >/dev/null
timing "images built"

up=1
compose up -d --no-build
timing "stack started"

# Both servers ready (200 once PostgreSQL and NATS answer), then the check itself. The check
# runs on the host with the repository's Python package.
PYTHONPATH="$repo/python/src" python3 - "$AIFLOW_PORT1" "$AIFLOW_PORT2" "$JOB_IMAGE" <<'PY'
import json
import subprocess
import sys
import time
import urllib.request

import aiflow

port1, port2, image = sys.argv[1], sys.argv[2], sys.argv[3]
urls = [f"http://127.0.0.1:{port1}", f"http://127.0.0.1:{port2}"]


def fail(message):
    print(f"ci: compose: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode("utf-8", "replace")


# /readyz of both replicas: one leads, the other stands by.
roles = {}
deadline = time.monotonic() + 120
for url in urls:
    while True:
        try:
            status, body = get(url + "/readyz")
            if status == 200:
                roles[url] = json.loads(body).get("scheduler", {}).get("role")
                break
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        if time.monotonic() > deadline:
            fail(f"{url}/readyz not 200 within 120 s (last: {last})")
        time.sleep(0.5)
print(f"ci: compose: servers ready: {roles}")
if sorted(roles.values()) != ["leader", "standby"]:
    fail(f"expected one leader and one standby, got {roles}")

client = aiflow.Client(urls[1], timeout=10)

# The container worker has registered, offering containers.
deadline = time.monotonic() + 60
while True:
    workers = client.request("GET", "/workers")
    workers = workers.get("items", workers) if isinstance(workers, dict) else workers
    by_name = {w.get("name"): w for w in workers}
    if "worker1" in by_name and "worker2" in by_name:
        break
    if time.monotonic() > deadline:
        fail(f"workers worker1 and worker2 not both listed within 60 s: {workers}")
    time.sleep(0.5)
if by_name["worker1"].get("containers") is not True:
    fail(f"worker1 does not offer containers: {by_name['worker1']}")
if by_name["worker2"].get("containers"):
    fail(f"worker2 offers containers but was not asked to: {by_name['worker2']}")
print("ci: compose: GET /api/v1/workers: worker1 containers=true, worker2 containers=false")

script = r"""
import os, aiflow
job = os.environ["AIFLOW_JOB"]
print(f"hello from {job} of {os.environ['AIFLOW_EXECUTION']} on {os.environ['AIFLOW_WORKER']} in a container")
aiflow.Client().send_event("ci/compose", job, event_type="COMPOSE_CHECK")
print(f"event sent to {os.environ['AIFLOW_URL']}")
"""
doc = {
    "name": "compose_check",
    "nodes": [
        {"name": "boxed", "job": {"image": image, "pull": "never", "timeout_s": 120,
                                  "command": ["python3", "-c", script]}}
    ],
}
client.submit_workflow(doc)
# Started through the standby, which forwards it to the leader. Just after the leader took the
# lease it may not answer forwarded requests yet: the standby says 503 "retry shortly".
deadline = time.monotonic() + 30
while True:
    try:
        execution = client.start_execution("compose_check")
        break
    except aiflow.ApiError as e:
        if e.status != 503 or time.monotonic() > deadline:
            raise
        print(f"ci: compose: retrying the start: {e}")
        time.sleep(0.5)
eid = execution["id"]
print(f"ci: compose: execution {eid} started")
done = client.wait(eid, timeout=180)
jobs = client.execution_jobs(eid)
log = ""
try:
    _, log = get(f"{urls[0]}/api/v1/executions/{eid}/jobs/boxed/logs")
except Exception as e:  # noqa: BLE001 - printed below
    log = f"(no log: {e})"
print("ci: compose: the job's log:\n" + log.rstrip())
if done.get("state") != "SUCCEEDED":
    fail(f"execution {eid} ended {done.get('state')}: {done}; jobs: {jobs}")
boxed = [j for j in jobs if j.get("job") == "boxed"]
if not boxed or boxed[-1].get("state") != "SUCCEEDED":
    fail(f"job boxed did not succeed: {jobs}")
if f"command 1/1: container aiflow-{eid}-boxed-1 from {image}:" not in log:
    fail("the job's log does not show it ran as a container of the job image")
if f"hello from boxed of {eid} on worker1 in a container" not in log:
    fail("the job's log lacks its greeting")
if "event sent to http://server1:8080" not in log:
    fail("the job's log lacks the event it sent")
events = client.list_events(key="ci/compose", event_type="COMPOSE_CHECK")
if not any(e.get("value") == "boxed" for e in events):
    fail(f"the job's event is not stored: {events}")
left = subprocess.run(
    ["docker", "ps", "-aq", "--filter", f"label=io.aiflow.execution={eid}"],
    capture_output=True, text=True, check=True,
).stdout.split()
if left:
    fail(f"the job's container was not removed: {left}")
print(f"ci: compose: job boxed SUCCEEDED on worker1 in {image}; its event is stored")
PY
timing "workflow checked"

compose down -v --remove-orphans >/dev/null 2>&1
up=0
timing "stack removed"
echo "ci: compose: deploy/docker-compose.yml checked in $(($(date +%s) - start)) s"
