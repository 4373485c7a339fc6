#!/usr/bin/env python3
"""Drives and measures bench/sd_churn/run.sh: rewrites two file_sd files (one for the
exporter's target group, one for the scrape config of the evaluator and of Prometheus),
then polls how the exporter's probes and the scrapers' scrapes follow each rewrite.

  churn.py write EXPORTER_FILE EVALUATOR_FILE PROBE_URL SCRAPE_ADDR FIRST COUNT
      Writes both files with targets FIRST .. FIRST+COUNT-1 (used for the initial set).
  churn.py run EXPORTER_FILE EVALUATOR_FILE PROBE_URL SCRAPE_ADDR TARGETS FRACTION
               PERIOD ROUNDS EXPORTER=PID=URL SCRAPER=PID=URL...
      ROUNDS times, every PERIOD seconds: drops the oldest FRACTION of the targets, adds as
      many new ones, and rewrites both files atomically (write, then rename). Until the
      next rewrite it polls every POLL seconds (env, default 1) the exporter's /metrics
      (lookout_target_last_probe_timestamp_seconds per target) and each scraper's query
      API (timestamp(up{job="sd"}) per target): a new target counts from the rewrite to its
      first probe or scrape (the sample's own timestamp, so not limited by the polling), a
      removed one from the rewrite to the first poll that no longer shows it (so within a
      poll); a target not followed by the next rewrite stays pending, at the end for up to
      DRAIN seconds (env, default 90). RSS (VmRSS) and CPU of each are sampled every 5 s, and each scraper's head series and blocks
      loaded (its own /metrics) and anonymous RSS with them. Prints the summary, with the
      evaluator's ratios to a scraper named prometheus when there is one, and each scraper's
      RSS just before each head cut (the last sample before its blocks loaded rose), RSS
      averaged over 10 minutes at half-way and at the end (whole head cycles), and glibc's
      held and free heap over time (where the program publishes them).

Exporter targets: PROBE_URL?n=ID, one group per generation labelled gen. Evaluator
targets: SCRAPE_ADDR (one address for all: the target serves every request the same) with
labels instance="t<ID>" and __param_n=ID, one group per target, so each ID is a target of
its own with its own series.
"""
import json
import os
import re
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ingest"))
import measure as m  # noqa: E402  (bench/ingest/measure.py: /proc helpers)

POLL = float(os.environ.get("POLL", "1"))
DRAIN = float(os.environ.get("DRAIN", "90"))
PROBE_TS = re.compile(r'^lookout_target_last_probe_timestamp_seconds\{[^}]*instance="[^"]*[?&]n=(\d+)"[^}]*\} (\S+)', re.M)


def atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def write_files(exp_file, eval_file, probe_url, scrape_addr, ids, gen_of):
    gens = {}
    for i in ids:
        gens.setdefault(gen_of[i], []).append(i)
    atomic_write(exp_file, [{"targets": [f"{probe_url}?n={i}" for i in members], "labels": {"gen": str(g)}}
                            for g, members in sorted(gens.items())])
    atomic_write(eval_file, [{"targets": [scrape_addr], "labels": {"instance": f"t{i}", "__param_n": str(i),
                                                                   "gen": str(gen_of[i])}} for i in ids])


