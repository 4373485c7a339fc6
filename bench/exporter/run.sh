#!/usr/bin/env bash
# Exporter benchmark (not a test): Lookout vs Debian's prometheus-blackbox-exporter.
#
# 1. /probe throughput: both exporters, same module (http_2xx, from one shared config file),
#    same loopback HTTP target, loaded with wrk; reports probes/s, peak RSS (VmHWM) and the
#    ratios Lookout/blackbox. Goal: >= 2x the probes/s at <= 1/2 the memory.
# 2. Continuous probing: Lookout alone with 10,000 loopback HTTP targets at a 15 s interval;
#    reports CPU% and RSS once the schedule is in steady state, and the time to render
#    /metrics.
#
# The HTTP target is a second `lookout exporter` serving /-/healthy (a small axum handler),
# so no extra software is needed; it runs on the same machine and its CPU is not counted.
#
# Usage: bench/exporter/run.sh            (env: DURATION=20s CONNECTIONS=32 THREADS=2
#                                                 TARGETS=10000 SETTLE=45 WINDOW=30;
#                                            LOOKOUT_BIN=path skips the release build;
#                                            CONTINUOUS=0 runs part 1 only)
# Needs: cargo, wrk, curl, prometheus-blackbox-exporter (Debian package of that name).
set -euo pipefail

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-10000}
SETTLE=${SETTLE:-45}
WINDOW=${WINDOW:-30}
CONTINUOUS=${CONTINUOUS:-1}
BLACKBOX=${BLACKBOX:-$(command -v prometheus-blackbox-exporter || echo /usr/bin/prometheus-blackbox-exporter)}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOOKOUT=${LOOKOUT_BIN:-$TARGET_DIR/release/lookout}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

TARGET_PORT=19200
BB_PORT=19201
LK_PORT=19202
CONT_PORT=19203

if [ -z "${LOOKOUT_BIN:-}" ]; then
  echo "building lookout (release)..." >&2
  (cd "$ROOT" && cargo build --release -p lookout --quiet)
fi

wait_up() { # url
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not reachable: $1" >&2; exit 1
}
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# --- the target -----------------------------------------------------------------------
. "$ROOT/bench/exporter/targets.sh"
healthy_target "$TARGET_PORT"

# --- /probe throughput ------------------------------------------------------------------
http_2xx_module > "$WORK/modules.yml"

"$BLACKBOX" --config.file "$WORK/modules.yml" --web.listen-address "127.0.0.1:$BB_PORT" \
  --log.level=warn >/dev/null 2>&1 &
BB_PID=$!; PIDS+=($BB_PID)
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/modules.yml" \
  --web.listen-address "127.0.0.1:$LK_PORT" &
LK_PID=$!; PIDS+=($LK_PID)

PROBE_PATH="/probe?module=http_2xx&target=$TARGET_URL"
wait_up "http://127.0.0.1:$BB_PORT/-/healthy"
wait_up "http://127.0.0.1:$LK_PORT/-/healthy"
for port in $BB_PORT $LK_PORT; do
  if ! curl -fsS "http://127.0.0.1:$port$PROBE_PATH" | grep -q '^probe_success 1'; then
    echo "probe through port $port does not succeed:" >&2
    curl -sS "http://127.0.0.1:$port$PROBE_PATH&debug=true" >&2 || true
    exit 1
  fi
done

run_wrk() { # port -> requests/s ; also prints wrk's non-2xx line if any
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1$PROBE_PATH")
  echo "$out" >&2
  if echo "$out" | grep -q "Non-2xx"; then echo "warning: non-2xx answers on port $1" >&2; fi
  echo "$out" | awk '/^Requests\/sec/ {print $2}'
}

