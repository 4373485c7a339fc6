#!/usr/bin/env bash
# Ingestion bench (issue 16): CPU and peak RSS of scraping 10k, 100k and 1M active series.
# For each size in SERIES, ../api/target.py serves the series over TARGETS = SERIES /
# PER_TARGET loopback targets (one process, one port per target; per target half counters
# x_total, 40 % histogram series h_*, the rest gauges g; values move every second), and
# these scrape all targets side by side, same scrape config, every INTERVAL seconds:
#   lookout          Lookout's evaluator (release build, embedded mode, no rules) with its
#                    WAL and blocks in --storage.tsdb.path
#   lookout-memory   the same with --storage.tsdb.path= (memory only; MEMORY_ROW=0 drops it)
#   lookout-b        LOOKOUT_BIN_B, a second build, as `lookout` (only when LOOKOUT_BIN_B is
#                    set): both builds under the same load in one run
#   prometheus       Prometheus 2.42 (Debian)
#   victoriametrics  VictoriaMetrics (Debian; single node, -storageDataPath)
# After WARMUP seconds, measure.py takes each process's CPU seconds over WINDOW seconds, its
# peak RSS (VmHWM) and its data directory's bytes, checks on each HTTP API that every series
# is stored and that no target missed a scrape, and the table at the end gives the ratios.
#
# Usage: bench/ingest/run.sh   (env: SERIES="10000 100000" PER_TARGET=10000 INTERVAL=15
#                               SCRAPE_TIMEOUT=10 WARMUP=75 WINDOW=240 PORT_BASE=19600
#                               LOOKOUT_BIN=path skips the release build; LOOKOUT_BIN_B=path
#                               adds the lookout-b row; MEMORY_ROW=0; RESULTS=file keeps the
#                               JSON lines)
# Needs: cargo, curl, python3, prometheus, victoria-metrics.
set -euo pipefail

SERIES=${SERIES:-10000 100000}
PER_TARGET=${PER_TARGET:-10000}
INTERVAL=${INTERVAL:-15}
SCRAPE_TIMEOUT=${SCRAPE_TIMEOUT:-10}
WARMUP=${WARMUP:-75}
WINDOW=${WINDOW:-240}
PORT_BASE=${PORT_BASE:-19600}
MEMORY_ROW=${MEMORY_ROW:-1}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../lib.sh"
RESULTS=${RESULTS:-$WORK/results.jsonl}
need prometheus victoria-metrics curl python3
build_lookout

L_PORT=$((PORT_BASE + 1)) LM_PORT=$((PORT_BASE + 2)) P_PORT=$((PORT_BASE + 3)) V_PORT=$((PORT_BASE + 4))
LB_PORT=$((PORT_BASE + 5))
FIRST_TARGET=$((PORT_BASE + 10))
for size in $SERIES; do
  targets=$(( (size + PER_TARGET - 1) / PER_TARGET ))
  per=$(( size / targets ))
  [ $((per * targets)) -eq "$size" ] || { echo "SERIES $size does not split evenly over $targets targets" >&2; exit 1; }
  counters=$(( per / 2 )) histograms=$(( per * 2 / 5 / 12 ))
  last=$((FIRST_TARGET + targets - 1))
  # Lookout's series limit (1,000,000 by default) counts the targets' report series (up, …)
  # too, and VictoriaMetrics refuses queries over more than 300,000 series by default: both
  # get room for every series, so the count check can see them all.
  MAX_SERIES=$((size * 2 + 1000))
  run="$WORK/$size"
  mkdir -p "$run"
  python3 "$ROOT/bench/api/target.py" "$FIRST_TARGET-$last" "$per" "$counters" "$histograms" &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$last/metrics"
  list=$(seq "$FIRST_TARGET" "$last" | sed "s/^/'127.0.0.1:/; s/\$/'/" | paste -sd, -)
  cat > "$run/scrape.yml" <<YML
global:
  scrape_interval: ${INTERVAL}s
  scrape_timeout: ${SCRAPE_TIMEOUT}s
scrape_configs:
  - job_name: ingest
    static_configs: [{targets: [$list]}]
YML
  PROGS=()
  "$LOOKOUT" --log.level warn evaluator --config.file "$run/scrape.yml" \
    --web.listen-address "127.0.0.1:$L_PORT" --rules.state-file "$run/lookout-state.json" \
    --storage.tsdb.path "$run/lookout" --storage.max-series "$MAX_SERIES" 2>"$run/lookout.log" &
  PIDS+=($!) PROGS+=("lookout=$!=http://127.0.0.1:$L_PORT=$run/lookout")
  if [ "$MEMORY_ROW" != 0 ]; then
    "$LOOKOUT" --log.level warn evaluator --config.file "$run/scrape.yml" \
      --web.listen-address "127.0.0.1:$LM_PORT" --rules.state-file "$run/lookout-memory-state.json" \
      --storage.tsdb.path= --storage.max-series "$MAX_SERIES" 2>"$run/lookout-memory.log" &
    PIDS+=($!) PROGS+=("lookout-memory=$!=http://127.0.0.1:$LM_PORT=-")
  fi
  if [ -n "${LOOKOUT_BIN_B:-}" ]; then
    "$LOOKOUT_BIN_B" --log.level warn evaluator --config.file "$run/scrape.yml" \
      --web.listen-address "127.0.0.1:$LB_PORT" --rules.state-file "$run/lookout-b-state.json" \
      --storage.tsdb.path "$run/lookout-b" --storage.max-series "$MAX_SERIES" 2>"$run/lookout-b.log" &
    PIDS+=($!) PROGS+=("lookout-b=$!=http://127.0.0.1:$LB_PORT=$run/lookout-b")
  fi
  prometheus --config.file "$run/scrape.yml" --storage.tsdb.path "$run/prom" \
    --web.listen-address "127.0.0.1:$P_PORT" --log.level warn 2>"$run/prom.log" &
  PIDS+=($!) PROGS+=("prometheus=$!=http://127.0.0.1:$P_PORT=$run/prom")
  victoria-metrics -httpListenAddr "127.0.0.1:$V_PORT" -storageDataPath "$run/vm" \
    -promscrape.config "$run/scrape.yml" -promscrape.config.strictParse=false \
    -search.latencyOffset 0s -search.maxUniqueTimeseries "$MAX_SERIES" -loggerLevel ERROR >"$run/vm.log" 2>&1 &
  PIDS+=($!) PROGS+=("victoriametrics=$!=http://127.0.0.1:$V_PORT=$run/vm")
  wait_up "http://127.0.0.1:$L_PORT/-/ready"
  [ "$MEMORY_ROW" = 0 ] || wait_up "http://127.0.0.1:$LM_PORT/-/ready"
  [ -z "${LOOKOUT_BIN_B:-}" ] || wait_up "http://127.0.0.1:$LB_PORT/-/ready"
  wait_up "http://127.0.0.1:$P_PORT/-/ready"
  wait_up "http://127.0.0.1:$V_PORT/health"
  echo "== $size series over $targets target(s) every ${INTERVAL}s: warm-up ${WARMUP}s, window ${WINDOW}s" >&2
  sleep "$WARMUP"
  python3 "$HERE/measure.py" measure "$WINDOW" "$INTERVAL" "$size" "$targets" "$RESULTS" "${PROGS[@]}"
  for log in "$run"/*.log; do
    if [ -s "$log" ]; then echo "-- $(basename "$log") (last lines)"; tail -n 3 "$log"; fi
  done
  stop_all
  rm -rf "$run"
done
python3 "$HERE/measure.py" report "$RESULTS"
