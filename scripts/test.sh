#!/usr/bin/env bash
# The one test command (README "Test"): installs the real peers the tests need, runs the
# Rust test suite, compares lookout side by side with blackbox_exporter and promtool (the
# differential harnesses in scripts/differential), checks the shipped rules with both
# promtool and lookout, validates the compose stack and runs its topology natively.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's start, with the seconds since the command began.
step() { echo "== test step at ${SECONDS}s: $*" >&2; }

step install peers
bash scripts/install-test-deps.sh
step cargo test build
cargo test --workspace --locked --no-run
# The release build the promtool differential needs runs while the tests do: most of
# their time is spent waiting on real programs and timers, and the two profiles build in
# directories of their own (no lock between them).
release_log=$(mktemp)
cargo build --release --locked --bin lookout >"$release_log" 2>&1 &
release_pid=$!
trap 'kill "$release_pid" 2>/dev/null || true; rm -f "$release_log"' EXIT
step cargo test, release build beside it
cargo test --workspace --locked

export LOOKOUT_BIN=target/debug/lookout
# The peers as oracles: blackbox_exporter and lookout exporter side by side.
step blackbox differential
python3 scripts/differential/blackbox.py --lookout "$LOOKOUT_BIN"
# promtool and lookout rules check|test on the real-world corpus (../shared/ecosystem): a
# release build, as users run it (the corpus takes minutes in a debug build).
step release build finishing, promtool differential
if ! wait "$release_pid"; then
    cat "$release_log" >&2
    echo "release build failed" >&2
    exit 1
fi
tail -n 1 "$release_log" >&2
python3 scripts/differential/promtool.py --lookout target/release/lookout
step shipped rules, compose file, native stack
bash scripts/check-rules.sh
bash scripts/validate-compose.sh
python3 scripts/e2e-stack-native.py
step done
