#!/usr/bin/env bash
# The one test command (README "Test"): installs the real peers the tests need, runs the
# Rust test suite, then checks the shipped rules with both promtool and lookout, validates
# the compose stack and runs its topology natively.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
cargo test --workspace --locked

export LOOKOUT_BIN=target/debug/lookout
bash scripts/check-rules.sh
bash scripts/validate-compose.sh
python3 scripts/e2e-stack-native.py
