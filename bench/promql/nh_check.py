#!/usr/bin/env python3
"""Checks that two Prometheus-API servers answer the same queries alike: the same series
and, per series, the same values (relative difference at most 1e-9, NaN equal to NaN),
for an instant query at END and a range query over [END-RANGE, END] at STEP.
`histogram_quantile` and `histogram_fraction` over native histograms interpolate
exponentially inside a bucket in Lookout (as Prometheus 3) and linearly in Prometheus 2.42
(README, Differences): there the two need only agree within 2^(1/8) - 1 (about 9 %, the
width of a bucket of the bench's schema 3).

Usage: nh_check.py END RANGE STEP URL_A URL_B   env DRIVE_QUERIES: the queries, one a line.
Exits 1 naming the first difference."""
import json
import math
import os
import sys
import urllib.parse
import urllib.request

END, RANGE, STEP, A, B = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
QUERIES = [q for q in os.environ["DRIVE_QUERIES"].splitlines() if q.strip()]


def fetch(base, kind, q):
    if kind == "instant":
        p = {"query": q, "time": END}
        path = "query"
    else:
        p = {"query": q, "start": int(END) - RANGE, "end": END, "step": STEP}
        path = "query_range"
    with urllib.request.urlopen(f"{base}/api/v1/{path}?{urllib.parse.urlencode(p)}") as r:
        d = json.load(r)
    if d.get("status") != "success":
        sys.exit(f"{base}: {q}: {d.get('error')}")
    out = {}
    for s in d["data"]["result"]:
        key = tuple(sorted(s["metric"].items()))
        pts = s.get("values") or [s["value"]]
        out[key] = [(float(t), float(v)) for t, v in pts]
    return out


def same(x, y, tolerance):
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or abs(x - y) <= tolerance * max(abs(x), abs(y))


for kind in ("instant", "range"):
    for q in QUERIES:
        a, b = fetch(A, kind, q), fetch(B, kind, q)
        interpolated = q.startswith(("histogram_quantile", "histogram_fraction"))
        tolerance = 2 ** (1 / 8) - 1 if interpolated else 1e-9
        worst = 0.0
        if a.keys() != b.keys():
            sys.exit(f"{kind} {q}: different series: {len(a)} vs {len(b)}")
        points = 0
        for k in a:
            if len(a[k]) != len(b[k]) or not all(
                ta == tb and same(va, vb, tolerance) for (ta, va), (tb, vb) in zip(a[k], b[k])
            ):
                sys.exit(f"{kind} {q}: {dict(k)} differs: {a[k][:3]} vs {b[k][:3]}")
            points += len(a[k])
            for (_, va), (_, vb) in zip(a[k], b[k]):
                if va != vb and not math.isnan(va):
                    worst = max(worst, abs(va - vb) / max(abs(va), abs(vb)))
        print(
            f"same answer: {kind} {q}: {len(a)} series, {points} points,"
            f" largest relative difference {worst:.2g}",
            file=sys.stderr,
        )
