#!/usr/bin/env bash
# /metrics in both formats (issue 15, not a test): `lookout exporter` with TARGETS loopback
# HTTP targets probed every INTERVAL seconds. After SETTLE seconds, so that each target's
# http_request_duration_seconds holds several observations, /metrics is fetched RUNS times
# in each format, turn about, with curl and the Accept header Prometheus 2.42 sends: without
# native histograms (OpenMetrics text) and with them (delimited protobuf, which carries the
# native buckets beside the classic ones). Reports each format's body size, its time to
# first byte (the render: the body is built before the answer starts) and total time
# (render and loopback transfer), as medians, and how many native buckets the histograms
# hold. The target is a second `lookout exporter` answering /-/healthy.
#
# Usage: bench/exporter/metrics_formats.sh   (env: TARGETS=10000 INTERVAL=10s SETTLE=60 RUNS=9
#                                             PORT_BASE=19210, two loopback ports from there;
#                                             LOOKOUT_BIN=path skips the release build)
# Needs: cargo, curl, python3.
set -euo pipefail

TARGETS=${TARGETS:-10000}
INTERVAL=${INTERVAL:-10s}
SETTLE=${SETTLE:-60}
RUNS=${RUNS:-9}
PORT_BASE=${PORT_BASE:-19210}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/../lib.sh"
. "$HERE/targets.sh"
need curl python3
build_lookout

TARGET_PORT=$PORT_BASE EXPORTER_PORT=$((PORT_BASE + 1))
ports_free "$TARGET_PORT" "$EXPORTER_PORT"

healthy_target "$TARGET_PORT"
{ http_2xx_module; http_targets "$TARGETS" "$INTERVAL"; } > "$WORK/many.yml"
"$LOOKOUT" --log.level warn exporter --config.file "$WORK/many.yml" \
  --web.listen-address "127.0.0.1:$EXPORTER_PORT" &
PIDS+=($!)
METRICS="http://127.0.0.1:$EXPORTER_PORT/metrics"
wait_up "$METRICS"
echo "== $TARGETS targets every $INTERVAL: settling for ${SETTLE}s" >&2
sleep "$SETTLE"

# Prometheus 2.42's Accept headers (scrape/scrape.go), without and with native histograms.
TEXT_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
PROTOBUF_ACCEPT="application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,${TEXT_ACCEPT/version=1.0.0,/version=1.0.0;q=0.8,}"
for _ in $(seq 1 "$RUNS"); do
  for format in text protobuf; do
    accept=$TEXT_ACCEPT
    [ "$format" = protobuf ] && accept=$PROTOBUF_ACCEPT
    curl -fsS -H "Accept: $accept" -o "$WORK/$format.body" -D "$WORK/$format.head" \
      -w '%{time_starttransfer} %{time_total} %{size_download}\n' "$METRICS" >> "$WORK/$format.times"
  done
done
grep -qi '^content-type: application/openmetrics-text' "$WORK/text.head" \
  || { echo "the text answer is not OpenMetrics:" >&2; cat "$WORK/text.head" >&2; exit 1; }
grep -qi '^content-type: application/vnd.google.protobuf' "$WORK/protobuf.head" \
  || { echo "the protobuf answer is not protobuf:" >&2; cat "$WORK/protobuf.head" >&2; exit 1; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$WORK" "$TARGETS" "$INTERVAL" "$RUNS" "$LOAD" <<'PY'
import re, statistics, sys

work, targets, interval, runs, load = sys.argv[1:]

def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7f) << shift; shift += 7
        if c < 0x80:
            return v, i

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        wire = key & 7
        if wire == 0:
            v, i = varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(b, i); v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, v

def families(b):
    i = 0
    while i < len(b):
        n, i = varint(b, i)
        yield b[i:i + n]; i += n

# Native buckets of http_request_duration_seconds: populated buckets per histogram, from
# the packed deltas (field 13) of each Histogram (field 7 of each Metric, field 4).
body = open(f"{work}/protobuf.body", "rb").read()
populated, observations = [], []
for family in families(body):
    f = dict((k, v) for k, v in fields(family) if k != 4)
    if f.get(1) != b"http_request_duration_seconds":
        continue
    for k, metric in fields(family):
        if k != 4:
            continue
        for mk, h in fields(metric):
            if mk != 7:
                continue
            count, buckets = 0, 0
            for hk, hv in fields(h):
                if hk == 1:
                    count = hv
                if hk == 13:
                    j, running = 0, 0
                    while j < len(hv):
                        z, j = varint(hv, j)
                        running += (z >> 1) ^ -(z & 1)
                        buckets += running > 0
            populated.append(buckets); observations.append(count)

text = open(f"{work}/text.body", encoding="utf-8").read()
up = len(re.findall(r"^up\{.*\} 1(\.0)?$", text, re.M))

print(f"\n/metrics with {targets} HTTP targets every {interval}: {up} up, load average {load}")
print(f"  {'format':<10} {'body':>10} {'render (TTFB)':>14} {'render + transfer':>18}   (medians of {runs})")
sizes = {}
for fmt in ("text", "protobuf"):
    rows = [line.split() for line in open(f"{work}/{fmt}.times")]
    ttfb = statistics.median(float(r[0]) for r in rows) * 1000
    total = statistics.median(float(r[1]) for r in rows) * 1000
    size = statistics.median(int(r[2]) for r in rows)
    sizes[fmt] = size
    print(f"  {fmt:<10} {size / 1048576:>6.1f} MiB {ttfb:>11.0f} ms {total:>15.0f} ms")
print(f"  protobuf/text size: {sizes['protobuf'] / sizes['text']:.2f}x")
if populated:
    print(f"  native buckets per http histogram: mean {statistics.mean(populated):.1f}, "
          f"max {max(populated)}; observations per histogram: mean {statistics.mean(observations):.1f}")
PY
