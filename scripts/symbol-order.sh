#!/usr/bin/env bash
# Regenerates link/hot-functions.txt: the functions `lookout exporter` and `lookout evaluator`
# run, which the release link (build.rs) places first in .text so that they share as few
# pages as possible. The kernel maps code in large blocks around each page touched: with
# these functions scattered over the 16 MB of text, an exporter at rest held 6 MB of it;
# gathered, about 1.4 MB (BENCHMARKS.md, "Exporter"). The exporter's functions come first,
# then those only the evaluator runs.
#
# The names are the linker's (mangled, with the hash of their crate's build), so they follow
# the toolchain and the dependencies' versions: rerun this after upgrading either. Stale names
# are skipped by the linker without harm; bench/exporter/run.sh reports how many still match.
#
# How: a release build runs under valgrind's callgrind, which records every function run:
#  1. `lookout exporter` starts, answers /metrics and /-/healthy, and probes an HTTP target
#     16 at a time, a TCP port and 127.0.0.1 by ICMP;
#  2. `lookout evaluator` (embedded, with a data directory) scrapes bench/vmalert's synthetic
#     Kubernetes target, evaluates the shipped rules and kubernetes-mixin's, and answers the
#     query, rules, alerts and targets APIs and the status pages;
#  3. `lookout evaluator` in remote mode does the same against VictoriaMetrics.
# scripts/callgrind_functions.py lists every function of the binary that ran, in that order.
#
# Usage: scripts/symbol-order.sh   (env: LOOKOUT_BIN=path skips the release build;
#                                   ROUND_SECONDS=90 of rounds per evaluator phase;
#                                   LOOKOUT_ECOSYSTEM=dir of the corpus, for kubernetes-mixin)
# Needs: valgrind, curl, python3, victoria-metrics, the ecosystem corpus (../shared/ecosystem).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/link/hot-functions.txt
ECOSYSTEM=${LOOKOUT_ECOSYSTEM:-$(dirname "$ROOT")/shared/ecosystem}
MIXIN=$ECOSYSTEM/corpus/kubernetes-mixin
# LOOKOUT, WORK, PIDS, need, build_lookout, ports_free, wait_up.
. "$ROOT/bench/lib.sh"
need valgrind curl nm python3 victoria-metrics
[ -f "$MIXIN/prometheus_rules.yaml" ] || { echo "kubernetes-mixin not found under $ECOSYSTEM (set LOOKOUT_ECOSYSTEM)" >&2; exit 1; }
build_lookout
# A copy under a name of its own, so callgrind's object names tell it apart from the target.
cp "$LOOKOUT" "$WORK/lookout-profiled"

TARGET_PORT=19290 PORT=19291 K8S_PORT=19292 VM_PORT=19293
ports_free "$TARGET_PORT" "$PORT" "$K8S_PORT" "$VM_PORT"

# profiled NAME ARGS...: the copy under callgrind, into $WORK/NAME.callgrind; sets VG.
profiled() {
  local name=$1
  shift
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$name.callgrind" \
    "$WORK/lookout-profiled" --log.level warn "$@" 2>"$WORK/$name.valgrind.log" &
  VG=$!
  PIDS+=($VG)
}
stop_profiled() {
  kill -INT "$VG"
  wait "$VG" || true
}

# --- 1. the exporter ----------------------------------------------------------------------
echo "modules: {}" > "$WORK/target.yml"
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/target.yml" \
  --web.listen-address "127.0.0.1:$TARGET_PORT" &
PIDS+=($!)
wait_up "http://127.0.0.1:$TARGET_PORT/-/healthy"
cat > "$WORK/modules.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
  tcp_connect:
    prober: tcp
    timeout: 5s
  icmp:
    prober: icmp
    timeout: 5s
