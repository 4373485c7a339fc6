#!/usr/bin/env bash
# Load test (issue 6 "Load"): on this machine, for DURATION seconds each (default 600):
#
# 1. the exporter with TARGETS (10,000) continuous HTTP targets at INTERVAL (15s), all on
#    loopback (a second `lookout exporter` serving /-/healthy is the target);
# 2. the evaluator in embedded mode with RULES (1,000: half recording, half alerting with a
#    `for`) over SERIES (10,000) scraped every 15s from one loopback target (python3's
#    http.server serving a fixed exposition file), evaluated every EVAL_INTERVAL (15s).
#
# Every SAMPLE seconds it records RSS (MiB) and CPU (% of one core over the last period) of
# the program under load, and at the end the programs' own counts of missed slots:
# lookout_exporter_probes_skipped_total and prometheus_rule_group_iterations_missed_total
# (with lookout_exporter_probes_total and prometheus_rule_group_iterations_total to compare).
# The time series go to $OUT/{exporter,evaluator}.tsv, the summary to stdout.
#
# Usage: bench/load/run.sh   (env: DURATION=600 SAMPLE=10 TARGETS=10000 INTERVAL=15s
#                              RULES=1000 SERIES=10000 EVAL_INTERVAL=15s OUT=dir
#                              LOOKOUT_BIN=path skips the release build; ONLY=exporter|evaluator;
#                              PORT_BASE=19300, four loopback ports from there;
#                              EVALUATOR_FLAGS="--storage.tsdb.retention.time=3m")
# Needs: cargo, curl, python3.
set -euo pipefail

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
TARGETS=${TARGETS:-10000}
INTERVAL=${INTERVAL:-15s}
RULES=${RULES:-1000}
SERIES=${SERIES:-10000}
EVAL_INTERVAL=${EVAL_INTERVAL:-15s}
ONLY=${ONLY:-}
# Extra evaluator flags, e.g. "--storage.tsdb.retention.time=3m" to see memory level off
# once the embedded storage holds its whole window (it keeps 1 day by default).
EVALUATOR_FLAGS=${EVALUATOR_FLAGS:-}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOOKOUT=${LOOKOUT_BIN:-$TARGET_DIR/release/lookout}
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK/cfg"
}
trap cleanup EXIT
mkdir -p "$WORK/cfg"

if [ -z "${LOOKOUT_BIN:-}" ]; then
  echo "building lookout (release)..." >&2
  (cd "$ROOT" && cargo build --release -p lookout --quiet)
fi

. "$ROOT/bench/exporter/targets.sh"

PORT_BASE=${PORT_BASE:-19300}
TARGET_PORT=$PORT_BASE
EXPORTER_PORT=$((PORT_BASE + 1))
SERIES_PORT=$((PORT_BASE + 2))
EVALUATOR_PORT=$((PORT_BASE + 3))

wait_up() { # url
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not reachable: $1" >&2; exit 1
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# Sum of a metric's series on a /metrics page.
metric_sum() { # url name
  curl -fsS "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.0f", s}'
}

# Samples pid every SAMPLE seconds for DURATION seconds into file: t rss_mib cpu_pct.
sample() { # pid file
  local pid=$1 file=$2 t0 ticks0 now ticks
  echo -e "seconds\trss_mib\tcpu_pct" > "$file"
  t0=$(date +%s.%N); ticks0=$(cpu_ticks "$pid")
  local start=$t0
  while awk -v s="$start" -v n="$(date +%s.%N)" -v d="$DURATION" 'BEGIN {exit !(n - s < d)}'; do
    sleep "$SAMPLE"
    now=$(date +%s.%N); ticks=$(cpu_ticks "$pid")
    awk -v s="$start" -v n="$now" -v t0="$t0" -v k0="$ticks0" -v k="$ticks" -v hz="$HZ" -v r="$(rss_kb "$pid")" \
      'BEGIN {printf "%.0f\t%.1f\t%.1f\n", n - s, r / 1024, 100 * (k - k0) / hz / (n - t0)}' >> "$file"
    t0=$now; ticks0=$ticks
  done
}

