#!/usr/bin/env bash
# Rule unit tests and rule evaluation benchmark (issue 4 "Benchmark").
#
# 1. gen.py writes one large `promtool test rules` file (6,000 series, 400 rules: 160
#    recording, 240 alerting, 121 evaluation steps) that passes under both runners.
# 2. `lookout rules test` (release build) and Debian's `promtool test rules` run it side by
#    side: wall time with hyperfine (or a loop when hyperfine is missing), peak RSS with
#    /usr/bin/time -v, and the ratios.
# 3. The embedded-mode evaluation of 1,000 rules over 10,000 series
#    (crates/lookout-evaluator/benches/rules_eval.rs), when that bench exists.
#
# Environment: RUNS (timed runs per command, default 5), BENCH_WORK (work directory),
# JOBS / INSTANCES / MINUTES (size of the generated file; defaults 80 / 25 / 120).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
WORK=${BENCH_WORK:-/tmp/lookout-rules-bench}
mkdir -p "$WORK"
command -v promtool >/dev/null || { echo "needs promtool (Debian package prometheus)" >&2; exit 1; }

echo "== building lookout (release)" >&2
cargo build --release --bin lookout >&2
TARGET=${CARGO_TARGET_DIR:-target}
LOOKOUT="$TARGET/release/lookout"
[ -x "$LOOKOUT" ] || { echo "no release binary at $LOOKOUT" >&2; exit 1; }
LOOKOUT=$(realpath "$LOOKOUT")

echo "== generating the test file in $WORK" >&2
python3 bench/rules/gen.py "$WORK" "${JOBS:-80}" "${INSTANCES:-25}" "${MINUTES:-120}"
TEST="$WORK/bench_test.yml"

echo "== both runners must pass the file" >&2
"$LOOKOUT" rules test "$TEST" >/dev/null
promtool test rules "$TEST" >/dev/null

echo "== wall time" >&2
if command -v hyperfine >/dev/null; then
    hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
        -n lookout "$LOOKOUT rules test $TEST" \
        -n promtool "promtool test rules $TEST" >&2
    python3 - "$WORK/hyperfine.json" >"$WORK/times.txt" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
for name in ("lookout", "promtool"):
    print(name, r[name]["mean"], r[name]["stddev"])
EOF
else
    for name in lookout promtool; do
        cmd=("$LOOKOUT" rules test "$TEST")
        [ "$name" = promtool ] && cmd=(promtool test rules "$TEST")
        total=0
        for _ in $(seq "$RUNS"); do
            s=$(date +%s.%N); "${cmd[@]}" >/dev/null; e=$(date +%s.%N)
            total=$(python3 -c "print($total + $e - $s)")
        done
        echo "$name $(python3 -c "print($total / $RUNS)") 0" >>"$WORK/times.txt"
    done
fi

echo "== peak memory" >&2
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'; }
L_RSS=$(rss "$LOOKOUT" rules test "$TEST")
P_RSS=$(rss promtool test rules "$TEST")

python3 - "$WORK/times.txt" "$L_RSS" "$P_RSS" <<'EOF'
import sys
t = {}
for line in open(sys.argv[1]):
    name, mean, sd = line.split()
    t[name] = (float(mean), float(sd))
l_rss, p_rss = int(sys.argv[2]), int(sys.argv[3])
print("| runner | wall time (mean ± sd) | peak RSS |")
print("|---|---:|---:|")
for name, rss in (("lookout rules test", l_rss), ("promtool test rules", p_rss)):
    m, sd = t["lookout" if name.startswith("lookout") else "promtool"]
    print(f"| {name} | {m:.2f} s ± {sd:.2f} | {rss / 1024:.0f} MiB |")
ratio_t = t["promtool"][0] / t["lookout"][0]
print(f"\nlookout is {ratio_t:.2f}x faster (goal >= 3x) and uses {l_rss / p_rss:.2f} of promtool's peak memory (goal <= 0.5)")
EOF

if [ -f crates/lookout-evaluator/benches/rules_eval.rs ]; then
    echo "== embedded evaluation: 1,000 rules over 10,000 series" >&2
    cargo bench -p lookout-evaluator --bench rules_eval
fi
