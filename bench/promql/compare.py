#!/usr/bin/env python3
"""Prints the benchmark's figures as Markdown tables: query times side by side, memory.

Usage: compare.py BENCH_JSONL PROM_URL EMPTY_PROM_RSS_BYTES BLOCK_DIR

BENCH_JSONL is the output of `cargo bench -p lookout-promql --bench promql -- run REPS
HOST:PORT`, which timed each query on Lookout and on Prometheus turn about: per query
(instant at the end of the data, range over its last hour at 1 m) the median of Lookout's
in-process time, of Prometheus's own engine time (`stats=all` → `timings.execTotalTime`,
without HTTP and JSON encoding, so comparable with Lookout's in-process figure) and of
Prometheus's HTTP round trip. Results are checked against each other: same number of
series, same sum of values (relative 1e-6). Memory figures are read from the running
Prometheus at PROM_URL after the queries.
"""
import json
import os
import sys
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=300) as r:
        return r.read()


def metrics(base):
    out = {}
    for line in get(base + "/metrics").decode().splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def main():
    lookout_file, base, empty_rss, block_dir = sys.argv[1:5]
    rows = [json.loads(l) for l in open(lookout_file) if l.startswith("{")]
    load = next(r for r in rows if r["kind"] == "load")
    queries = [r for r in rows if r["kind"] in ("instant", "range")]

    print("| query | kind | Lookout median | Prometheus median (engine) | ratio | Prometheus HTTP round trip | result check |")
    print("|---|---|---:|---:|---:|---:|---|")
    ok_all = True
    for r in queries:
        pe, pw, n, total = r["prom_exec_ms"], r["prom_wall_ms"], r["prom_series"], r["prom_sum"]
        same = n == r["series"] and abs(total - r["sum"]) <= 1e-6 * max(1.0, abs(total))
        ok_all &= same
        check = "same" if same else f"DIFFERS: {r['series']} series sum {r['sum']:.6g} vs {n} series sum {total:.6g}"
        ratio = pe / r["median_ms"] if r["median_ms"] > 0 else float("inf")
        print(f"| `{r['query']}` | {r['kind']} | {r['median_ms']:.2f} ms | {pe:.2f} ms | {ratio:.2f}x | {pw:.1f} ms | {check} |")

    selects = [r for r in rows if r["kind"] == "select"]
    if selects:
        print()
        print("Lookout storage alone (`select` of every series of the metric, samples copied out):")
        print()
        print("| selector | window | median | samples |")
        print("|---|---:|---:|---:|")
        for r in selects:
            print(f"| `{r['selector']}` | {r['window_s']} s | {r['median_ms']:.2f} ms | {r['samples']} |")

    m = metrics(base)
    rss = m.get("process_resident_memory_bytes", 0)
    heap = m.get("go_memstats_heap_inuse_bytes", 0)
    blocks = du(block_dir)
    lookout_heap = load["chunk_bytes"] + load["index_bytes"]
    print()
    print(f"Data: {load['series']} series, {load['samples']} samples; Lookout load {load['load_seconds']:.1f} s "
          f"({load['samples'] / load['load_seconds'] / 1e6:.2f} M samples/s).")
    print()
    print("| memory | bytes | per sample | per series |")
    print("|---|---:|---:|---:|")
    s, n = load["samples"], load["series"]
    def row(name, b):
        print(f"| {name} | {mib(b)} | {b / s:.2f} B | {b / n:.0f} B |")
    row("Lookout storage, heap estimate (chunks + index)", lookout_heap)
    row("Lookout chunks alone", load["chunk_bytes"])
    row("Lookout process RSS growth while loading", load["rss_delta_bytes"])
    row("Prometheus RSS after the queries minus an empty Prometheus's RSS", max(0.0, rss - float(empty_rss)))
    row("Prometheus Go heap in use after the queries", heap)
    row("Prometheus TSDB blocks on disk (mmapped when read)", blocks)
    print()
    print(f"Prometheus RSS {mib(rss)}, empty Prometheus RSS {mib(float(empty_rss))}, "
          f"compactions run: {m.get('prometheus_tsdb_compactions_total', 0):.0f}.")
    if not ok_all:
        print("\nWARNING: some results differ between Lookout and Prometheus (see the table).")


if __name__ == "__main__":
    main()
