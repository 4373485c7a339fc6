#!/usr/bin/env python3
"""Bytes on disk per sample of the persisted blocks in each directory (index + chunks/, the
figure Prometheus's "about 1.3 bytes per sample" counts; meta.json and tombstones are listed
apart), per block and in total, from each block's meta.json numSamples; then Lookout's ratio
over the block ranges both directories hold.

Usage: size.py name=DIR...   (the first is Lookout)
"""
import json
import os
import sys

PEERS = [a.split("=", 1) for a in sys.argv[1:]]


def blocks(d):
    out = {}
    for b in sorted(os.listdir(d)):
        meta = os.path.join(d, b, "meta.json")
        if not os.path.isfile(meta):
            continue
        m = json.load(open(meta))
        idx = os.path.getsize(os.path.join(d, b, "index"))
        chunks = sum(e.stat().st_size for e in os.scandir(os.path.join(d, b, "chunks")))
        other = sum(e.stat().st_size for e in os.scandir(os.path.join(d, b)) if e.is_file()) - idx
        # Keyed by the 2 h range the block starts in: promtool's maxTime is the last sample
        # + 1 ms, Lookout's the end of the range.
        out[m["minTime"] // 7_200_000] = (m["minTime"], m["maxTime"], m["stats"]["numSamples"], m["stats"]["numSeries"],
                                             idx, chunks, other)
    return out


got = {n: blocks(d) for n, d in PEERS}
print("| peer | block (h from start) | series | samples | index B | chunks B | (index+chunks)/sample |")
print("|---|---|---|---|---|---|---|")
t0 = min(v[0] for b in got.values() for v in b.values())
for n, bs in got.items():
    for _, (lo, hi, s, ser, idx, ch, _) in sorted(bs.items()):
        print(f"| {n} | {(lo - t0) / 3.6e6:.0f}-{(hi - t0) / 3.6e6:.0f} | {ser} | {s} | {idx} | {ch} "
              f"| {(idx + ch) / s:.3f} |")
common = set.intersection(*(set(b) for b in got.values()))
tot = {}
for n, bs in got.items():
    s = sum(bs[k][2] for k in common)
    b = sum(bs[k][4] + bs[k][5] for k in common)
    tot[n] = b / s if s else float("nan")
    print(f"# {n}: {len(common)} common block(s), {s} samples, {b} bytes: {tot[n]:.3f} B/sample "
          f"(index {sum(bs[k][4] for k in common) / s:.3f}, chunks {sum(bs[k][5] for k in common) / s:.3f})")
names = [n for n, _ in PEERS]
for n in names[1:]:
    print(f"# {names[0]}/{n} bytes per sample: {tot[names[0]] / tot[n]:.2f}")
