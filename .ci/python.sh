#!/usr/bin/env bash
# The Python package (python/) against a real `aiflow server` (python/tests): installs it into
# the CI virtualenv (afresh each run) and runs its pytest tests twice, against the embedded server
# (SQLite) and against the distributed one (PostgreSQL + NATS). Prints pytest's summary line of
# each and fails on a failure or when no test ran (pytest exit 5).
#
#   AIFLOW_CI_VENV=path   the virtualenv (default /var/tmp/aiflow-ci-venv); pytest is
#                         pip-installed there when missing
#   AIFLOW_BIN=path       the server binary (default: cargo build --bin aiflow, debug)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${AIFLOW_CI_VENV:-/var/tmp/aiflow-ci-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import pytest' 2>/dev/null; then
    echo "python: installing pytest into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pytest
fi
# The package under test, reinstalled each run (no dependencies: it has none).
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python

if [ -z "${AIFLOW_BIN:-}" ]; then
    cargo build --quiet --bin aiflow --locked
    export AIFLOW_BIN="${CARGO_TARGET_DIR:-target}/debug/aiflow"
fi
export AIFLOW_BIN

# One pytest run; `$1` names the shape in the summary line.
run_tests() {
    local out rc
    set +e
    out=$("$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests 2>&1)
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        printf '%s\n' "$out"
    fi
    echo "python ($1): $(printf '%s\n' "$out" | tail -n 1)"
    if [ "$rc" -eq 5 ]; then
        echo "python ($1): pytest collected no tests" >&2
        return 1
    fi
    return "$rc"
}

# 1. Embedded: SQLite in each test server's data folder.
rc=0
run_tests embedded || rc=$?

# 2. Distributed: PostgreSQL (a fresh database per test server, from AIFLOW_TEST_POSTGRES_URL,
#    default postgres://postgres@127.0.0.1:5432/test) and NATS JetStream (a nats-server of this
#    run's own, on a free port, so no stream is left behind on a shared one).
pg="${AIFLOW_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
if ! psql "$pg" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "python (distributed): !!!!!!!! SKIPPED: PostgreSQL is not reachable at $pg !!!!!!!!"
elif [ ! -x "$nats_bin" ]; then
    echo "python (distributed): !!!!!!!! SKIPPED: no nats-server binary !!!!!!!!"
else
    nats_dir=$(mktemp -d)
    nats_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$nats_dir" >"$nats_dir/nats.log" 2>&1 &
    nats_pid=$!
    trap 'kill "$nats_pid" 2>/dev/null || true; wait "$nats_pid" 2>/dev/null || true; rm -rf "$nats_dir"' EXIT
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
        sleep 0.1
    done
    AIFLOW_TEST_POSTGRES="$pg" AIFLOW_TEST_NATS="nats://127.0.0.1:$nats_port" \
        run_tests "distributed: PostgreSQL + NATS" || rc=$?
    # Databases a test server could not drop at its end.
    for db in $(psql "$pg" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'aiflow\_py\_%'"); do
        psql "$pg" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    done
fi
exit "$rc"
