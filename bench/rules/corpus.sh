#!/usr/bin/env bash
# `lookout rules test` against promtool on real-world tests (BENCHMARKS.md "Rules test on the
# real-world corpus"): wall time and peak RSS of kubernetes-mixin's 8 test files for each
# runner, then the whole ecosystem corpus through the promtool differential harness, whose
# last lines sum each runner's per-file wall times. Needs a release build and the corpus
# beside the checkout (../shared/ecosystem, or $LOOKOUT_ECOSYSTEM).
#
#   cargo build --release --bin lookout && bench/rules/corpus.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
lookout="${LOOKOUT_BIN:-$root/target/release/lookout}"
corpus="${LOOKOUT_ECOSYSTEM:-$(dirname "$root")/shared/ecosystem}"
cd "$corpus/corpus/kubernetes-mixin"
for runner in "promtool test rules" "$lookout rules test"; do
    /usr/bin/time -f "${runner%% *}: %e s wall, %M KiB peak RSS" $runner tests/*.yaml >/dev/null 2>/tmp/corpus-bench.$$ || true
    tail -n 1 /tmp/corpus-bench.$$
done
rm -f /tmp/corpus-bench.$$
python3 "$root/scripts/differential/promtool.py" --lookout "$lookout" | tail -n 2
