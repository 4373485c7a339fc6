#!/usr/bin/env python3
"""Measures rule evaluators side by side over one window and reports; shared by
bench/vmalert/run.sh (Lookout remote mode vs vmalert) and bench/embedded/run.sh (Lookout
embedded mode vs Prometheus). CPU and memory come from bench/ingest/measure.py's helpers.

  compare.py sink PORT
      A notification sink: answers 200 to every POST (Alertmanager's /api/v2/alerts) and
      counts the alerts it got, served back on GET /count.
  compare.py measure WINDOW INTERVAL RESULTS NAME=PID=RULES_URL=DATA_URL ...
      CPU seconds (utime + stime) of PID over WINDOW seconds, its peak RSS (VmHWM, whole
      life) and RSS at the end, the load average; then, after the peaks are read, from
      RULES_URL/api/v1/rules the groups and rules and how many rules are healthy, failing
      (with their first errors) or never evaluated, the firing alerts, and from DATA_URL's
      query API the number of recording-rule output series (names with a colon) and of
      firing ALERTS series stored there. Appends one JSON line per program to RESULTS.
  compare.py report RESULTS BASELINE
      The table, with each program's ratios to BASELINE (CPU seconds, CPU per evaluation
      round = CPU / (WINDOW / INTERVAL), peak RSS).
"""
import http.server
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ingest"))
import measure as m  # noqa: E402  (bench/ingest/measure.py: /proc and query helpers)


def sink(args):
    count = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                n = len(json.loads(body or b"[]"))
            except ValueError:
                n = 0
            with lock:
                count[0] += n
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            b = str(count[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def log_message(self, *a):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(args[0])), Handler).serve_forever()


def get_json(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.load(r)


def rules_health(url):
    """(groups, rules, ok, failing, unknown, firing alerts, first errors) from /api/v1/rules."""
    try:
        groups = get_json(url + "/api/v1/rules")["data"]["groups"]
    except Exception as e:  # noqa: BLE001 - reported
        return {"error": str(e)}
    rules = [r for g in groups for r in g.get("rules", [])]
    errors = [r.get("lastError") for r in rules if r.get("lastError")]
    failing = sum(1 for r in rules if r.get("health") == "err" or r.get("lastError"))
    unknown = sum(1 for r in rules if r.get("health") in ("unknown", "") and not r.get("lastError")
                  and not r.get("lastEvaluation", "").replace("0001-01-01T00:00:00Z", ""))
    firing = sum(len([a for a in r.get("alerts") or [] if a.get("state") == "firing"]) for r in rules)
    return {"groups": len(groups), "rules": len(rules), "failing": failing, "unknown": unknown,
            "ok": len(rules) - failing - unknown, "firing": firing,
            "errors": sorted(set(e[:160] for e in errors))[:4]}


def measure(args):
    window, interval, results = float(args[0]), float(args[1]), args[2]
    progs = [p.split("=", 3) for p in args[3:]]
    load0 = open("/proc/loadavg").read().split()[:3]
    start = {name: m.cpu_seconds(pid) for name, pid, _, _ in progs}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    end = {name: m.cpu_seconds(pid) for name, pid, _, _ in progs}
    load1 = open("/proc/loadavg").read().split()[:3]
    peak = {name: m.status_kib(pid, "VmHWM") for name, pid, _, _ in progs}
    rss = {name: m.status_kib(pid, "VmRSS") for name, pid, _, _ in progs}
    # What the resident memory is made of at the end: heap and other anonymous pages, and
    # pages of mapped files (the binary's code above all).
    anon = {name: m.status_kib(pid, "RssAnon") for name, pid, _, _ in progs}
    mapped = {name: m.status_kib(pid, "RssFile") for name, pid, _, _ in progs}
    rows = []
    for name, pid, rules_url, data_url in progs:
        recorded = m.query(data_url, 'count({__name__=~".+:.+"})')
        alerts = m.query(data_url, 'count(ALERTS{alertstate="firing"})')
        first = lambda v: v[0] if isinstance(v, list) and v else (0 if v == [] else v)  # noqa: E731
        row = {
            "program": name, "window_s": round(elapsed, 1), "interval_s": interval,
            "cpu_s": round(end[name] - start[name], 2), "peak_rss_kib": peak[name],
            "rss_kib": rss[name], "rss_anon_kib": anon[name], "rss_file_kib": mapped[name],
            "recorded_series": first(recorded), "alerts_series": first(alerts),
            "rules": rules_health(rules_url),
            "load_start": " ".join(load0), "load_end": " ".join(load1),
        }
        rows.append(row)
    with open(results, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"== {elapsed:.0f} s window, load {' '.join(load0)} -> {' '.join(load1)}")
    for r in rows:
        print(f"  {r['program']:10} cpu {r['cpu_s']:8.2f} s  peak RSS {r['peak_rss_kib'] / 1024:8.1f} MiB"
              f" (at end: anonymous {r['rss_anon_kib'] / 1024:.1f} MiB, mapped files {r['rss_file_kib'] / 1024:.1f} MiB)"
              f"  recorded series {r['recorded_series']}  ALERTS firing {r['alerts_series']}"
              f"  rules {json.dumps(r['rules'])}")


def report(args):
    rows = [json.loads(line) for line in open(args[0])]
    base_name = args[1]
    runs = []
    for r in rows:  # a run is the rows measured together: a new one starts at a repeated program
        if not runs or r["program"] in runs[-1]:
            runs.append({})
        runs[-1][r["program"]] = r
    print("| run | program | CPU s / window | CPU % of a core | CPU s / round | peak RSS | RSS at end"
          " | rules ok / failing / never | firing alerts | recorded series | ALERTS firing"
          f" | CPU vs {base_name} | peak RSS vs {base_name} |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for i, run in enumerate(runs, 1):
        base = run.get(base_name)
        for name, r in run.items():
            rounds = r["window_s"] / r["interval_s"]
            h = r["rules"]
            health = (f"{h['ok']} / {h['failing']} / {h['unknown']}" if "ok" in h else h.get("error", "?"))
            cpu_ratio = f"{r['cpu_s'] / base['cpu_s']:.2f}x" if base and base["cpu_s"] else "-"
            rss_ratio = f"{r['peak_rss_kib'] / base['peak_rss_kib']:.2f}x" if base else "-"
            print(f"| {i} | {name} | {r['cpu_s']:.2f} | {100 * r['cpu_s'] / r['window_s']:.1f} % "
                  f"| {r['cpu_s'] / rounds:.3f} | {r['peak_rss_kib'] / 1024:.1f} MiB | {r['rss_kib'] / 1024:.1f} MiB "
                  f"| {health} | {h.get('firing', '?')} | {r['recorded_series']} | {r['alerts_series']} "
                  f"| {cpu_ratio} | {rss_ratio} |")
    for i, run in enumerate(runs, 1):
        r = next(iter(run.values()))
        print(f"run {i}: {r['window_s']:.0f} s window, evaluation every {r['interval_s']:.0f} s, "
              f"load average {r['load_start']} -> {r['load_end']}")
        for name, r in run.items():
            for e in r["rules"].get("errors", []):
                print(f"  {name} rule error: {e}")


if __name__ == "__main__":
    {"sink": sink, "measure": measure, "report": report}[sys.argv[1]](sys.argv[2:])
