#!/usr/bin/env bash
# Remote-mode bench (issue 14): `lookout evaluator --datasource.url` vs vmalert, both reading
# from VictoriaMetrics single node and remote-writing their rule outputs back to it.
#
# Data: k8s_target.py serves a synthetic Kubernetes cluster (NODES nodes x PODS_PER_NODE pods,
# two containers each; ~35k series by default) whose metric names and label values are
# derived from the rules' own selectors, so the selectors, joins and alerts match something.
# Rules: the shipped rules (rules/*.yml) plus the kubernetes-mixin rule files of the
# ecosystem corpus (../shared/ecosystem beside the checkout, or $LOOKOUT_ECOSYSTEM). A file
# that `vmalert -dryRun` or `lookout evaluator --config.check` refuses is dropped for both
# and listed.
# Layout: the two evaluators run simultaneously, each against its own VictoriaMetrics
# instance; both instances scrape the same target every INTERVAL seconds (honor_labels). One
# instance per evaluator keeps each evaluator's recording outputs (which later mixin rules
# read) and ALERTS apart, so each can be checked on its own; the instances' CPU and memory are
# not counted. Both evaluate every INTERVAL seconds (groups with their own `interval` keep it)
# and notify the same sink (compare.py sink), which counts the alerts it gets.
# After WARMUP seconds, compare.py takes each evaluator's CPU seconds over WINDOW seconds
# (per round = CPU / (WINDOW / INTERVAL)), its peak RSS (VmHWM) and checks that it evaluates:
# rules healthy / failing / never evaluated (its /api/v1/rules), firing alerts, recording
# outputs and ALERTS stored in its VictoriaMetrics.
# Goal (issue 14): Lookout at most half of vmalert's CPU and peak RSS.
#
# Usage: bench/vmalert/run.sh   (env: NODES=30 PODS_PER_NODE=25 INTERVAL=15 WARMUP=90
#                                WINDOW=300 RUNS=1 PORT_BASE=19700; LOOKOUT_BIN=path skips
#                                the release build; RESULTS=file keeps the JSON lines;
#                                LOOKOUT_ECOSYSTEM=dir of the corpus)
# Needs: cargo, curl, python3, victoria-metrics and vmalert (Debian's victoria-metrics
# package ships both), the ecosystem corpus.
set -euo pipefail

NODES=${NODES:-30}
PODS_PER_NODE=${PODS_PER_NODE:-25}
INTERVAL=${INTERVAL:-15}
WARMUP=${WARMUP:-90}
WINDOW=${WINDOW:-300}
RUNS=${RUNS:-1}
PORT_BASE=${PORT_BASE:-19700}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ECOSYSTEM=${LOOKOUT_ECOSYSTEM:-$(dirname "$ROOT")/shared/ecosystem}
MIXIN="$ECOSYSTEM/corpus/kubernetes-mixin"
. "$HERE/../lib.sh"
RESULTS=${RESULTS:-$WORK/results.jsonl}
need victoria-metrics vmalert curl python3
[ -f "$MIXIN/prometheus_rules.yaml" ] || { echo "kubernetes-mixin not found under $ECOSYSTEM (set LOOKOUT_ECOSYSTEM)" >&2; exit 1; }
build_lookout

T_PORT=$PORT_BASE SINK_PORT=$((PORT_BASE + 1))
VM_L=$((PORT_BASE + 2)) VM_V=$((PORT_BASE + 3)) L_PORT=$((PORT_BASE + 4)) V_PORT=$((PORT_BASE + 5))
ports_free "$T_PORT" "$SINK_PORT" "$VM_L" "$VM_V" "$L_PORT" "$V_PORT"

