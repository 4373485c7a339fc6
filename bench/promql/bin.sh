#!/usr/bin/env bash
# Builds a PromQL bench binary (release) and prints its path: `promql` by default
# (crates/lookout-promql/benches/promql.rs: bench/promql/run.sh and bench/tsdb/run.sh run it
# for its data set and commands), or the one named (`bin.sh promql_nh`: bench/promql/nh.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:-promql}
BIN=$(cargo bench --locked -p lookout-promql --bench "$NAME" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$NAME")
[ -x "$BIN" ] || { echo "bench binary not built" >&2; exit 1; }
echo "$BIN"
