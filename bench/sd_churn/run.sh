#!/usr/bin/env bash
# Service-discovery churn bench (issue 14): file_sd_configs with TARGETS targets, FRACTION of
# them replaced every PERIOD seconds, ROUNDS times, for both sides of Lookout at once:
#   exporter   `lookout exporter` with a target group (module http_2xx, probe every
#              PROBE_INTERVAL s) over one file_sd file of HTTP targets; they all point at a
#              second `lookout exporter` serving /-/healthy, told apart by ?n=ID.
#   evaluator  `lookout evaluator` (embedded mode, memory only, no rules) with a scrape config
#              (every SCRAPE_INTERVAL s) over another file_sd file; all its targets are one
#              loopback port of ../api/target.py (3 series per scrape) told apart by
#              __param_n=ID and instance="tID" (one process cannot hold 10,000 ports, and
#              127.0.0.x aliases would need a wildcard bind).
#   prometheus Prometheus 2.42 (Debian) with the evaluator's scrape config and file_sd file
#              (the same targets, scraped twice), its WAL and head in the scratch directory
#              (Prometheus has no memory-only mode); PROMETHEUS=0 leaves it out.
# After WARMUP seconds on the initial set, churn.py rewrites both files atomically (write,
# rename) and measures how probes and scrapes follow: for a new target the time from the
# rewrite to its first probe/scrape (that sample's own timestamp; it includes the schedule's
# offset of the first run within the interval, which is up to one interval by design), for
# a removed target the time until /metrics (exporter) or the query API (evaluator, stale
# after removal) stops showing it (to within POLL seconds), median and max (a target not
# followed by the next rewrite is followed on, up to DRAIN s past the last); and RSS over
# time (mean of the first vs the last minute of the churn, peak) and CPU of each, with the
# evaluator's ratios to Prometheus.
# Goal: new targets probed/scraped within about one interval plus the 5 s file check,
# removed ones gone within seconds, RSS flat across rewrites.
#
# Usage: bench/sd_churn/run.sh   (env: TARGETS=10000 FRACTION=0.1 PERIOD=60 ROUNDS=5
#                                 PROBE_INTERVAL=15 SCRAPE_INTERVAL=30 WARMUP=60 POLL=1 DRAIN=90
#                                 PORT_BASE=19800 PROMETHEUS=1 BLOCK= RETENTION=; LOOKOUT_BIN=path skips the
#                                 release build)
# Needs: cargo, curl, python3, prometheus (unless PROMETHEUS=0).
set -euo pipefail

TARGETS=${TARGETS:-10000}
FRACTION=${FRACTION:-0.1}
PERIOD=${PERIOD:-60}
ROUNDS=${ROUNDS:-5}
PROBE_INTERVAL=${PROBE_INTERVAL:-15}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-30}
WARMUP=${WARMUP:-60}
PORT_BASE=${PORT_BASE:-19800}
PROMETHEUS=${PROMETHEUS:-1}
export POLL=${POLL:-1} DRAIN=${DRAIN:-90}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../lib.sh"
need curl python3
[ "$PROMETHEUS" = 0 ] || need prometheus
build_lookout

HEALTHY_PORT=$PORT_BASE SCRAPE_PORT=$((PORT_BASE + 1)) E_PORT=$((PORT_BASE + 2)) V_PORT=$((PORT_BASE + 3)) P_PORT=$((PORT_BASE + 4))
ports_free "$HEALTHY_PORT" "$SCRAPE_PORT" "$E_PORT" "$V_PORT" "$P_PORT"
PROBE_URL="http://127.0.0.1:$HEALTHY_PORT/-/healthy"
SCRAPE_ADDR="127.0.0.1:$SCRAPE_PORT"

# --- targets ------------------------------------------------------------------------------
echo "modules: {}" > "$WORK/healthy.yml"
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/healthy.yml" \
  --web.listen-address "127.0.0.1:$HEALTHY_PORT" 2>"$WORK/healthy.log" &
PIDS+=($!)
python3 "$ROOT/bench/api/target.py" "$SCRAPE_PORT" 3 1 0 2>"$WORK/target.log" &
PIDS+=($!)
wait_up "$PROBE_URL"
wait_up "http://$SCRAPE_ADDR/metrics"

# --- the two programs under test, on the initial set ----------------------------------------
python3 "$HERE/churn.py" write "$WORK/exporter-sd.json" "$WORK/evaluator-sd.json" "$PROBE_URL" "$SCRAPE_ADDR" 0 "$TARGETS"
cat > "$WORK/exporter.yml" <<YML
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http: {preferred_ip_protocol: ip4}
target_groups:
  - name: churn
    module: http_2xx
    interval: ${PROBE_INTERVAL}s
    file_sd_configs: [{files: ['$WORK/exporter-sd.json']}]
YML
cat > "$WORK/evaluator.yml" <<YML
global: {scrape_interval: ${SCRAPE_INTERVAL}s, scrape_timeout: 10s}
scrape_configs:
  - job_name: sd
    file_sd_configs: [{files: ['$WORK/evaluator-sd.json']}]
YML
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/exporter.yml" \
  --web.listen-address "127.0.0.1:$E_PORT" 2>"$WORK/exporter.log" &
