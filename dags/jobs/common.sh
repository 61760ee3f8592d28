# Shared by the example jobs: where data lives and how to call AI Flow.
# AIFLOW_BIN is the server's own binary; AIFLOW_URL, AIFLOW_EXECUTION and friends come from the
# scheduler (see docs: "What a running job is given").
set -eu
AIFLOW="${AIFLOW_BIN:-aiflow}"
WORK="${AIFLOW_DATA_DIR:-.aiflow}/work"
case "$WORK" in /*) ;; *) WORK="$PWD/$WORK" ;; esac
MODEL=fraud_detector
DATASET=online_features
mkdir -p "$WORK/models"

af() { "$AIFLOW" --output json "$@"; }

# The value of a JSON field from standard input (flat objects only; no jq needed).
json_field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" | head -n 1; }

# Create-if-missing: a 409 from the server means it exists already.
ensure() { "$AIFLOW" --output json "$@" >/dev/null 2>&1 || true; }

log() { echo "[$AIFLOW_JOB] $*"; }