echo "== wrk on blackbox_exporter /probe" >&2
BB_RPS=$(run_wrk $BB_PORT)
sleep 2
echo "== wrk on lookout /probe" >&2
LK_RPS=$(run_wrk $LK_PORT)
BB_HWM=$(hwm_kb $BB_PID)
LK_HWM=$(hwm_kb $LK_PID)
# Of Lookout's RSS, its own code: the binary's executable mapping (what the function order
# in link/hot-functions.txt keeps small).
LK_CODE=$(awk -v bin="$(readlink -f "$LOOKOUT")" '
  /^[0-9a-f]+-[0-9a-f]+ / { code = ($2 ~ /x/ && $6 == bin) }
  code && /^Rss:/ { kb += $2 } END { print kb + 0 }' "/proc/$LK_PID/smaps")
kill "$BB_PID" "$LK_PID"

# How many of the functions build.rs places first (link/hot-functions.txt) this binary has:
# the names follow the toolchain and dependencies, and stale ones lose the memory saving.
order_report() {
  local list=$ROOT/link/hot-functions.txt
  [ -f "$list" ] || return 0
  nm --defined-only "$LOOKOUT" 2>/dev/null | awk -v list="$list" '
    BEGIN { while ((getline l < list) > 0) if (l !~ /^#/ && l != "") { want[l] = 1; n++ } }
    ($3 in want) { found[$3] = 1 }
    END { k = 0; for (s in found) k++
          printf "  hot-function order: %d of %d listed functions present in the binary (scripts/symbol-order.sh refreshes the list)\n", k, n }'
  echo "  lookout's own code resident after the run: $((LK_CODE / 1024)).$(( (LK_CODE % 1024) * 10 / 1024 )) MiB"
}
report_probe() {
  order_report
  awk -v bb="$BB_RPS" -v lk="$LK_RPS" -v bbm="$BB_HWM" -v lkm="$LK_HWM" \
      -v c="$CONNECTIONS" -v d="$DURATION" 'BEGIN {
    printf "\n/probe throughput (wrk, %s connections, %s, same loopback target and module)\n", c, d
    printf "  %-22s %12s %14s\n", "", "probes/s", "peak RSS (MiB)"
    printf "  %-22s %12.0f %14.1f\n", "blackbox_exporter", bb, bbm / 1024
    printf "  %-22s %12.0f %14.1f\n", "lookout exporter", lk, lkm / 1024
    printf "  ratio lookout/blackbox: probes/s %.2fx, memory %.2fx (goal: >= 2x, <= 0.5x)\n", lk / bb, lkm / bbm
  }'
}
if [ "$CONTINUOUS" = 0 ]; then
  report_probe
  exit 0
fi

# --- continuous probing of many targets -------------------------------------------------
{ http_2xx_module; http_targets "$TARGETS" 15s; } > "$WORK/many.yml"
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/many.yml" \
  --web.listen-address "127.0.0.1:$CONT_PORT" &
CONT_PID=$!; PIDS+=($CONT_PID)
wait_up "http://127.0.0.1:$CONT_PORT/-/healthy"
echo "== $TARGETS targets: settling for ${SETTLE}s" >&2
sleep "$SETTLE"
HZ=$(getconf CLK_TCK)
T0=$(cpu_ticks $CONT_PID); S0=$(date +%s.%N)
sleep "$WINDOW"
T1=$(cpu_ticks $CONT_PID); S1=$(date +%s.%N)
CPU=$(awk -v t0="$T0" -v t1="$T1" -v s0="$S0" -v s1="$S1" -v hz="$HZ" \
  'BEGIN {printf "%.1f", 100 * (t1 - t0) / hz / (s1 - s0)}')
CONT_RSS=$(rss_kb $CONT_PID)
CONT_HWM=$(hwm_kb $CONT_PID)
UP=$(curl -fsS "http://127.0.0.1:$CONT_PORT/metrics" | grep -c '^up{.*} 1' || true)
RENDER_TIMES=()
for _ in 1 2 3 4 5; do
  RENDER_TIMES+=("$(curl -fsS -o "$WORK/metrics.txt" -w '%{time_total}' "http://127.0.0.1:$CONT_PORT/metrics")")
done
RENDER_MS=$(printf '%s\n' "${RENDER_TIMES[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", 1000 * a[int((NR+1)/2)]}')
METRICS_BYTES=$(wc -c < "$WORK/metrics.txt")
SKIPPED=$(grep '^lookout_exporter_probes_skipped_total' "$WORK/metrics.txt" | awk '{print $2}')

# --- report -----------------------------------------------------------------------------
report_probe
awk -v cpu="$CPU" -v rss="$CONT_RSS" -v hwm="$CONT_HWM" -v ms="$RENDER_MS" -v bytes="$METRICS_BYTES" \
    -v up="$UP" -v n="$TARGETS" -v skipped="$SKIPPED" 'BEGIN {
  printf "\ncontinuous probing: %d targets at 15s\n", n
  printf "  CPU %s%% of one core, RSS %.1f MiB (peak %.1f MiB), targets up %d, skipped ticks %s\n", cpu, rss / 1024, hwm / 1024, up, skipped
  printf "  /metrics render: %s ms (median of 5), %.1f MiB\n", ms, bytes / 1048576
}'
