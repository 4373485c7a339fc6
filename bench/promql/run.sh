#!/usr/bin/env bash
# PromQL engine benchmark, Lookout beside Prometheus, in one run (issue 3 "Benchmark").
#
# 1. The bench binary (crates/lookout-promql/benches/promql.rs) writes 10,000 series of 15 s
#    samples over 6 hours as OpenMetrics text; promtool turns it into TSDB blocks.
# 2. Prometheus 2.42 (Debian) serves the blocks on loopback.
# 3. The same binary loads the same data into Lookout's storage and runs each query on
#    Lookout and, through the HTTP API, on Prometheus, turn about (the machine is shared,
#    so both sides see the same load); compare.py prints the tables: times, ratios, the
#    check that both returned the same series and values, and the memory figures.
#
# Environment: REPS (timed runs per query, default 10), PORT (default 19090),
# BENCH_WORK (work directory; the data is reused from there when present).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-10}
PORT=${PORT:-19090}
WORK=${BENCH_WORK:-/tmp/lookout-promql-bench}
mkdir -p "$WORK"
command -v prometheus >/dev/null && command -v promtool >/dev/null ||
    { echo "needs prometheus and promtool (Debian package prometheus)" >&2; exit 1; }

echo "== building the bench binary (release)" >&2
BIN=$(bench/promql/bin.sh)

if [ ! -f "$WORK/tsdb.done" ]; then
    echo "== generating OpenMetrics data and TSDB blocks in $WORK" >&2
    rm -rf "$WORK/tsdb" "$WORK/data.om"
    "$BIN" gen-openmetrics "$WORK/data.om"
    promtool tsdb create-blocks-from openmetrics --quiet "$WORK/data.om" "$WORK/tsdb" >&2
    rm -f "$WORK/data.om"
    touch "$WORK/tsdb.done"
fi

cat >"$WORK/prometheus.yml" <<'YML'
global:
  scrape_interval: 15s
YML

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_prometheus() { # data dir, port, log
    prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$1" \
        --storage.tsdb.retention.time=100y --web.listen-address="127.0.0.1:$2" \
        --log.level=warn >"$3" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$2/-/ready" >/dev/null && return 0
        sleep 0.5
    done
    echo "Prometheus on port $2 did not become ready; see $3" >&2
    exit 1
}
rss_of() { curl -sf "http://127.0.0.1:$1/metrics" | awk '$1=="process_resident_memory_bytes"{print $2}'; }

echo "== baseline: an empty Prometheus" >&2
rm -rf "$WORK/empty"
start_prometheus "$WORK/empty" $((PORT + 1)) "$WORK/empty.log"
sleep 5
EMPTY_RSS=$(rss_of $((PORT + 1)))
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

echo "== Prometheus: start on the blocks" >&2
start_prometheus "$WORK/tsdb" "$PORT" "$WORK/prometheus.log"
# Let start-up work (block loading, a possible compaction) settle before timing.
sleep 20

echo "== Lookout: load, then each query on Lookout and Prometheus turn about" >&2
"$BIN" run "$REPS" "127.0.0.1:$PORT" | tee "$WORK/bench.jsonl" >&2
python3 bench/promql/compare.py "$WORK/bench.jsonl" "http://127.0.0.1:$PORT" "$EMPTY_RSS" "$WORK/tsdb"
