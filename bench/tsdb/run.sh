#!/usr/bin/env bash
# Storage bench (issue #13): Lookout's embedded TSDB beside Prometheus 2.42 (Debian).
#
#   replay  WAL replay after a crash: both scrape the same loopback target (target.py: SERIES
#           series, pre-rendered body) every 15 s until each holds SCRAPES scrapes, both are
#           killed with SIGKILL, then replay.py restarts each on a fresh copy of its data
#           directory RUNS times, turn about: time to /-/ready, logged replay, peak RSS.
#   size    bytes on disk per sample of persisted blocks made from the same samples:
#           gen_om.py writes OpenMetrics (counters, gauges, histograms at 15 s for HOURS h),
#           `promtool tsdb create-blocks-from openmetrics` makes Prometheus's blocks and the
#           lookout-promql example `tsdb_blocks` makes Lookout's; index + chunks per sample.
#   query   both started on copies of the promtool-made blocks; bench/api/drive.py times the
#           same queries over HTTP, turn about (needs `size` first: same run).
#
# Usage: bench/tsdb/run.sh [replay|size|query|all]   (default all)
#   env: SERIES=100000 (1000000 for the issue's figure) SCRAPES=3 RUNS=3 HOURS=3
#        SIZE_SERIES=10000 PORT_BASE=19500 LOOKOUT_BIN=path (skips the release build)
#        LOOKOUT_BIN_B=path (query: a second Lookout build driven in the same turns)
# Needs: cargo, curl, python3, prometheus, promtool.
set -euo pipefail

WHAT=${1:-all}
SERIES=${SERIES:-100000}
SCRAPES=${SCRAPES:-3}
RUNS=${RUNS:-3}
HOURS=${HOURS:-3}
SIZE_SERIES=${SIZE_SERIES:-10000}
PORT_BASE=${PORT_BASE:-19500}
TARGET_PORT=$PORT_BASE
LOOKOUT_PORT=$((PORT_BASE + 1))
PROM_PORT=$((PORT_BASE + 2))

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOOKOUT=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
command -v prometheus >/dev/null || { echo "needs prometheus (Debian package)" >&2; exit 1; }
command -v promtool >/dev/null || { echo "needs promtool (Debian package)" >&2; exit 1; }
if [ -z "${LOOKOUT_BIN:-}" ]; then
  echo "building lookout (release)..." >&2
  (cd "$ROOT" && cargo build --release --locked --bin lookout --quiet)
fi
wait_up() { # url
  for _ in $(seq 1 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not reachable: $1" >&2; exit 1
}
scrapes() { # base url -> how many scrapes of the target it holds
  curl -fsS "$1/api/v1/query" --data-urlencode 'query=count_over_time(up{job="bench"}[1h])' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)' \
    2>/dev/null || echo 0
}
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
printf 'global:\n  scrape_interval: 15s\n' > "$WORK/empty.yml"

replay() {
  python3 "$HERE/target.py" "$TARGET_PORT" "$SERIES" &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$TARGET_PORT/metrics"
  cat > "$WORK/scrape.yml" <<YML
global:
  scrape_interval: 15s
  scrape_timeout: 14s
scrape_configs:
  - job_name: bench
    static_configs: [{targets: ['127.0.0.1:$TARGET_PORT']}]
YML
  "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/scrape.yml" \
    --web.listen-address "127.0.0.1:$LOOKOUT_PORT" --rules.state-file "$WORK/alerts-state.json" \
    --storage.tsdb.path "$WORK/lookout-data" >"$WORK/lookout-ingest.log" 2>&1 &
  local lpid=$!
  PIDS+=($lpid)
  prometheus --config.file "$WORK/scrape.yml" --storage.tsdb.path "$WORK/prometheus-data" \
    --web.listen-address "127.0.0.1:$PROM_PORT" --log.level warn >"$WORK/prom-ingest.log" 2>&1 &
  local ppid=$!
  PIDS+=($ppid)
  wait_up "http://127.0.0.1:$LOOKOUT_PORT/-/ready"
  wait_up "http://127.0.0.1:$PROM_PORT/-/ready"
  echo "== replay: both scrape $SERIES series every 15s until each holds $SCRAPES scrapes" >&2
  local l=0 p=0
  for _ in $(seq 1 $((SCRAPES * 30 + 60))); do
    l=$(scrapes "http://127.0.0.1:$LOOKOUT_PORT")
    p=$(scrapes "http://127.0.0.1:$PROM_PORT")
    [ "$l" -ge "$SCRAPES" ] && [ "$p" -ge "$SCRAPES" ] && break
    sleep 1
  done
  echo "# scrapes held: lookout $l, prometheus $p; killing both with SIGKILL" >&2
  kill -9 "$lpid" "$ppid"
  wait "$lpid" "$ppid" 2>/dev/null || true
  echo "# data dirs: lookout $(du -sm "$WORK/lookout-data" | cut -f1) MB (wal $(du -sm "$WORK/lookout-data/wal" | cut -f1) MB)," \
    "prometheus $(du -sm "$WORK/prometheus-data" | cut -f1) MB (wal $(du -sm "$WORK/prometheus-data/wal" | cut -f1) MB)" >&2
  python3 "$HERE/replay.py" "$RUNS" "$WORK" "$LOOKOUT" "$LOOKOUT_PORT"
  rm -rf "$WORK/lookout-data" "$WORK/prometheus-data"
}

