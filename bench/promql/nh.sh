#!/usr/bin/env bash
# Native-histogram PromQL bench (issue 15): Lookout's evaluator beside Prometheus 2.42
# (Debian, --enable-feature=native-histograms), in one run, over their HTTP APIs.
#
# 1. The bench binary `promql_nh` (crates/lookout-promql/benches/promql_nh.rs) writes 5,000
#    native histogram series (schema 3, 40 buckets, 15 s, 3 h) as a data directory in
#    Prometheus's format: one 2 h block of float histogram chunks and the WAL.
# 2. Both start on copies of it (each replays the WAL's last hour into its head) and serve it.
# 3. nh_check.py checks that both answer every query with the same series and values;
#    bench/api/drive.py times the queries over HTTP, turn about (instant at the end of
#    the data, range over its last RANGE seconds at 1 m); RSS is read before and after.
#    Prometheus 2.42 takes over a minute for a range query over the last hour, hence the
#    10 minutes and 3 runs by default.
#
# Usage: bench/promql/nh.sh   env: RUNS=3 RANGE=600 PORT_BASE=19600 LOOKOUT_BIN=path (skips
#        the build)
# Needs: cargo, curl, python3, prometheus.
set -euo pipefail
RUNS=${RUNS:-3}
RANGE=${RANGE:-600}
PORT_BASE=${PORT_BASE:-19600}
LOOKOUT_PORT=$PORT_BASE
PROM_PORT=$((PORT_BASE + 1))
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$ROOT/bench/lib.sh"
need curl python3 prometheus
ports_free "$LOOKOUT_PORT" "$PROM_PORT"
build_lookout
rss() { # pid: resident and peak resident MiB
  awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{printf "%.0f MiB (peak %.0f MiB)", r/1024, h/1024}' "/proc/$1/status"
}
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2

echo "== writing 5,000 native histogram series (3 h at 15 s) as a data directory" >&2
BIN=$("$ROOT/bench/promql/bin.sh" promql_nh)
"$BIN" write "$WORK/data" | tee "$WORK/write.json" >&2
LAST_MS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_ms"])' "$WORK/write.json")
# Evaluation time: 7 s after the last sample, off the sample grid (Prometheus 2.42 closes
# range windows on the left, Lookout and Prometheus 3 do not; off the grid both agree).
END=$((LAST_MS / 1000 + 7))
echo "# data directory: $(du -sm "$WORK/data" | cut -f1) MB (wal $(du -sm "$WORK/data/wal" | cut -f1) MB)" >&2
rm -f "$WORK/data/lock"
cp -a "$WORK/data" "$WORK/q-lookout"
mv "$WORK/data" "$WORK/q-prometheus"
printf 'global:\n  scrape_interval: 15s\n' > "$WORK/empty.yml"
# A histogram counts as about one sample per two buckets: the range queries load ~10^8, past
# both programs' default limit of 5·10^7, so both get the same higher one.
MAX_SAMPLES=1000000000

"$LOOKOUT" --log.level warn evaluator --config.file "$WORK/empty.yml" \
  --web.listen-address "127.0.0.1:$LOOKOUT_PORT" --rules.state-file "$WORK/alerts-state.json" \
  --storage.tsdb.path "$WORK/q-lookout" --storage.tsdb.retention.time 36500d \
  --query.max-samples "$MAX_SAMPLES" >"$WORK/lookout.log" 2>&1 &
LPID=$!
PIDS+=($LPID)
prometheus --config.file "$WORK/empty.yml" --storage.tsdb.path "$WORK/q-prometheus" \
  --storage.tsdb.retention.time 100y --web.listen-address "127.0.0.1:$PROM_PORT" \
  --enable-feature=native-histograms --query.max-samples "$MAX_SAMPLES" \
  --log.level warn >"$WORK/prometheus.log" 2>&1 &
PPID_=$!
PIDS+=($PPID_)
wait_up "http://127.0.0.1:$LOOKOUT_PORT/-/ready"
wait_up "http://127.0.0.1:$PROM_PORT/-/ready"
sleep 5
echo "# RSS after start (WAL replayed): lookout $(rss $LPID), prometheus $(rss $PPID_)"

QUERIES='histogram_quantile(0.99, sum(rate(nh_seconds[5m])))
histogram_quantile(0.99, sum by (job) (rate(nh_seconds[5m])))
histogram_quantile(0.9, rate(nh_seconds[5m]))
sum by (job) (histogram_count(rate(nh_seconds[5m])))
histogram_fraction(0, 0.1, sum by (job) (rate(nh_seconds[5m])))'
echo "== checking that both answer the same" >&2
DRIVE_QUERIES="$QUERIES" python3 "$HERE/nh_check.py" "$END" "$RANGE" 60 \
  "http://127.0.0.1:$LOOKOUT_PORT" "http://127.0.0.1:$PROM_PORT"
echo "== timing over HTTP, turn about" >&2
DRIVE_QUERIES="$QUERIES" python3 "$ROOT/bench/api/drive.py" "$RUNS" "$END" "$RANGE" 60 \
  "lookout=http://127.0.0.1:$LOOKOUT_PORT" "prometheus=http://127.0.0.1:$PROM_PORT"
echo "# RSS after the queries: lookout $(rss $LPID), prometheus $(rss $PPID_)"