EOF
profiled exporter exporter --config.file "$WORK/modules.yml" --web.listen-address "127.0.0.1:$PORT"
wait_up "http://127.0.0.1:$PORT/-/healthy"
probe() { # module target
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/probe?module=$1&target=$2"
}
export -f probe
export PORT
TARGET_URL="http://127.0.0.1:$TARGET_PORT/-/healthy"
seq 1 400 | xargs -P16 -I{} bash -c "probe http_2xx '$TARGET_URL?n={}'"
seq 1 50 | xargs -P16 -I{} bash -c "probe tcp_connect 127.0.0.1:$TARGET_PORT"
seq 1 20 | xargs -P4 -I{} bash -c "probe icmp 127.0.0.1" || echo "icmp probes failed (not root?): skipped" >&2
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/metrics"
stop_profiled

# --- 2 and 3. the evaluator, embedded and remote, on bench/vmalert's data and rules --------
RULES=("$ROOT"/rules/*.yml "$MIXIN"/prometheus_rules.yaml "$MIXIN"/prometheus_alerts.yaml)
python3 "$ROOT/bench/vmalert/k8s_target.py" "$K8S_PORT" 10 10 "${RULES[@]}" &
PIDS+=($!)
wait_up "http://127.0.0.1:$K8S_PORT/metrics"
evaluator_config() { # extra lines...
  echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
  echo "rule_files:"
  for f in "${RULES[@]}"; do echo "  - '$f'"; done
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
}
exercise_evaluator() { # ROUND_SECONDS of rounds, then its APIs and pages
  wait_up "http://127.0.0.1:$PORT/-/ready"
  sleep "${ROUND_SECONDS:-90}"
  local now
  now=$(date +%s)
  for path in "/api/v1/query?query=up" \
      "/api/v1/query?query=sum%20by%20(namespace)%20(rate(container_cpu_usage_seconds_total%5B5m%5D))" \
      "/api/v1/query_range?query=up&start=$((now - 60))&end=$now&step=5" \
      /api/v1/rules /api/v1/alerts /api/v1/targets /api/v1/labels "/api/v1/series?match%5B%5D=up" \
      /metrics / /graph; do
    # Remote mode answers the query APIs with 503: it has no data of its own.
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PORT$path" || true
  done
}
evaluator_config "scrape_configs:" "  - job_name: k8s" "    honor_labels: true" \
  "    static_configs: [{targets: ['127.0.0.1:$K8S_PORT']}]" > "$WORK/embedded.yml"
profiled embedded evaluator --config.file "$WORK/embedded.yml" \
  --web.listen-address "127.0.0.1:$PORT" --storage.tsdb.path "$WORK/data"
exercise_evaluator
stop_profiled

cat > "$WORK/vm-scrape.yml" <<EOF
global: {scrape_interval: 5s}
scrape_configs:
  - job_name: k8s
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$K8S_PORT']}]
EOF
victoria-metrics -httpListenAddr "127.0.0.1:$VM_PORT" -storageDataPath "$WORK/vm" \
  -promscrape.config "$WORK/vm-scrape.yml" -search.latencyOffset 0s -loggerLevel ERROR \
  >"$WORK/vm.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$VM_PORT/health"
sleep 12
evaluator_config > "$WORK/remote.yml"
profiled remote evaluator --config.file "$WORK/remote.yml" --web.listen-address "127.0.0.1:$PORT" \
  --datasource.url "http://127.0.0.1:$VM_PORT" --remote-write.url "http://127.0.0.1:$VM_PORT/api/v1/write"
exercise_evaluator
stop_profiled

# --- the list --------------------------------------------------------------------------------
python3 "$ROOT/scripts/callgrind_functions.py" "$WORK/lookout-profiled" \
  "$WORK"/{exporter,embedded,remote}.callgrind > "$WORK/order.txt"
mkdir -p "$(dirname "$OUT")"
{
  echo "# Generated by scripts/symbol-order.sh with $(rustc -V): do not edit."
  echo "# The functions lookout exporter, then lookout evaluator, run; placed first in .text by the release link (build.rs)."
  cat "$WORK/order.txt"
} > "$OUT"
for phase in exporter embedded remote; do
  echo "$phase: $(python3 "$ROOT/scripts/callgrind_functions.py" "$WORK/lookout-profiled" "$WORK/$phase.callgrind" | wc -l) functions ran" >&2
done
echo "$(grep -vc '^#' "$OUT") functions written to $OUT" >&2
