#!/usr/bin/env python3
"""WAL replay timing for bench/tsdb/run.sh: RUNS rounds, turn about, each peer restarted on a
fresh copy of the data directory it left when killed with SIGKILL; measures the time from
launch to `/-/ready` answering 200, the replay duration the peer logs ("WAL replay completed":
Prometheus's total_replay_duration, Lookout's duration) and the peak RSS (VmHWM, read once
ready). On each peer's first run it also counts what the replay restored (series, and the
samples of x_total), so a replay that loses data shows. Prints one line per run and a table
of medians with Lookout's ratios.

Usage: replay.py RUNS WORK LOOKOUT_BIN PORT_BASE
  WORK holds lookout-data/ and prom-data/ (the killed peers' directories) and empty.yml.
"""
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

RUNS, WORK, LOOKOUT, PORT = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])


def cmd(name, data, log):
    if name == "lookout":
        return [LOOKOUT, "--log.level", "info", "evaluator", "--config.file", f"{WORK}/empty.yml",
                "--web.listen-address", f"127.0.0.1:{PORT}", "--rules.state-file",
                f"{WORK}/alerts-state.json", "--storage.tsdb.path", data]
    return ["prometheus", "--config.file", f"{WORK}/empty.yml", "--storage.tsdb.path", data,
            "--web.listen-address", f"127.0.0.1:{PORT}"]


def ready():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/-/ready", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def value(q):
    u = f"http://127.0.0.1:{PORT}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(u, timeout=120) as r:
        res = json.load(r)["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def secs(v, unit):
    return float(v) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "m": 60}[unit]


def logged(name, text):
    line = next((l for l in text.splitlines() if "WAL replay completed" in l), "")
    key = "total_replay_duration" if name == "prometheus" else "duration"
    m = re.search(rf"\b{key}=([0-9.]+)(µs|us|ms|ns|s|m)\b", line)
    if name == "prometheus" and not m:  # Go durations like 1m2.5s
        m2 = re.search(r"total_replay_duration=(\d+)m([0-9.]+)s", line)
        return int(m2.group(1)) * 60 + float(m2.group(2)) if m2 else None
    return secs(*m.groups()) if m else None


def one(name, check):
    src = f"{WORK}/{name}-data"
    data = f"{WORK}/run-{name}"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(src, data, symlinks=True)
    subprocess.run(["sync"])
    log = f"{WORK}/run-{name}.log"
    with open(log, "w") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd(name, data, log), stdout=f, stderr=subprocess.STDOUT)
    try:
        while not ready():
            if p.poll() is not None:
                sys.exit(f"{name} exited ({p.returncode}); see its log:\n" + open(log).read()[-3000:])
            time.sleep(0.02)
        took = time.monotonic() - t0
        hwm = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmHWM"))
        if check:
            series = value('count({__name__=~"x_total|h_bucket|h_sum|h_count|g"})')
            samples = value("sum(count_over_time(x_total[1h]))")
            print(f"# {name} restored {series} series, {samples} x_total samples", flush=True)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    rep = logged(name, open(log).read())
    shutil.rmtree(data, ignore_errors=True)
    return took, rep, hwm / 1024


peers = ["lookout", "prometheus"]
res = {n: [] for n in peers}
for r in range(RUNS):
    for n in peers if r % 2 == 0 else peers[::-1]:
        took, rep, mib = one(n, r == 0)
        res[n].append((took, rep, mib))
        rs = f"{rep:.2f}s" if rep is not None else "?"
        print(f"# run {r + 1} {n}: ready after {took:.2f}s, logged replay {rs}, VmHWM {mib:.0f} MiB",
              flush=True)


def med(n, i):
    xs = [x[i] for x in res[n] if x[i] is not None]
    return statistics.median(xs) if xs else float("nan")


print("| figure | lookout | prometheus | lookout/prometheus |")
print("|---|---|---|---|")
for i, what, fmt in [(0, "start to /-/ready (s)", "{:.2f}"), (1, "logged WAL replay (s)", "{:.2f}"),
                     (2, "peak RSS, VmHWM (MiB)", "{:.0f}")]:
    a, b = med("lookout", i), med("prometheus", i)
    print(f"| {what} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |")
print(f"medians of {RUNS} runs each, turn about")
