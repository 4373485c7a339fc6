#!/usr/bin/env python3
"""Times the same API queries on each peer over HTTP with curl, turn about (query by query,
peer by peer, RUNS rounds), plain and with `Accept-Encoding: gzip`; prints medians (ms) and
each Lookout build's ratio to each peer and to the faster one. Also checks that every peer returned
the same number of series for each query.

Usage: drive.py RUNS END RANGE STEP name=url...   (END: Unix seconds, RANGE: seconds)
  env DRIVE_QUERIES: other queries, one a line (bench/tsdb/run.sh: the PromQL bench's).
"""
import json
import os
import statistics
import subprocess
import sys
import urllib.parse

RUNS, END, RANGE, STEP = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
PEERS = [a.split("=", 1) for a in sys.argv[5:]]
QUERIES = [
    "rate(x_total[5m])",
    "sum by (instance) (rate(x_total[5m]))",
    "sum by (grp) (rate(x_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "x_total",
]
if os.environ.get("DRIVE_QUERIES"):
    QUERIES = [q for q in os.environ["DRIVE_QUERIES"].splitlines() if q.strip()]


def url(base, kind, q):
    if kind == "instant":
        p = {"query": q, "time": END}
        return f"{base}/api/v1/query?{urllib.parse.urlencode(p)}"
    p = {"query": q, "start": END - RANGE, "end": END, "step": STEP}
    return f"{base}/api/v1/query_range?{urllib.parse.urlencode(p)}"


def curl(u, gzip):
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
    if gzip:
        args += ["-H", "Accept-Encoding: gzip"]
    t, size = subprocess.run(args + [u], check=True, capture_output=True, text=True).stdout.split()
    return float(t) * 1000, int(size)


def series_count(u):
    out = subprocess.run(["curl", "-sS", u], check=True, capture_output=True).stdout
    d = json.loads(out)
    if d.get("status") != "success":
        return f"error: {d.get('error')}", 0
    r = d["data"]["result"]
    return len(r), sum(len(s.get("values", [1])) for s in r)


cases = [(k, q, g) for k in ("instant", "range") for q in QUERIES for g in (False, True)]
for k, q, _ in cases[::2]:
    counts = {name: series_count(url(base, k, q)) for name, base in PEERS}
    # Points may differ by a step at the edges: each peer scrapes at its own offset.
    same = "same series" if len({c[0] for c in counts.values()}) == 1 else "DIFFERENT series"
    shown = ", ".join(f"{n}: {c[0]} series/{c[1]} points" for n, c in counts.items())
    print(f"# {k} {q}: {shown} ({same})", flush=True)
times = {(c, name): [] for c in cases for name, _ in PEERS}
sizes = {}
for _ in range(2):  # warm-up
    for k, q, g in cases:
        for name, base in PEERS:
            curl(url(base, k, q), g)
for r in range(RUNS):
    for k, q, g in cases:
        for name, base in PEERS if r % 2 == 0 else PEERS[::-1]:
            ms, size = curl(url(base, k, q), g)
            times[((k, q, g), name)].append(ms)
            sizes[((k, q, g), name)] = size
names = [n for n, _ in PEERS]
# Names starting with "lookout" are Lookout builds (LOOKOUT_BIN_B: a second one driven in the
# same turns); each build's ratios are to the other programs only.
builds = [n for n in names if n.startswith("lookout")]
others = [n for n in names if not n.startswith("lookout")]
head = ["kind", "gzip", "query"] + [f"{n} ms" for n in names]
for b in builds:
    head += [f"{b}/{n}" for n in others] + ([f"{b}/faster"] if len(others) > 1 else [])
head += [f"{n} KiB" for n in names]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for c in cases:
    k, q, g = c
    med = {n: statistics.median(times[(c, n)]) for n in names}
    row = [k, "gzip" if g else "-", f"`{q}`"] + [f"{med[n]:.1f}" for n in names]
    for b in builds:
        row += [f"{med[b] / med[n]:.2f}" for n in others]
        if len(others) > 1:
            row.append(f"{med[b] / min(med[n] for n in others):.2f}")
    row += [f"{sizes[(c, n)] / 1024:.0f}" for n in names]
    print("| " + " | ".join(row) + " |", flush=True)
print(f"runs={RUNS} end={END} range={RANGE}s step={STEP}; each cell is the median of {RUNS} "
      "curl time_total figures")
for c in cases:
    print(f"# raw {c}: " + "; ".join(f"{n}=" + ",".join(f"{x:.0f}" for x in times[(c, n)]) for n in names))
