# Predictor (streaming): serves predictions with the production model until it is restarted.
. "$(dirname "$0")/common.sh"
version=$(af model alias show "$MODEL" production 2>/dev/null | json_field version || true)
if [ -z "$version" ] || [ ! -f "$WORK/models/$MODEL-v$version.txt" ]; then
  log "no production model yet; waiting for the first deployment"
  exec sleep 86400
fi
. "$WORK/models/$MODEL-v$version.txt"
log "serving predictions with $MODEL version $version (w=$w t=$t)"
i=0
while :; do
  i=$((i + 1))
  awk -v w="$w" -v t="$t" -v seed="$i" 'BEGIN { srand(seed); a = rand(); n = (rand() < 0.2);
    s = w * a + (1 - w) * n; printf "[predictor] request %d: amount_scaled=%.2f night=%d -> %s\n", seed, a, n, (s > t) ? "FRAUD" : "ok" }'
  sleep 2
done
