#!/usr/bin/env bash
# API latency bench (issue 16 "Fast where users feel it"): the same instant and range
# queries over HTTP, where users feel them, on Lookout's evaluator (embedded mode), on
# Prometheus 2.42 (Debian) and, when `victoria-metrics` is on PATH, on VictoriaMetrics;
# all three scrape the same loopback target (target.py: SERIES series, 5,000 counters
# x_total, histogram buckets h_bucket, gauges) every 15 s. After INGEST seconds of scraping,
# drive.py times each query on each peer turn about, RUNS rounds, plain and gzip-encoded,
# and prints the medians and Lookout's ratios.
#
# Usage: bench/api/run.sh   (env: INGEST=240 RUNS=7 SERIES=10900 RANGE=600 STEP=15
#                            LOOKOUT_BIN=path skips the release build; LOOKOUT_BIN_B=path
#                            a second Lookout build driven in the same turns (a before/after
#                            pair in one sitting); PORT_BASE=19400, five loopback ports; NO_VM=1 leaves VictoriaMetrics out;
#                            VictoriaMetrics runs with -search.disableCache: no peer caches results)
# Needs: cargo, curl, python3, prometheus.
set -euo pipefail

INGEST=${INGEST:-240}
RUNS=${RUNS:-7}
SERIES=${SERIES:-10900}
RANGE=${RANGE:-600}
STEP=${STEP:-15}
PORT_BASE=${PORT_BASE:-19400}
TARGET_PORT=$PORT_BASE
LOOKOUT_PORT=$((PORT_BASE + 1))
PROM_PORT=$((PORT_BASE + 2))
VM_PORT=$((PORT_BASE + 3))

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOOKOUT=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v prometheus >/dev/null || { echo "needs prometheus (Debian package)" >&2; exit 1; }
if [ -z "${LOOKOUT_BIN:-}" ]; then
  echo "building lookout (release)..." >&2
  (cd "$ROOT" && cargo build --release --bin lookout --quiet)
fi
wait_up() { # url
  for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not reachable: $1" >&2; exit 1
}

python3 "$HERE/target.py" "$TARGET_PORT" "$SERIES" &
PIDS+=($!)
wait_up "http://127.0.0.1:$TARGET_PORT/metrics"

cat > "$WORK/scrape.yml" <<YML
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: bench
    static_configs: [{targets: ['127.0.0.1:$TARGET_PORT']}]
YML

"$LOOKOUT" --log.level warn evaluator --config.file "$WORK/scrape.yml" \
  --web.listen-address "127.0.0.1:$LOOKOUT_PORT" --rules.state-file "$WORK/alerts-state.json" \
  --storage.tsdb.path "$WORK/lookout" &
PIDS+=($!)
prometheus --config.file "$WORK/scrape.yml" --storage.tsdb.path "$WORK/prom" \
  --web.listen-address "127.0.0.1:$PROM_PORT" --log.level warn 2>"$WORK/prom.log" &
PIDS+=($!)
PEERS=("lookout=http://127.0.0.1:$LOOKOUT_PORT")
if [ -n "${LOOKOUT_BIN_B:-}" ]; then
  "$LOOKOUT_BIN_B" --log.level warn evaluator --config.file "$WORK/scrape.yml" \
    --web.listen-address "127.0.0.1:$((PORT_BASE + 4))" --rules.state-file "$WORK/alerts-state-b.json" \
    --storage.tsdb.path "$WORK/lookout-b" &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$((PORT_BASE + 4))/-/ready"
  PEERS+=("lookout_b=http://127.0.0.1:$((PORT_BASE + 4))")
fi
PEERS+=("prometheus=http://127.0.0.1:$PROM_PORT")
if [ -z "${NO_VM:-}" ] && command -v victoria-metrics >/dev/null; then
  victoria-metrics -httpListenAddr "127.0.0.1:$VM_PORT" -storageDataPath "$WORK/vm" \
    -promscrape.config "$WORK/scrape.yml" -search.latencyOffset 0s -search.disableCache -promscrape.config.strictParse=false -loggerLevel ERROR \
    >"$WORK/vm.log" 2>&1 &
  PIDS+=($!)
  PEERS+=("victoriametrics=http://127.0.0.1:$VM_PORT")
fi
wait_up "http://127.0.0.1:$LOOKOUT_PORT/-/ready"
wait_up "http://127.0.0.1:$PROM_PORT/-/ready"
case "${PEERS[*]}" in *victoriametrics*) wait_up "http://127.0.0.1:$VM_PORT/health" ;; esac
echo "== ingesting $SERIES series every 15s for ${INGEST}s (${PEERS[*]})" >&2
sleep "$INGEST"
# A fixed end a little in the past, on a step boundary: every run reads the same data.
END=$(( ($(date +%s) - 20) / STEP * STEP ))
echo "# load average before the queries: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
python3 "$HERE/drive.py" "$RUNS" "$END" "$RANGE" "$STEP" "${PEERS[@]}"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
