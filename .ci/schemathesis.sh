#!/usr/bin/env bash
# Schemathesis against a real `aiflow server` (temporary data folder, the dags/ examples): every
# operation of the served OpenAPI document gets generated requests, valid and invalid; fails on a
# 5xx or a response that is not as documented (body schema, status code, content type). Prints
# schemathesis' summary.
#
#   SCHEMATHESIS_EXAMPLES=25   test cases per operation and phase
#   SCHEMATHESIS_SEED=1        the run is reproducible with the same seed (and code)
#   SCHEMATHESIS_CHECKS=…      schemathesis' --checks
#   AIFLOW_BIN=path            the server binary (default: cargo build --bin aiflow)
#
# Schemathesis comes from PyPI into a virtualenv kept in /var/tmp/aiflow-tools/venv.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${AIFLOW_TOOLS:-/var/tmp/aiflow-tools}"
version=4.32.5
examples="${SCHEMATHESIS_EXAMPLES:-25}"
seed="${SCHEMATHESIS_SEED:-1}"
# No 5xx, responses as documented (body schema, status code, content type).
checks="${SCHEMATHESIS_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance}"
venv="$tools/venv"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    echo "schemathesis: installing $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin="${AIFLOW_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --quiet --bin aiflow --locked
    bin="${CARGO_TARGET_DIR:-target}/debug/aiflow"
fi

work=$(mktemp -d)
server_pid=""
stop_server() {
    [ -n "$server_pid" ] || return 0
    # Jobs the server started run in process groups of their own: note them first, stop the
    # server, then end what is left of them.
    local jobs
    jobs=$(ps -o pid= --ppid "$server_pid" 2>/dev/null || true)
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    for j in $jobs; do
        kill -KILL -- "-$j" 2>/dev/null || kill -KILL "$j" 2>/dev/null || true
    done
    server_pid=""
}
trap 'stop_server; rm -rf "$work"' EXIT

RUST_LOG="${RUST_LOG:-warn}" "$bin" server --listen 127.0.0.1:0 --data-dir "$work/data" --dags dags \
    >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
base=""
for _ in $(seq 1 300); do
    base=$(sed -n 's|^ *API *\(http://[0-9.:]*\)/api/v1.*|\1|p' "$work/server.log" | head -1)
    [ -n "$base" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "schemathesis: the server did not start"; exit 1; }
    sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log"; echo "schemathesis: no banner from the server"; exit 1; }
echo "schemathesis: $version against $base (seed $seed, $examples examples per operation)"

# The event stream never ends by design (Server-Sent Events): it is left out.
run_schemathesis() {
    (cd "$work" && timeout 900 "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
        --url "$base" \
        --checks "$checks" \
        --exclude-path /api/v1/events/stream \
        --max-examples "$examples" --seed "$seed" \
        --request-timeout 20 --workers 2 \
        --output-truncate false) >"$work/st.log" 2>&1
}
set +e
run_schemathesis
rc=$?
# A crash inside the tool's own test generation (seen: hypothesis' "AST constructor recursion
# depth mismatch" under CPython 3.11), with no failed check of the API, is run once more.
if [ $rc -ne 0 ] && grep -q "Runtime Error" "$work/st.log" && ! grep -q "= FAILURES =" "$work/st.log"; then
    echo "schemathesis: the tool itself failed (Runtime Error, no failed check); running it once more"
    grep -A3 "Runtime Error" "$work/st.log" | head -8
    run_schemathesis
    rc=$?
fi
set -e
stop_server

if [ $rc -ne 0 ]; then
    # Everything: the failures, with the curl line that reproduces each.
    cat "$work/st.log"
    echo "schemathesis: server errors in its log:"
    grep -E "ERROR|panicked" "$work/server.log" | tail -20 || true
    echo "schemathesis: FAILED (exit $rc)"
    exit 1
fi
# Schemathesis' summary, without its `=== … ===` rulers (they read like another test runner's
# closing line).
sed -n '/= SUMMARY =/,$p' "$work/st.log" | grep -v -E '^=+( |$)' || true
echo "schemathesis: no server error, every response matches its schema"
