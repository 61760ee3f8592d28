# Ingest: generate a batch of card transactions (amount, hour, label) and a holdout set.
. "$(dirname "$0")/common.sh"
seed=$(( $(date +%s) % 100000 + ${AIFLOW_ATTEMPT:-1} ))
gen() {
  awk -v n="$1" -v seed="$2" 'BEGIN {
    srand(seed); print "amount,hour,label";
    for (i = 0; i < n; i++) {
      fraud = (rand() < 0.12);
      amount = fraud ? 400 + rand() * 900 : rand() * 700;
      hour = fraud ? int(rand() * 8) : int(6 + rand() * 18);
      if (rand() < 0.05) { hour = int(rand() * 24) }
      printf "%.2f,%d,%d\n", amount, hour, fraud;
    }
  }'
}
gen 5000 "$seed" > "$WORK/raw.csv"
gen 2000 "$((seed + 7))" > "$WORK/holdout.csv"
log "ingested $(($(wc -l < "$WORK/raw.csv") - 1)) transactions into $WORK/raw.csv"
