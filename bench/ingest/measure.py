#!/usr/bin/env python3
"""Measures the scrapers of bench/ingest/run.sh over one window, side by side, and reports.

  measure.py measure WINDOW INTERVAL SERIES TARGETS RESULTS NAME=PID=URL=DATADIR ...
      CPU seconds over WINDOW seconds (utime + stime deltas from /proc/PID/stat), peak RSS
      (VmHWM from /proc/PID/status: the whole life of the process, warm-up included), bytes
      under DATADIR ("-": none) at the end, the load average, then from each program's HTTP
      API the number of the targets' series it holds and, per target over the window, the
      fewest scrapes stored (count_over_time(up)), the longest scrape_duration_seconds and
      whether any scrape failed (peaks and bytes are taken before these queries, which touch
      every series). Appends one JSON line per program to RESULTS.
  measure.py report RESULTS
      The table of all sizes, with Lookout's ratios to Prometheus (CPU) and to the smaller
      peak RSS of Prometheus and VictoriaMetrics.
"""
import json
import os
import sys
import time
import urllib.parse
import urllib.request

SERIES_RE = "x_total|h_bucket|h_sum|h_count|g"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def disk_bytes(path):
    if path == "-":
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def query(url, q):
    u = url + "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{time.time():.3f}"})
    try:
        with urllib.request.urlopen(u, timeout=60) as r:
            res = json.load(r)["data"]["result"]
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return f"error: {e}"
    return [float(s["value"][1]) for s in res]


def measure(args):
    window, interval, series, targets, results = (float(args[0]), float(args[1]), int(args[2]),
                                                  int(args[3]), args[4])
    progs = [p.split("=", 3) for p in args[5:]]
    load0 = open("/proc/loadavg").read().split()[:3]
    start = {name: cpu_seconds(pid) for name, pid, _, _ in progs}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    end = {name: cpu_seconds(pid) for name, pid, _, _ in progs}
    load1 = open("/proc/loadavg").read().split()[:3]
    # Peak RSS and disk before any query: the verification queries below touch every series
    # and must not count in the peaks.
    peak = {name: status_kib(pid, "VmHWM") for name, pid, _, _ in progs}
    rss = {name: status_kib(pid, "VmRSS") for name, pid, _, _ in progs}
    disk = {name: disk_bytes(data) for name, _, _, data in progs}
    w = int(window)
    rows = []
    for name, pid, url, data in progs:
        count = query(url, f'count({{__name__=~"{SERIES_RE}"}})')
        scrapes = query(url, f'min(count_over_time(up{{job="ingest"}}[{w}s]))')
        longest = query(url, f'max(max_over_time(scrape_duration_seconds{{job="ingest"}}[{w}s]))')
        down = query(url, f'min(min_over_time(up{{job="ingest"}}[{w}s]))')
        first = lambda v: v[0] if isinstance(v, list) and v else None  # noqa: E731
        row = {
            "series": series, "targets": targets, "program": name,
            "window_s": round(elapsed, 1),
            "cpu_s": round(end[name] - start[name], 2),
            "peak_rss_kib": peak[name], "rss_kib": rss[name], "disk_bytes": disk[name],
            "series_stored": first(count), "min_scrapes": first(scrapes),
            "longest_scrape_s": first(longest), "min_up": first(down),
            "load_start": " ".join(load0), "load_end": " ".join(load1),
            "errors": [v for v in (count, scrapes, longest, down) if isinstance(v, str)],
        }
        # A stored scrape every INTERVAL: one fewer at the window's edges is phase, not a miss.
        expected = int(window // interval)
        row["missed"] = (row["min_scrapes"] is None or row["min_scrapes"] < expected - 1
                         or (row["longest_scrape_s"] or 0) > interval or row["min_up"] != 1)
        rows.append(row)
    with open(results, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"== {series} series over {targets} target(s), {elapsed:.0f} s window, "
          f"load {' '.join(load0)} -> {' '.join(load1)}")
    for r in rows:
        ok = "all" if r["series_stored"] == series else f"MISSING ({r['series_stored']} of {series})"
        print(f"  {r['program']:16} cpu {r['cpu_s']:8.2f} s  peak RSS {r['peak_rss_kib'] / 1024:8.1f} MiB"
              f"  disk {r['disk_bytes'] / 2**20:8.1f} MiB  series {r['series_stored']} ({ok})"
              f"  min scrapes/target {r['min_scrapes']}  longest scrape {r['longest_scrape_s']}"
              + ("  MISSED SCRAPES" if r["missed"] else "") + (f"  {r['errors']}" if r["errors"] else ""))


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def stored(r):
    n = r["series_stored"]
    if n is None:
        return "not counted"
    return f"{n:,.0f}" + ("" if n == r["series"] else " (MISSING)")


def report(args):
    rows = [json.loads(line) for line in open(args[0])]
    sizes = sorted({r["series"] for r in rows})
    print("| series | program | CPU s / window | CPU % of a core | peak RSS | disk | series stored"
          " | scrapes | CPU vs Prometheus | peak RSS vs smaller peer |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for size in sizes:
        by = {r["program"]: r for r in rows if r["series"] == size}
        prom = by.get("prometheus")
        peers = [by[p]["peak_rss_kib"] for p in ("prometheus", "victoriametrics") if p in by]
        for name, r in by.items():
            cpu_ratio = f"{r['cpu_s'] / prom['cpu_s']:.2f}x" if prom and prom["cpu_s"] else "-"
            rss_ratio = f"{r['peak_rss_kib'] / min(peers):.2f}x" if peers else "-"
            print(f"| {size:,} | {name} | {r['cpu_s']:.2f} | {100 * r['cpu_s'] / r['window_s']:.2f} % "
                  f"| {mib(r['peak_rss_kib'])} | {r['disk_bytes'] / 2**20:.1f} MiB "
                  f"| {stored(r)} | {'MISSED' if r['missed'] else 'ok'} "
                  f"| {cpu_ratio} | {rss_ratio} |")
    loads = {(r["series"], r["load_start"], r["load_end"]) for r in rows}
    for size, a, b in sorted(loads):
        print(f"load average during {size:,}: {a} -> {b}")


if __name__ == "__main__":
    {"measure": measure, "report": report}[sys.argv[1]](sys.argv[2:])