# Summary of a samples file: RSS after warm-up (first third dropped) min/max, last; CPU mean.
summarise() { # file
  awk -F'\t' 'NR > 1 {n++; t[n] = $1; r[n] = $2; c[n] = $3}
    END {
      w = int(n / 3) + 1; lo = 1e18; hi = 0; cs = 0
      for (i = w; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
      for (i = 1; i <= n; i++) cs += c[i]
      printf "  RSS after warm-up (from %ss): %.1f..%.1f MiB, at the end %.1f MiB; CPU mean %.1f%% of one core\n", t[w], lo, hi, r[n], cs / n
    }' "$1"
}

# --- exporter -----------------------------------------------------------------------------
if [ "$ONLY" != evaluator ]; then
  healthy_target "$TARGET_PORT"
  {
    http_2xx_module
    http_targets "$TARGETS" "$INTERVAL"
  } > "$WORK/cfg/exporter.yml"
  "$LOOKOUT" --log.level warn exporter --config.file "$WORK/cfg/exporter.yml" \
    --web.listen-address "127.0.0.1:$EXPORTER_PORT" &
  EXP_PID=$!; PIDS+=($EXP_PID)
  wait_up "http://127.0.0.1:$EXPORTER_PORT/-/healthy"
  echo "== exporter: $TARGETS targets every $INTERVAL for ${DURATION}s" >&2
  sample "$EXP_PID" "$OUT/exporter.tsv"
  M="http://127.0.0.1:$EXPORTER_PORT/metrics"
  EXP_PROBES=$(metric_sum "$M" lookout_exporter_probes_total)
  EXP_SKIPPED=$(metric_sum "$M" lookout_exporter_probes_skipped_total)
  EXP_UP=$(curl -fsS "$M" | grep -c '^up{.*} 1' || true)
  kill "$EXP_PID"; wait "$EXP_PID" 2>/dev/null || true  # before its target goes
  echo "exporter: $TARGETS targets every $INTERVAL, ${DURATION}s"
  summarise "$OUT/exporter.tsv"
  echo "  probes run $EXP_PROBES, ticks skipped (lookout_exporter_probes_skipped_total) $EXP_SKIPPED, targets up at the end $EXP_UP"
fi

# --- evaluator ----------------------------------------------------------------------------
if [ "$ONLY" != exporter ]; then
  GROUPS_N=$(( (SERIES + 99) / 100 ))
  python3 - "$WORK/cfg" "$SERIES" "$RULES" "$GROUPS_N" "$EVAL_INTERVAL" <<'EOF'
import os, sys
out, series, rules, groups, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.makedirs(os.path.join(out, "www"), exist_ok=True)
with open(os.path.join(out, "www", "metrics"), "w") as f:
    f.write("# TYPE load_value gauge\n")
    for i in range(series):
        f.write(f'load_value{{grp="g{i % groups}",inst="i{i}"}} {(i * 37) % 100}\n')
lines = ["groups:"]
per_group = 100
for r in range(rules):
    if r % per_group == 0:
        lines += [f"  - name: load{r // per_group}", f"    interval: {interval}", "    rules:"]
    g = r % groups
    if r % 2 == 0:
        lines += [f"      - record: grp:load_value:avg{r}", f'        expr: avg by (grp) (load_value{{grp="g{g}"}})']
    else:
        lines += [f"      - alert: LoadHigh{r}", f'        expr: load_value{{grp="g{g}"}} > 90', "        for: 1m",
                  "        annotations:", '          summary: "{{ $labels.inst }} at {{ $value }}"']
open(os.path.join(out, "rules.yml"), "w").write("\n".join(lines) + "\n")
EOF
  (cd "$WORK/cfg/www" && exec python3 -m http.server "$SERIES_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$SERIES_PORT/metrics"
  cat > "$WORK/cfg/evaluator.yml" <<YML
global:
  scrape_interval: 15s
  evaluation_interval: $EVAL_INTERVAL
rule_files: [rules.yml]
scrape_configs:
  - job_name: load
    static_configs: [{targets: ['127.0.0.1:$SERIES_PORT']}]
YML
  "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/cfg/evaluator.yml" \
    --web.listen-address "127.0.0.1:$EVALUATOR_PORT" --rules.state-file "$WORK/cfg/state.json" \
    --storage.tsdb.path "$WORK/data" $EVALUATOR_FLAGS &
  EV_PID=$!; PIDS+=($EV_PID)
  wait_up "http://127.0.0.1:$EVALUATOR_PORT/-/ready"
  echo "== evaluator: $RULES rules over $SERIES series every $EVAL_INTERVAL for ${DURATION}s" >&2
  sample "$EV_PID" "$OUT/evaluator.tsv"
  M="http://127.0.0.1:$EVALUATOR_PORT/metrics"
  EV_ITER=$(metric_sum "$M" prometheus_rule_group_iterations_total)
  EV_MISSED=$(metric_sum "$M" prometheus_rule_group_iterations_missed_total)
  EV_FAILED=$(metric_sum "$M" prometheus_rule_evaluation_failures_total)
  EV_SERIES=$(curl -fsS "http://127.0.0.1:$EVALUATOR_PORT/api/v1/query?query=count(load_value)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
  kill "$EV_PID"; wait "$EV_PID" 2>/dev/null || true
  echo "evaluator: $RULES rules in $(( (RULES + 99) / 100 )) groups over $EV_SERIES series every $EVAL_INTERVAL, ${DURATION}s"
  summarise "$OUT/evaluator.tsv"
  echo "  group iterations $EV_ITER, missed (prometheus_rule_group_iterations_missed_total) $EV_MISSED, rule evaluation failures $EV_FAILED"
fi
echo "samples in $OUT"