def exporter_probes(url):
    """{id: last probe timestamp} from the exporter's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    return {int(i): float(ts) for i, ts in PROBE_TS.findall(text)}


def evaluator_scrapes(url):
    """{id: timestamp of the latest up sample} from the evaluator's query API."""
    q = urllib.parse.urlencode({"query": 'timestamp(up{job="sd"})', "time": f"{time.time():.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=30) as r:
        res = json.load(r)["data"]["result"]
    return {int(s["metric"]["instance"][1:]): float(s["value"][1]) for s in res}


class Follower:
    """Latencies of one program following the rewrites. A target not followed by the next
    rewrite stays pending (Prometheus writes a removed target's stale markers only two
    intervals after it goes), until the run's end."""

    def __init__(self, name, fetch):
        self.name, self.fetch = name, fetch
        self.add, self.remove, self.errors = [], [], 0
        self.pending_add, self.pending_remove = {}, {}  # id -> time of its rewrite
        self.lock = threading.Lock()

    def changed(self, changed_at, added, removed):
        with self.lock:
            self.pending_add.update((i, changed_at) for i in added)
            for i in removed:
                self.pending_add.pop(i, None)
                self.pending_remove[i] = changed_at

    def pending(self):
        with self.lock:
            return len(self.pending_add) + len(self.pending_remove)

    def follow(self, done):
        while not done.is_set():
            t_poll = time.time()
            try:
                seen = self.fetch()
            except Exception:  # noqa: BLE001 - counted
                self.errors += 1
                done.wait(POLL)
                continue
            with self.lock:
                for i in [i for i in self.pending_add if i in seen]:
                    self.add.append(seen[i] - self.pending_add.pop(i))
                for i in [i for i in self.pending_remove if i not in seen]:
                    self.remove.append(t_poll - self.pending_remove.pop(i))
            done.wait(max(0.0, POLL - (time.time() - t_poll)))


def summary(values):
    if not values:
        return "-", "-"
    return f"{statistics.median(values):.1f} s", f"{max(values):.1f} s"


def run(args):
    exp_file, eval_file, probe_url, scrape_addr = args[:4]
    targets, fraction, period, rounds = int(args[4]), float(args[5]), float(args[6]), int(args[7])
    progs = [a.split("=", 2) for a in args[8:]]
    (exp_name, _, exp_url), scrapers = progs[0], progs[1:]
    ids = list(range(targets))
    gen_of = {i: 0 for i in ids}
    step = int(targets * fraction)
    samples = []  # (t, name, rss_kib, cpu_s)
    # (name, head series, blocks loaded, file-backed MiB, t, anonymous MiB, glibc held bytes,
    # glibc free bytes), every 5 s; '?' where the program does not publish the gauge.
    tsdb = []
    stop = threading.Event()

    def sampler():
        n = 0
        while not stop.is_set():
            t = time.time()
            for name, pid, _ in progs:
                samples.append((t, name, m.status_kib(pid, "VmRSS"), m.cpu_seconds(pid)))
            for name, pid, url in progs[1:]:
                g = gauges(url, ("prometheus_tsdb_head_series", "prometheus_tsdb_blocks_loaded",
                                 "lookout_allocator_held_bytes", "lookout_allocator_free_bytes"))
                tsdb.append((name, g[0], g[1], m.status_kib(pid, "RssFile") // 1024, t,
                             m.status_kib(pid, "RssAnon") / 1024, g[2], g[3]))
            n += 1
            stop.wait(5)

    threading.Thread(target=sampler, daemon=True).start()
    followers = [Follower(exp_name, lambda: exporter_probes(exp_url))]
    followers += [Follower(name, lambda url=url: evaluator_scrapes(url)) for name, _, url in scrapers]
    done = threading.Event()
    for f in followers:
        threading.Thread(target=f.follow, args=(done,), daemon=True).start()
    start = time.time()
    next_id = targets
    for r in range(1, rounds + 1):
        removed, ids = ids[:step], ids[step:]
        added = list(range(next_id, next_id + step))
        next_id += step
        for i in added:
            gen_of[i] = r
        ids += added
        changed_at = time.time()
        write_files(exp_file, eval_file, probe_url, scrape_addr, ids, gen_of)
        for f in followers:
            f.changed(changed_at, added, removed)
        time.sleep(max(0.0, start + r * period - time.time()))
        print(f"  round {r}: +{step} -{step} targets; "
              + "; ".join(f"{f.name} {len(f.add)} added seen, {len(f.remove)} removed gone, {f.pending()} pending"
                          for f in followers),
              file=sys.stderr, flush=True)
    stop.set()
    end = time.time()
    # Targets still pending get up to DRAIN more seconds (RSS and CPU are not sampled then).
    while any(f.pending() for f in followers) and time.time() < end + DRAIN:
        time.sleep(POLL)
    done.set()
    late = {f.name: sum(v > period for v in f.add + f.remove) for f in followers}
    load = open("/proc/loadavg").read().split()[:3]
    print(f"{rounds} rewrites of {targets} targets ({step} replaced each), every {period:.0f} s; "
          f"load average at the end {' '.join(load)}")
    print("| program | new target: first probe/scrape after rewrite, median | max | never seen"
          " | removed target: gone after rewrite, median | max | never gone | followed after the next rewrite"
          " | poll errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for f in followers:
        a_med, a_max = summary(f.add)
        r_med, r_max = summary(f.remove)
        rows[f.name] = [med(f.add), peak(f.add), med(f.remove), peak(f.remove)]
        print(f"| {f.name} | {a_med} | {a_max} | {len(f.pending_add)} | {r_med} | {r_max} | {len(f.pending_remove)} "
              f"| {late[f.name]} | {f.errors} |")
    ratio_row("evaluator / prometheus", rows, [1, 1, 0, 1, 1, 0, 0, 0])
    print()
    # "Flat" is judged over the second half of the churn: memory that stops growing once the
    # head's series turn over (with a block range of minutes) shows there, not from the start.
    mid = start + (end - start) / 2
    print("| program | RSS, mean of first minute | RSS, mean of the minute at half-way | RSS, mean of last minute"
          " | change over the second half | trend over the second half, per 10 min"
          " | mean of 10 min (a quarter of the churn if shorter) around half-way → at the end | peak RSS (VmHWM)"
          " | CPU % of a core over the churn |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    # One-minute means catch the RSS wherever it is in the head's cycle (it rises as the head
    # fills and falls at each cut, every BLOCK), so the change between two of them can be a
    # phase; means over 10 minutes (a quarter of the churn if shorter) span whole cycles.
    span = min(600.0, (end - start) / 4)
    rows = {}
    for name, pid, _ in progs:
        own = [s for s in samples if s[1] == name]
        window = lambda a, b: statistics.mean([s[2] for s in own if a <= s[0] < b] or [0]) / 1024  # noqa: E731
        f_mean, h_mean, l_mean = window(start, start + 60), window(mid - 30, mid + 30), window(end - 60, end + 1)
        hwm = m.status_kib(pid, "VmHWM") / 1024
        cpu = (own[-1][3] - own[0][3]) / (own[-1][0] - own[0][0]) * 100
        trend = slope([(s[0], s[2] / 1024) for s in own if s[0] >= mid]) * 600
        h_long, l_long = window(mid - span / 2, mid + span / 2), window(end - span, end + 1)
        rows[name] = [f_mean, h_mean, l_mean, hwm, cpu]
        print(f"| {name} | {f_mean:.1f} MiB | {h_mean:.1f} MiB | {l_mean:.1f} MiB "
              f"| {100 * (l_mean - h_mean) / h_mean:+.1f} % | {trend:+.1f} MiB "
              f"| {h_long:.1f} → {l_long:.1f} MiB ({100 * (l_long - h_long) / h_long:+.1f} %) "
              f"| {hwm:.1f} MiB | {cpu:.1f} % |")
    ratio_row("evaluator / prometheus", rows, [1, 1, 1, 0, 0, 0, 1, 1])
    print()
    print("RSS over time (MiB, every 30 s): " + "; ".join(
        f"{name}: " + " ".join(f"{s[2] / 1024:.0f}" for s in [x for x in samples if x[1] == name][::6])
        for name, _, _ in progs))
    # RssFile: the part of RSS that is mapped files (binary, mapped block files), which the
    # kernel may drop and read again; the rest is the heap and stacks.
    print("head series / blocks loaded / file-backed RSS MiB over time (every 30 s): " + "; ".join(
        f"{name}: " + " ".join(f"{h}/{b}/{f}" for h, b, f, *_ in [x[1:] for x in tsdb if x[0] == name][::6])
        for name, _, _ in progs[1:]))
    # glibc's heap (held from the system / free inside it) over time: memory the allocator
    # stops asking the system for is bounded, whatever the RSS sample catches of it.
    for name, _, _ in progs[1:]:
        own = [x for x in tsdb if x[0] == name and "?" not in x[6:8]]
        if not own:
            continue
        held = lambda a, b: max([int(x[6]) for x in own if a <= x[4] < b] or [0]) / 1e6  # noqa: E731
        print(f"{name}: glibc held / free MB over time (every 60 s): "
              + " ".join(f"{mb(x[6])}/{mb(x[7])}" for x in own[::12])
              + f"; most held in the first half {held(start, mid):.1f} MB, in the second half"
              f" {held(mid, end + 1):.1f} MB, in its last quarter {held(end - (end - start) / 4, end + 1):.1f} MB")
    # The head's peak before each cut: the last sample (every 5 s) before blocks loaded rises
    # or, once retention drops a block for each one written, before the head's series fall
    # (they only fall at a cut: a removed target's series stay in the head until then).
    # At equal head series, a rise from cut to cut is memory the process keeps.
    for name, _, _ in progs[1:]:
        own = [x for x in tsdb if x[0] == name and "?" not in x[1:3]]
        cuts = [a for a, b in zip(own, own[1:])
                if float(b[2]) > float(a[2]) or float(b[1]) < float(a[1]) * 0.98]
        print(f"{name}: just before each cut, RSS / anonymous RSS MiB (head series)"
              " [glibc held / free MB]: " + "; ".join(
                  f"{rss_at(samples, name, c[4]):.1f} / {c[5]:.1f} ({c[1]}) [{mb(c[6])} / {mb(c[7])}]"
                  for c in cuts), flush=True)


def slope(points):
    """Least-squares slope of (t, y) points, y per second (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    mt = statistics.mean(t for t, _ in points)
    my = statistics.mean(y for _, y in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def rss_at(samples, name, t):
    """The program's RSS (MiB) in the sample taken at time t."""
    return next((s[2] / 1024 for s in samples if s[1] == name and s[0] == t), 0.0)


def gauges(url, metrics):
    """The values of `metrics` on the program's own /metrics, read once; '?' for each that
    cannot be read."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return ["?"] * len(metrics)
    found = [re.search(rf"^{metric} (\S+)$", text, re.M) for metric in metrics]
    return [f"{float(f.group(1)):.0f}" if f else "?" for f in found]


def mb(value):
    """Bytes as decimal MB with one decimal, '?' kept."""
    return value if value == "?" else f"{int(value) / 1e6:.1f}"


def med(values):
    return statistics.median(values) if values else None


def peak(values):
    return max(values) if values else None


def ratio_row(label, rows, shown):
    """A table row of rows["evaluator"] / rows["prometheus"], column by column where shown
    is 1 (the others left blank); nothing when either program is missing."""
    if "evaluator" not in rows or "prometheus" not in rows:
        return
    cells, values = [], iter(zip(rows["evaluator"], rows["prometheus"]))
    for show in shown:
        a, b = next(values) if show else (None, None)
        cells.append(f"{a / b:.2f}x" if show and a is not None and b else "")
    print(f"| {label} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    if sys.argv[1] == "write":
        a = sys.argv[2:]
        first, count = int(a[4]), int(a[5])
        ids = list(range(first, first + count))
        write_files(a[0], a[1], a[2], a[3], ids, {i: 0 for i in ids})
    else:
        run(sys.argv[2:])