BIN=
bench_bin() { # the PromQL bench binary: its data set (gen-openmetrics) and write-blocks
  [ -n "$BIN" ] && return 0
  BIN=$("$ROOT/bench/promql/bin.sh")
}

size() {
  bench_bin
  echo "== size: the PromQL bench's data set (10,000 series, 15 s, 6 h) as blocks by promtool and by Lookout" >&2
  "$BIN" gen-openmetrics "$WORK/data.om"
  promtool tsdb create-blocks-from openmetrics --quiet "$WORK/data.om" "$WORK/prom-blocks" >&2
  rm -f "$WORK/data.om"
  "$BIN" write-blocks "$WORK/lookout-blocks"
  python3 "$HERE/size.py" "lookout=$WORK/lookout-blocks" "prometheus=$WORK/prom-blocks"
  rm -rf "$WORK/lookout-blocks"
}

query() {
  [ -d "$WORK/prom-blocks" ] || size
  echo "== query: both on copies of promtool's blocks, the PromQL bench's queries over HTTP" >&2
  cp -a "$WORK/prom-blocks" "$WORK/q-lookout"
  cp -a "$WORK/prom-blocks" "$WORK/q-prometheus"
  "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/empty.yml" \
    --web.listen-address "127.0.0.1:$LOOKOUT_PORT" --rules.state-file "$WORK/alerts-state.json" \
    --storage.tsdb.path "$WORK/q-lookout" --storage.tsdb.retention.time 36500d >"$WORK/lookout-q.log" 2>&1 &
  PIDS+=($!)
  prometheus --config.file "$WORK/empty.yml" --storage.tsdb.path "$WORK/q-prometheus" \
    --storage.tsdb.retention.time 100y --web.listen-address "127.0.0.1:$PROM_PORT" \
    --log.level warn >"$WORK/prom-q.log" 2>&1 &
  PIDS+=($!)
  # LOOKOUT_BIN_B: a second Lookout build on a third copy, driven in the same turns (a
  # before/after pair in one sitting, each beside the same Prometheus).
  PEER_B=()
  if [ -n "${LOOKOUT_BIN_B:-}" ]; then
    cp -a "$WORK/prom-blocks" "$WORK/q-lookout-b"
    "$LOOKOUT_BIN_B" --log.level warn evaluator --config.file "$WORK/empty.yml" \
      --web.listen-address "127.0.0.1:$((PORT_BASE + 3))" --rules.state-file "$WORK/alerts-state-b.json" \
      --storage.tsdb.path "$WORK/q-lookout-b" --storage.tsdb.retention.time 36500d >"$WORK/lookout-q-b.log" 2>&1 &
    PIDS+=($!)
    wait_up "http://127.0.0.1:$((PORT_BASE + 3))/-/ready"
    PEER_B=("lookout_b=http://127.0.0.1:$((PORT_BASE + 3))")
  fi
  wait_up "http://127.0.0.1:$LOOKOUT_PORT/-/ready"
  wait_up "http://127.0.0.1:$PROM_PORT/-/ready"
  # The PromQL bench's queries, its end (7 s after the last sample, off the sample grid),
  # its range (the last hour) and step (1 m).
  DRIVE_QUERIES=$(sed -n '/^pub const QUERIES/,/^];/p' "$ROOT/crates/lookout-promql/benches/promql.rs" |
    sed -n 's/^ *"\(.*\)",$/\1/p' | sed 's/\\"/"/g') \
    python3 "$ROOT/bench/api/drive.py" "$RUNS" 1767247192 3600 60 \
    "lookout=http://127.0.0.1:$LOOKOUT_PORT" "${PEER_B[@]}" "prometheus=http://127.0.0.1:$PROM_PORT"
}

case "$WHAT" in
  replay) replay ;;
  size) size ;;
  query) query ;;
  all) replay; size; query ;;
  *) echo "unknown: $WHAT" >&2; exit 2 ;;
esac
