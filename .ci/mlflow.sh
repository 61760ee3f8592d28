#!/usr/bin/env bash
# The official MLflow client against a real `aiflow server` (tests/mlflow/test_mlflow_compat.py):
# SQLite, and PostgreSQL + NATS JetStream when they run here. Prints pytest's summary line and
# fails on a failure or when no test ran (pytest exit 5).
#
#   AIFLOW_CI_VENV=path   the virtualenv (default /var/tmp/aiflow-ci-venv); mlflow-skinny 3.x and
#                         pytest are pip-installed there when missing
#   AIFLOW_BIN=path       the server binary (default: cargo build --bin aiflow, debug)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${AIFLOW_CI_VENV:-/var/tmp/aiflow-ci-venv}"
if ! "$venv/bin/python" -c 'import mlflow, pytest, sys; sys.exit(0 if mlflow.__version__.startswith("3.") else 1)' 2>/dev/null; then
    echo "mlflow: installing mlflow-skinny 3.x and pytest into $venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'mlflow-skinny>=3,<4' pytest
fi

if [ -z "${AIFLOW_BIN:-}" ]; then
    cargo build --quiet --bin aiflow --locked
    export AIFLOW_BIN="${CARGO_TARGET_DIR:-target}/debug/aiflow"
fi

set +e
"$venv/bin/python" -m pytest -q -rs -p no:cacheprovider -W ignore::FutureWarning tests/mlflow
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "mlflow: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
