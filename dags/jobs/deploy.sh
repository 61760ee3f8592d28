# Deploy: move the `production` alias to the validated candidate and mark it DEPLOYED
# (the MODEL_DEPLOYED event restarts the predictor).
. "$(dirname "$0")/common.sh"
if [ ! -f "$WORK/candidate" ]; then
  log "no validated candidate: production stays as it is"
  exit 0
fi
version=$(cat "$WORK/candidate")
af model alias set "$MODEL" production "$version" >/dev/null
af model version promote "$MODEL" "$version" --to DEPLOYED --reason "beat production on holdout" >/dev/null
rm -f "$WORK/candidate"
log "deployed $MODEL version $version as production"
