#!/usr/bin/env bash
# Embedded-mode bench (issue 14): `lookout evaluator` (embedded mode: it scrapes, stores and
# evaluates itself) vs Prometheus 2.42 doing the same work, side by side.
# Both scrape the same loopback target (../api/target.py: SERIES series, half counters
# x_total, ~40 % histogram series h_*, the rest gauges g; values move every second) every
# INTERVAL seconds and evaluate, every INTERVAL seconds, the same rules: the shipped rules
# (rules/*.yml) plus rules.yml here (rates, sums by label, histogram quantiles, joins over
# the target's series, and alerts of which some fire). Both notify the same sink
# (../vmalert/compare.py sink). Lookout keeps its WAL in a data directory as Prometheus does.
# After WARMUP seconds, ../vmalert/compare.py takes each process's CPU seconds over WINDOW
# seconds (per round = CPU / (WINDOW / INTERVAL)), its peak RSS (VmHWM) and checks on each
# one's own API that it evaluates: rules healthy / failing / never evaluated, firing alerts,
# recording outputs and ALERTS queryable.
# Goal (issue 14): Lookout at most half of Prometheus's CPU and peak RSS.
#
# Usage: bench/embedded/run.sh   (env: SERIES=10000 INTERVAL=15 WARMUP=90 WINDOW=240 RUNS=1
#                                 PORT_BASE=19750; LOOKOUT_BIN=path skips the release build;
#                                 RESULTS=file keeps the JSON lines)
# Needs: cargo, curl, python3, prometheus (2.42, Debian).
set -euo pipefail

SERIES=${SERIES:-10000}
INTERVAL=${INTERVAL:-15}
WARMUP=${WARMUP:-90}
WINDOW=${WINDOW:-240}
RUNS=${RUNS:-1}
PORT_BASE=${PORT_BASE:-19750}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../lib.sh"
RESULTS=${RESULTS:-$WORK/results.jsonl}
need prometheus curl python3
build_lookout

T_PORT=$PORT_BASE SINK_PORT=$((PORT_BASE + 1)) L_PORT=$((PORT_BASE + 2)) P_PORT=$((PORT_BASE + 3))
ports_free "$T_PORT" "$SINK_PORT" "$L_PORT" "$P_PORT"
COUNTERS=$((SERIES / 2)) HISTOGRAMS=$((SERIES * 2 / 5 / 12))
python3 "$ROOT/bench/api/target.py" "$T_PORT" "$SERIES" "$COUNTERS" "$HISTOGRAMS" &
PIDS+=($!)
python3 "$ROOT/bench/vmalert/compare.py" sink "$SINK_PORT" &
PIDS+=($!)
wait_up "http://127.0.0.1:$T_PORT/metrics"
RULES=("$ROOT"/rules/*.yml "$HERE/rules.yml")
{
  cat <<YML
global:
  scrape_interval: ${INTERVAL}s
  scrape_timeout: 10s
  evaluation_interval: ${INTERVAL}s
scrape_configs:
  - job_name: target
    static_configs: [{targets: ['127.0.0.1:$T_PORT']}]
alerting: {alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$SINK_PORT']}]}]}
rule_files:
YML
  for f in "${RULES[@]}"; do echo "  - '$f'"; done
} > "$WORK/config.yml"
"$LOOKOUT" evaluator --config.check --config.file "$WORK/config.yml" >&2
if command -v promtool >/dev/null; then promtool check rules "$HERE/rules.yml" >&2; fi

for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/lookout" "$WORK/prom"
  "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/config.yml" \
    --web.listen-address "127.0.0.1:$L_PORT" --rules.state-file "$WORK/state.json" \
    --storage.tsdb.path "$WORK/lookout" 2>"$WORK/lookout.log" &
  L_PID=$!; PIDS+=($L_PID)
  prometheus --config.file "$WORK/config.yml" --storage.tsdb.path "$WORK/prom" \
    --web.listen-address "127.0.0.1:$P_PORT" --log.level warn 2>"$WORK/prom.log" &
  P_PID=$!; PIDS+=($P_PID)
  wait_up "http://127.0.0.1:$L_PORT/-/ready"
  wait_up "http://127.0.0.1:$P_PORT/-/ready"
  echo "== run $run: $SERIES series, scrape and evaluation every ${INTERVAL}s: warm-up ${WARMUP}s, window ${WINDOW}s" >&2
  sleep "$WARMUP"
  python3 "$ROOT/bench/vmalert/compare.py" measure "$WINDOW" "$INTERVAL" "$RESULTS" \
    "lookout=$L_PID=http://127.0.0.1:$L_PORT=http://127.0.0.1:$L_PORT" \
    "prometheus=$P_PID=http://127.0.0.1:$P_PORT=http://127.0.0.1:$P_PORT"
  for q in 'count(x_total)' 'count(id_grp:x:rate1m)' 'h:latency:p95'; do
    echo "  $q: lookout $(curl -fsS "http://127.0.0.1:$L_PORT/api/v1/query" --data-urlencode "query=$q" | python3 -c 'import json,sys; print([r["value"][1] for r in json.load(sys.stdin)["data"]["result"]])')" \
      "prometheus $(curl -fsS "http://127.0.0.1:$P_PORT/api/v1/query" --data-urlencode "query=$q" | python3 -c 'import json,sys; print([r["value"][1] for r in json.load(sys.stdin)["data"]["result"]])')"
  done
  echo "alerts received by the sink so far (both): $(curl -fsS "http://127.0.0.1:$SINK_PORT/count")" >&2
  for log in "$WORK"/lookout.log "$WORK"/prom.log; do
    if [ -s "$log" ]; then echo "-- $(basename "$log"): $(wc -l < "$log") lines, last:"; tail -n 2 "$log" | cut -c1-300; fi
  done
  for pid in "$L_PID" "$P_PID"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
done

echo
echo "$SERIES series from one target, $((${#RULES[@]})) rule files, scrape and evaluation every ${INTERVAL}s, ${WINDOW}s window after ${WARMUP}s warm-up"
python3 "$ROOT/bench/vmalert/compare.py" report "$RESULTS" prometheus
