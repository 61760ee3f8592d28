# Train: fit a one-feature-pair linear rule (weights and threshold by grid search) on the latest
# features, and register it as a model version with its training metrics and lineage.
. "$(dirname "$0")/common.sh"
dataset_version=$(printf '%s' "${AIFLOW_EVENT:-}" | json_field value)
fit=$(awk -F, 'NR > 1 { a[NR] = $1; n_[NR] = $2; y[NR] = $3; m = NR }
  END {
    best = -1;
    for (w = 0.1; w <= 0.91; w += 0.1) for (t = 0.2; t <= 0.81; t += 0.05) {
      ok = 0; for (i = 2; i <= m; i++) { s = w * a[i] + (1 - w) * n_[i]; ok += ((s > t) == y[i]) }
      acc = ok / (m - 1); if (acc > best) { best = acc; bw = w; bt = t }
    }
    printf "%.2f %.2f %.4f\n", bw, bt, best
  }' "$WORK/features.csv")
set -- $fit
file="$WORK/models/$MODEL-$(date +%s%N).txt"
printf 'w=%s\nt=%s\n' "$1" "$2" > "$file"
ensure model create "$MODEL" --description "fraud detector of the online-learning example"
created=$(af model version create "$MODEL" --uri "file://$file" --status READY \
  ${dataset_version:+--input "$DATASET@$dataset_version"} \
  ${AIFLOW_JOB_EXECUTION:+--source-job "$AIFLOW_JOB_EXECUTION"})
version=$(printf '%s' "$created" | json_field version)
version_id=$(printf '%s' "$created" | json_field id)
ensure metric create train_accuracy --kind model --subject "$MODEL"
af metric log train_accuracy accuracy "$3" --model-version "$version_id" \
  ${AIFLOW_JOB_EXECUTION:+--job-execution "$AIFLOW_JOB_EXECUTION"} >/dev/null
cp "$file" "$WORK/models/$MODEL-v$version.txt"
log "trained $MODEL version $version: w=$1 t=$2 train accuracy $3"
