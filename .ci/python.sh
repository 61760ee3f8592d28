#!/usr/bin/env bash
# The Python package (python/) against a real `aiflow server` (python/tests): installs it into
# the CI virtualenv (afresh each run) and runs its pytest tests. Prints pytest's summary line and
# fails on a failure or when no test ran (pytest exit 5).
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

set +e
out=$("$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests 2>&1)
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out"
fi
echo "python: $(printf '%s\n' "$out" | tail -n 1)"
if [ "$rc" -eq 5 ]; then
    echo "python: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