E_PID=$!; PIDS+=($E_PID)
# BLOCK (e.g. 5m): the evaluator keeps a data directory too, and both it and Prometheus cut
# their head into blocks of that range (the hidden min/max-block-duration flags), so that
# series of removed targets leave memory within the run; unset, the evaluator is memory only
# and Prometheus keeps its 2 h blocks.
EVAL_STORAGE=(--storage.tsdb.path=)
PROM_STORAGE=()
if [ -n "${BLOCK:-}" ]; then
  EVAL_STORAGE=(--storage.tsdb.path="$WORK/eval-data" --storage.tsdb.min-block-duration="$BLOCK" --storage.tsdb.max-block-duration="$BLOCK")
  PROM_STORAGE=(--storage.tsdb.min-block-duration="$BLOCK" --storage.tsdb.max-block-duration="$BLOCK")
  # RETENTION (e.g. 6m, with BLOCK): both drop blocks older than that, so that a long enough
  # run reaches a steady state (as many blocks kept as dropped) instead of holding every
  # block of the run, as the default 1 d retention does.
  if [ -n "${RETENTION:-}" ]; then
    EVAL_STORAGE+=(--storage.tsdb.retention.time="$RETENTION")
    PROM_STORAGE+=(--storage.tsdb.retention.time="$RETENTION")
  fi
fi
"$LOOKOUT" --log.level warn evaluator --config.file "$WORK/evaluator.yml" \
  --web.listen-address "127.0.0.1:$V_PORT" --rules.state-file "$WORK/state.json" \
  "${EVAL_STORAGE[@]}" 2>"$WORK/evaluator.log" &
V_PID=$!; PIDS+=($V_PID)
SCRAPERS=("evaluator=$V_PID=http://127.0.0.1:$V_PORT")
if [ "$PROMETHEUS" != 0 ]; then
  prometheus --config.file "$WORK/evaluator.yml" --storage.tsdb.path "$WORK/prom" "${PROM_STORAGE[@]}" \
    --web.listen-address "127.0.0.1:$P_PORT" --log.level warn 2>"$WORK/prometheus.log" &
  P_PID=$!; PIDS+=($P_PID)
  SCRAPERS+=("prometheus=$P_PID=http://127.0.0.1:$P_PORT")
fi
wait_up "http://127.0.0.1:$E_PORT/-/healthy"
wait_up "http://127.0.0.1:$V_PORT/-/ready"
[ "$PROMETHEUS" = 0 ] || wait_up "http://127.0.0.1:$P_PORT/-/ready"
echo "== $TARGETS targets each: warm-up ${WARMUP}s, then $ROUNDS rewrites every ${PERIOD}s; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
sleep "$WARMUP"
# query URL PROMQL: the first value of an instant query (0 when empty).
query() { curl -fsS "$1/api/v1/query" --data-urlencode "query=$2" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'; }
head_series() { curl -fsS "$1/metrics" | awk '/^prometheus_tsdb_head_series / {print $2}'; }
probed=$(curl -fsS "http://127.0.0.1:$E_PORT/metrics" | grep -c '^lookout_target_last_probe_timestamp_seconds{' || true)
declare -A scraped series0
for s in "${SCRAPERS[@]}"; do
  name=${s%%=*} url=${s##*=}
  scraped[$name]=$(query "$url" 'count(up{job="sd"} == 1)')
  series0[$name]=$(head_series "$url")
  echo "after warm-up: $name scraped ${scraped[$name]} targets up (${series0[$name]} series)" >&2
done
echo "after warm-up: exporter has probed $probed targets" >&2

python3 "$HERE/churn.py" run "$WORK/exporter-sd.json" "$WORK/evaluator-sd.json" "$PROBE_URL" "$SCRAPE_ADDR" \
  "$TARGETS" "$FRACTION" "$PERIOD" "$ROUNDS" \
  "exporter=$E_PID=http://127.0.0.1:$E_PORT" "${SCRAPERS[@]}"
echo "initial set after ${WARMUP}s: exporter probed $probed of $TARGETS;$(for s in "${SCRAPERS[@]}"; do
  name=${s%%=*}; printf ' %s scraped %s of %s up;' "$name" "${scraped[$name]}" "$TARGETS"; done)"
span=$((ROUNDS * PERIOD))
for s in "${SCRAPERS[@]}"; do
  name=${s%%=*} url=${s##*=}
  echo "$name: series in the head ${series0[$name]} after warm-up, $(head_series "$url") after the churn (removed targets' series stay until retention or the head's next cut);" \
    "targets with a failed scrape during the churn: $(query "$url" "count(min_over_time(up{job=\"sd\"}[${span}s]) == 0)")," \
    "longest scrape: $(query "$url" "max(max_over_time(scrape_duration_seconds{job=\"sd\"}[${span}s]))") s"
done
echo "scrapes the target saw cut short (broken pipe or reset, both scrapers): $(grep -cE 'BrokenPipeError|ConnectionResetError' "$WORK/target.log" || true)"
metrics=$(curl -fsS "http://127.0.0.1:$E_PORT/metrics")
echo "exporter: targets down now $(echo "$metrics" | grep -c '^up{.*} 0$' || true)," \
  "skipped probe ticks $(echo "$metrics" | awk '/^lookout_exporter_probes_skipped_total/ {s += $2} END {print s + 0}')"
for log in "$WORK"/exporter.log "$WORK"/evaluator.log "$WORK"/prometheus.log; do
  if [ -s "$log" ]; then echo "-- $(basename "$log"): $(wc -l < "$log") lines, last:"; tail -n 3 "$log" | cut -c1-300; fi
done
