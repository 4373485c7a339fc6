#!/usr/bin/env bash
# Checks and unit-tests the shipped rules (rules/*.rules.yml, tests in rules/tests/) with
# Debian's promtool and, with LOOKOUT_BIN=path/to/lookout, with `lookout rules check|test`
# too: both must pass.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "check-rules: promtool is needed (apt-get install prometheus)" >&2; exit 1; }

promtool check rules rules/*.rules.yml
promtool test rules rules/tests/*.yml

if [ -n "${LOOKOUT_BIN:-}" ]; then
  "$LOOKOUT_BIN" rules check rules/*.rules.yml
  "$LOOKOUT_BIN" rules test rules/tests/*.yml
fi
