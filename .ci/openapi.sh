#!/usr/bin/env bash
# The served OpenAPI document against the OpenAPI specification (openapi-spec-validator): starts
# `aiflow server` on a temporary data folder, fetches /api/v1/openapi.json and validates it.
#
#   AIFLOW_BIN=path        the server binary (default: cargo build --bin aiflow)
#   AIFLOW_CI_VENV=dir     the virtualenv with openapi-spec-validator (default
#                          /var/tmp/aiflow-ci-venv; made and filled from PyPI when missing)
#   OPENAPI_OUT=file       also keep the document there
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${AIFLOW_CI_VENV:-/var/tmp/aiflow-ci-venv}"
if ! "$venv/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
    echo "openapi: installing openapi-spec-validator into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check openapi-spec-validator
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
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    server_pid=""
}
trap 'stop_server; rm -rf "$work"' EXIT

mkdir "$work/dags"
RUST_LOG="${RUST_LOG:-warn}" "$bin" server --listen 127.0.0.1:0 --data-dir "$work/data" \
    --dags "$work/dags" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
base=""
for _ in $(seq 1 300); do
    base=$(sed -n 's|^ *API *\(http://[0-9.:]*\)/api/v1.*|\1|p' "$work/server.log" | head -1)
    [ -n "$base" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "openapi: the server did not start"; exit 1; }
    sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log"; echo "openapi: no banner from the server"; exit 1; }
curl -sSf "$base/api/v1/openapi.json" -o "$work/openapi.json"
stop_server
[ -z "${OPENAPI_OUT:-}" ] || cp "$work/openapi.json" "$OPENAPI_OUT"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
