#!/usr/bin/env bash
# Alertmanager down for OUTAGE_SECS (default 600 = ten minutes), then back on the same port:
# runs the fault test crates/lookout-evaluator/tests/fault_alertmanager_outage.rs with the long
# outage. Needs Debian's prometheus-alertmanager. Prints the test's outcome and wall time.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTAGE_SECS="${OUTAGE_SECS:-600}"
export LOOKOUT_FAULT_AM_OUTAGE_SECS="$OUTAGE_SECS"
cargo test -p lookout-evaluator --test fault_alertmanager_outage --no-run >/dev/null
start=$(date +%s)
cargo test -p lookout-evaluator --test fault_alertmanager_outage -- --nocapture 2>&1 | grep -E "^test |test result"
echo "outage ${OUTAGE_SECS}s, wall time $(( $(date +%s) - start ))s"
