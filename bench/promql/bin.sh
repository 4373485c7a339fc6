#!/usr/bin/env bash
# Builds the PromQL bench binary (crates/lookout-promql/benches/promql.rs, release) and prints
# its path: bench/promql/run.sh and bench/tsdb/run.sh run it for its data set and commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(cargo bench --locked -p lookout-promql --bench promql --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "promql" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { echo "bench binary not built" >&2; exit 1; }
echo "$BIN"
