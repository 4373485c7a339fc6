#!/usr/bin/env bash
# Builds and runs every libFuzzer target in fuzz/ for a bounded time; fails on any crash,
# panic, timeout or out-of-memory. See RELIABILITY.md.
#
#   FUZZ_SECONDS=30 scripts/fuzz.sh            # every target, 30 s each (the default)
#   FUZZ_SECONDS=300 scripts/fuzz.sh promql_eval
#
# Only the stable toolchain is needed: cargo-fuzz asks for nightly flags, which
# RUSTC_BOOTSTRAP=1 unlocks. Targets run without a sanitizer (safe Rust; the checks that
# matter are panics, overflow via debug assertions, hangs and memory), which keeps builds and
# runs fast on small CI machines; FUZZ_SANITIZER=address turns AddressSanitizer on.
# Inputs a run discovers go to a scratch directory, so the committed seeds stay as they are;
# crash reproducers land in fuzz/artifacts/<target>/.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
# A single input taking longer than this (seconds) is reported as a hang.
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-10}"
# Per-input memory cap in MB (libFuzzer's -rss_limit_mb).
FUZZ_RSS_MB="${FUZZ_RSS_MB:-2048}"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build of every target (a build per target would relink the libraries six times).
cargo fuzz build -s "$FUZZ_SANITIZER" --debug-assertions

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "== $t: ${FUZZ_SECONDS}s"
    if ! cargo fuzz run -s "$FUZZ_SANITIZER" --debug-assertions "$t" \
        "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
        -max_len=8192 -print_final_stats=1 2>"$scratch/$t.log"; then
        failed+=("$t")
        tail -n 60 "$scratch/$t.log"
    fi
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$scratch/$t.log" || true
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found failures in: ${failed[*]} (reproducers under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${FUZZ_SECONDS}s each without a failure"
