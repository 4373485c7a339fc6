#!/usr/bin/env bash
# Builds and runs every libFuzzer target in fuzz/ for a bounded time; fails on any crash,
# panic, timeout or out-of-memory. See RELIABILITY.md.
#
#   FUZZ_SECONDS=30 scripts/fuzz.sh            # every target, 30 s each (the default)
#   FUZZ_SECONDS=300 scripts/fuzz.sh promql_eval
#   FUZZ_RUNS=100000 scripts/fuzz.sh           # a fixed number of inputs per target from a
#                                              # fixed seed (FUZZ_SEED, 1): the same inputs
#                                              # on every machine, as CI runs it
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
FUZZ_RUNS="${FUZZ_RUNS:-}"
FUZZ_SEED="${FUZZ_SEED:-1}"
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

# Either a time budget (exploring: new inputs each run) or a fixed number of inputs from a
# fixed seed (a gate: a run passes or fails the same way wherever it runs, so CI does not
# go red on a finding that depends on the machine's speed).
# FUZZ_RUNS_<target> overrides FUZZ_RUNS for one target (those whose generated inputs run
# whole evaluations are hundreds of times slower per input).
budget_for() {
    local t="$1" override="FUZZ_RUNS_$1"
    if [ -n "$FUZZ_RUNS" ]; then
        local runs="${!override:-$FUZZ_RUNS}"
        budget=(-runs="$runs" -seed="$FUZZ_SEED")
        what="$runs inputs from seed $FUZZ_SEED"
    else
        budget=(-max_total_time="$FUZZ_SECONDS")
        what="${FUZZ_SECONDS}s"
    fi
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# libFuzzer runs on one thread: FUZZ_JOBS targets (one per core by default) run at once, so
# that a 2-core CI machine is not half idle for the length of the runs. Each target's output
# goes to its own log and is printed, in order, once all are done.
FUZZ_JOBS="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
run_target() {
    local t="$1"
    budget_for "$t"
    mkdir -p "$scratch/$t"
    echo "== $t: $what" >"$scratch/$t.head"
    local rc=0
    cargo fuzz run -s "$FUZZ_SANITIZER" --debug-assertions "$t" \
        "$scratch/$t" "corpus/$t" -- \
        "${budget[@]}" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
        -max_len=8192 -print_final_stats=1 >"$scratch/$t.out" 2>"$scratch/$t.log" || rc=$?
    echo "$rc" >"$scratch/$t.rc"
}
# FUZZ_FIRST names targets to start before the others (the longest runs, so that the rest
# fill the other cores meanwhile); the output keeps the list's order.
start_order=()
for t in ${FUZZ_FIRST:-}; do
    for u in "${targets[@]}"; do [ "$u" = "$t" ] && start_order+=("$t"); done
done
for t in "${targets[@]}"; do
    case " ${FUZZ_FIRST:-} " in *" $t "*) ;; *) start_order+=("$t") ;; esac
done
running=0
for t in "${start_order[@]}"; do
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
done
wait || true
failed=()
for t in "${targets[@]}"; do
    cat "$scratch/$t.head" "$scratch/$t.out" 2>/dev/null || true
    if [ "$(cat "$scratch/$t.rc" 2>/dev/null || echo missing)" != 0 ]; then
        failed+=("$t")
        grep -a -A3 'panicked at' "$scratch/$t.log" || true
        tail -n 60 "$scratch/$t.log"
    fi
    grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$scratch/$t.log" || true
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found failures in: ${failed[*]} (reproducers under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran their inputs without a failure"