# --- rule files both accept ---------------------------------------------------------------
lookout_config() { # rule files... -> evaluator.yml on stdout
  echo "global: {evaluation_interval: ${INTERVAL}s}"
  echo "rule_files:"
  for f in "$@"; do echo "  - '$f'"; done
  echo "alerting: {alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$SINK_PORT']}]}]}"
}
RULES=() DROPPED=()
for f in "$ROOT"/rules/*.yml "$MIXIN"/prometheus_rules.yaml "$MIXIN"/prometheus_alerts.yaml; do
  lookout_config "$f" > "$WORK/check.yml"
  why=""
  if ! out=$("$LOOKOUT" evaluator --config.check --config.file "$WORK/check.yml" 2>&1); then
    why="lookout: $(echo "$out" | grep -v '^$' | tail -n 2 | tr '\n' ' ')"
  fi
  if ! out=$(vmalert -dryRun -rule="$f" -loggerLevel=ERROR 2>&1); then
    why="$why vmalert: $(echo "$out" | grep -v '^$' | tail -n 2 | tr '\n' ' ')"
  fi
  if [ -n "$why" ]; then DROPPED+=("$(basename "$f"): $why"); else RULES+=("$f"); fi
done
echo "rule files evaluated by both: ${#RULES[@]}" >&2
for f in "${RULES[@]}"; do echo "  ${f#"$ECOSYSTEM/"}" | sed "s|$ROOT/||" >&2; done
for d in "${DROPPED[@]}"; do echo "  DROPPED $d" >&2; done

# --- data ---------------------------------------------------------------------------------
python3 "$HERE/k8s_target.py" --count "$NODES" "$PODS_PER_NODE" "${RULES[@]}" > "$WORK/series.txt"
head -n 1 "$WORK/series.txt" >&2
python3 "$HERE/k8s_target.py" "$T_PORT" "$NODES" "$PODS_PER_NODE" "${RULES[@]}" &
PIDS+=($!)
python3 "$HERE/compare.py" sink "$SINK_PORT" &
PIDS+=($!)
wait_up "http://127.0.0.1:$T_PORT/metrics"
SERIES=$(curl -fsS "http://127.0.0.1:$T_PORT/metrics" | grep -vc '^#')
cat > "$WORK/scrape.yml" <<YML
global: {scrape_interval: ${INTERVAL}s, scrape_timeout: 10s}
scrape_configs:
  - job_name: k8s
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$T_PORT']}]
YML
for port in $VM_L $VM_V; do
  victoria-metrics -httpListenAddr "127.0.0.1:$port" -storageDataPath "$WORK/vm-$port" -retentionPeriod 1d \
    -promscrape.config "$WORK/scrape.yml" -promscrape.config.strictParse=false \
    -search.latencyOffset 0s -search.maxUniqueTimeseries 1000000 -loggerLevel ERROR >"$WORK/vm-$port.log" 2>&1 &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$port/health"
done
echo "== $SERIES series scraped every ${INTERVAL}s by two VictoriaMetrics; waiting for two scrapes" >&2
sleep $((INTERVAL * 2 + 2))

# --- evaluators, RUNS times ---------------------------------------------------------------
lookout_config "${RULES[@]}" > "$WORK/evaluator.yml"
VM_RULES=()
for f in "${RULES[@]}"; do VM_RULES+=("-rule=$f"); done
for run in $(seq 1 "$RUNS"); do
  EVAL=()
  "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/evaluator.yml" \
    --web.listen-address "127.0.0.1:$L_PORT" --rules.state-file "$WORK/state.json" \
    --datasource.url "http://127.0.0.1:$VM_L" --remote-write.url "http://127.0.0.1:$VM_L/api/v1/write" \
    2>"$WORK/lookout.log" &
  L_PID=$!; PIDS+=($L_PID); EVAL+=($L_PID)
  vmalert -httpListenAddr "127.0.0.1:$V_PORT" "${VM_RULES[@]}" -evaluationInterval "${INTERVAL}s" \
    -datasource.url "http://127.0.0.1:$VM_V" -remoteWrite.url "http://127.0.0.1:$VM_V" \
    -notifier.url "http://127.0.0.1:$SINK_PORT" -loggerLevel ERROR >"$WORK/vmalert.log" 2>&1 &
  V_PID=$!; PIDS+=($V_PID); EVAL+=($V_PID)
  wait_up "http://127.0.0.1:$L_PORT/-/ready"
  wait_up "http://127.0.0.1:$V_PORT/health"
  echo "== run $run: warm-up ${WARMUP}s, window ${WINDOW}s" >&2
  sleep "$WARMUP"
  python3 "$HERE/compare.py" measure "$WINDOW" "$INTERVAL" "$RESULTS" \
    "lookout=$L_PID=http://127.0.0.1:$L_PORT=http://127.0.0.1:$VM_L" \
    "vmalert=$V_PID=http://127.0.0.1:$V_PORT=http://127.0.0.1:$VM_V"
  echo "alerts received by the sink so far (both): $(curl -fsS "http://127.0.0.1:$SINK_PORT/count")" >&2
  for log in "$WORK"/lookout.log "$WORK"/vmalert.log; do
    if [ -s "$log" ]; then echo "-- $(basename "$log"): $(wc -l < "$log") lines, last:"; tail -n 2 "$log" | cut -c1-300; fi
  done
  for pid in "${EVAL[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
done

echo
echo "$SERIES series, ${#RULES[@]} rule files, evaluation every ${INTERVAL}s, ${WINDOW}s window after ${WARMUP}s warm-up"
for d in "${DROPPED[@]}"; do echo "dropped: $d"; done
python3 "$HERE/compare.py" report "$RESULTS" vmalert
