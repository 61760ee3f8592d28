#!/usr/bin/env bash
# Fuzzes the input parsers for a bounded time each; fails on a crash (a panic), a hang (one input
# over FUZZ_INPUT_TIMEOUT s) or a build error. The targets live in fuzz/ (cargo fuzz, libFuzzer);
# their committed seeds in fuzz/seeds/TARGET, readable text (see fuzz/src/lib.rs for the formats).
#
#   FUZZ_SECONDS=45        time per target
#   FUZZ_TARGETS="graph …" which targets (default: all four)
#   FUZZ_INPUT_TIMEOUT=10  one input taking longer counts as a hang
#
# cargo-fuzz is installed once into /var/tmp/aiflow-tools (AIFLOW_TOOLS); libFuzzer needs
# unstable rustc flags, which RUSTC_BOOTSTRAP=1 allows on the stable toolchain. The corpus that
# fuzzing grows is kept between runs in /var/tmp/aiflow-fuzz-corpus, outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${AIFLOW_TOOLS:-/var/tmp/aiflow-tools}"
seconds="${FUZZ_SECONDS:-45}"
targets="${FUZZ_TARGETS:-graph event_filter tag_uri cron}"
input_timeout="${FUZZ_INPUT_TIMEOUT:-10}"
target_dir="${CARGO_TARGET_DIR:-/var/tmp/aiflow-ci-target}/fuzz"
corpus_root="${FUZZ_CORPUS:-/var/tmp/aiflow-fuzz-corpus}"
cargo_fuzz_version=0.13.2

export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools"
    cargo install --locked --quiet --root "$tools" cargo-fuzz --version "$cargo_fuzz_version"
fi
export RUSTC_BOOTSTRAP=1
# -s none: the code under test is safe Rust, so AddressSanitizer adds nothing but time;
# -a: debug assertions, so arithmetic overflow panics as it does in tests.
flags=(-s none -a --target-dir "$target_dir")

start=$(date +%s)
echo "fuzz: building the targets"
(cd fuzz && cargo fetch --locked --quiet && cargo fuzz build "${flags[@]}")

failed=()
for t in $targets; do
    corpus="$corpus_root/$t"
    artifacts="$target_dir/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$target_dir/fuzz-$t.log"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="$t.dict")
    echo "fuzz: $t for ${seconds} s"
    if (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$corpus" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -max_len=4096 \
        -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}") >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
        echo "fuzz: $t ok: $runs inputs, coverage $cov, corpus $(find "$corpus" -type f | wc -l) files"
    else
        failed+=("$t")
        echo "fuzz: $t FAILED; the end of its log ($log):"
        grep -v -E '^#[0-9]+' "$log" | tail -40
        for f in "$artifacts"/*; do
            [ -f "$f" ] || continue
            echo "fuzz: input $f (hex):"
            od -A d -t x1z "$f" | head -20
        done
    fi
done

echo "fuzz: finished in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}"
    exit 1
fi
echo "fuzz: every target ran clean"
