# Evaluate: score the new version on the holdout set; mark it VALIDATED when it beats the
# version behind the `production` alias (or when there is none yet).
. "$(dirname "$0")/common.sh"
version=$(printf '%s' "${AIFLOW_EVENT:-}" | json_field value)
[ -n "$version" ] || { log "no model version in AIFLOW_EVENT"; exit 1; }
accuracy() {
  awk -F, -v model="$1" 'BEGIN { while ((getline l < model) > 0) { split(l, kv, "="); p[kv[1]] = kv[2] } }
    NR > 1 { s = p["w"] * $1 + (1 - p["w"]) * $2; ok += ((s > p["t"]) == $3); n++ }
    END { printf "%.4f\n", ok / n }' "$WORK/holdout_features.csv"
}
new=$(accuracy "$WORK/models/$MODEL-v$version.txt")
current=$(af model alias show "$MODEL" production 2>/dev/null | json_field version || true)
best=0
if [ -n "$current" ] && [ -f "$WORK/models/$MODEL-v$current.txt" ]; then
  best=$(accuracy "$WORK/models/$MODEL-v$current.txt")
fi
ensure metric create holdout_accuracy --kind model --subject "$MODEL"
version_id=$(af model version show "$MODEL" "$version" | json_field id)
af metric log holdout_accuracy accuracy "$new" --model-version "$version_id" >/dev/null
if awk -v a="$new" -v b="$best" 'BEGIN { exit !(a > b) }'; then
  af model version promote "$MODEL" "$version" --to VALIDATED \
    --reason "holdout accuracy $new beats production ${current:-none} ($best)" >/dev/null
  echo "$version" > "$WORK/candidate"
  log "version $version: holdout accuracy $new > $best: VALIDATED"
else
  rm -f "$WORK/candidate"
  log "version $version: holdout accuracy $new does not beat production v$current ($best)"
fi
