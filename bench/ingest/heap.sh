#!/usr/bin/env bash
# Where the evaluator's heap goes while it ingests (issue 16): heaptrack on the debug build
# (line tables give the call sites) scraping SERIES series over SERIES / PER_TARGET loopback
# targets (../api/target.py, as bench/ingest/run.sh serves them) every 15 s with its data
# directory, for SECONDS_RUN seconds; then the peak heap by the first Lookout function on
# each allocation's stack (heaptrack's peak cost, summed), largest first.
#
# Usage: bench/ingest/heap.sh   (env: SERIES=100000 PER_TARGET=10000 SECONDS_RUN=150
#                                PORT_BASE=19810; LOOKOUT_BIN=path of a build with debug
#                                line tables, default the debug build)
# Needs: cargo, curl, python3, heaptrack, heaptrack_print.
set -euo pipefail

SERIES=${SERIES:-100000}
PER_TARGET=${PER_TARGET:-10000}
SECONDS_RUN=${SECONDS_RUN:-150}
PORT_BASE=${PORT_BASE:-19810}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOOKOUT_BIN=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/lookout}
. "$HERE/../lib.sh"
need curl python3 heaptrack heaptrack_print
[ -x "$LOOKOUT" ] || (cd "$ROOT" && cargo build --locked --bin lookout --quiet)

targets=$(( (SERIES + PER_TARGET - 1) / PER_TARGET ))
per=$(( SERIES / targets ))
first=$((PORT_BASE + 1)) last=$((PORT_BASE + targets))
ports_free "$PORT_BASE" $(seq "$first" "$last")
python3 "$ROOT/bench/api/target.py" "$first-$last" "$per" $((per / 2)) $((per * 2 / 5 / 12)) &
PIDS+=($!)
wait_up "http://127.0.0.1:$last/metrics"
list=$(seq "$first" "$last" | sed "s/^/'127.0.0.1:/; s/\$/'/" | paste -sd, -)
cat > "$WORK/scrape.yml" <<YML
global:
  scrape_interval: 15s
  scrape_timeout: 10s
scrape_configs:
  - job_name: ingest
    static_configs: [{targets: [$list]}]
YML
heaptrack -o "$WORK/heap" "$LOOKOUT" --log.level warn evaluator --config.file "$WORK/scrape.yml" \
  --web.listen-address "127.0.0.1:$PORT_BASE" --rules.state-file "$WORK/state.json" \
  --storage.tsdb.path "$WORK/data" --storage.max-series $((SERIES * 2 + 1000)) \
  >"$WORK/heaptrack.log" 2>&1 &
HT=$!
sleep "$SECONDS_RUN"
curl -fsS "http://127.0.0.1:$PORT_BASE/metrics" | grep -E '^prometheus_tsdb_head_series ' >&2
pkill -INT -f -- "--web.listen-address 127.0.0.1:$PORT_BASE" || true
wait "$HT" || true
heaptrack_print -f "$WORK"/heap*.zst -F "$WORK/stacks.txt" --flamegraph-cost-type peak >/dev/null
python3 - "$WORK/stacks.txt" <<'PY'
import collections, re, sys
by_site = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(' ')
    frames = stack.split(';')
    site = next((f for f in reversed(frames) if re.match(r'lookout', f)), frames[-1])
    by_site[re.sub(r'::h[0-9a-f]{16}', '', site)[:140]] += int(cost)
print(f"peak heap {sum(by_site.values()) / 1e6:.1f} MB")
for site, cost in by_site.most_common(12):
    print(f"{cost / 1e6:8.2f} MB  {site}")
PY
