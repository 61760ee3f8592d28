# Featurise: scale the amount, flag night hours, and register the result as a dataset version.
. "$(dirname "$0")/common.sh"
features() {
  awk -F, 'NR == 1 { print "amount_scaled,night,label"; next }
           { printf "%.4f,%d,%d\n", $1 / 1300, ($2 < 6) ? 1 : 0, $3 }' "$1"
}
features "$WORK/raw.csv" > "$WORK/features.csv"
features "$WORK/holdout.csv" > "$WORK/holdout_features.csv"
rows=$(($(wc -l < "$WORK/features.csv") - 1))
ensure dataset create "$DATASET" --uri "file://$WORK/features.csv" --format csv \
  --field amount_scaled:float --field night:int --field label:int
version=$(af dataset version create "$DATASET" --uri "file://$WORK/features.csv" \
  --rows "$rows" ${AIFLOW_JOB_EXECUTION:+--produced-by "$AIFLOW_JOB_EXECUTION"} | json_field version)
log "registered dataset $DATASET version $version ($rows rows)"
