#!/usr/bin/env python3
"""Loopback scrape target for bench/api/run.sh and bench/ingest/run.sh: SERIES series
(default 10,900) whose values move between scrapes, so rate() and histogram_quantile() have
work to do.

  COUNTERS (5,000) x_total{id="c<i>",grp="g<i%50>"} counters,
  HISTOGRAMS (450) h{id="h<i>"} histograms of 10 buckets (+Inf included): 12 series each,
  the rest g{id="g<i>"} gauges.

PORT may be a range, FIRST-LAST: one process then serves the same body on every port of
it, so each port is a target of its own to a scraper (the `instance` label tells their
series apart) and N ports give N x SERIES series. The body is rendered at most once a
second and shared by all requests in that second, so many targets and scrapers cost one
rendering.

Usage: target.py PORT|FIRST-LAST [SERIES] [COUNTERS] [HISTOGRAMS]
As a module: serve(FIRST, LAST, render) serves another body the same way.
"""
import http.server
import sys
import threading
import time

ARGS = sys.argv[1:] if __name__ == "__main__" else ["0"]
PORTS = ARGS[0].split("-")
FIRST = int(PORTS[0])
LAST = int(PORTS[-1])
SERIES = int(ARGS[1]) if len(ARGS) > 1 else 10_900
COUNTERS = int(ARGS[2]) if len(ARGS) > 2 else 5_000
HISTOGRAMS = int(ARGS[3]) if len(ARGS) > 3 else 450
LES = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
GAUGES = max(0, SERIES - COUNTERS - HISTOGRAMS * (len(LES) + 2))
T0 = time.time()


def body():
    t = time.time() - T0
    out = ["# TYPE x_total counter"]
    for i in range(COUNTERS):
        out.append(f'x_total{{id="c{i}",grp="g{i % 50}"}} {int(t * (1 + i % 7))}')
    out.append("# TYPE h histogram")
    for i in range(HISTOGRAMS):
        n = int(t * (2 + i % 5))
        for j, le in enumerate(LES):
            out.append(f'h_bucket{{id="h{i}",le="{le}"}} {n * (j + 1) // len(LES)}')
        out.append(f'h_sum{{id="h{i}"}} {n * 0.37:.3f}')
        out.append(f'h_count{{id="h{i}"}} {n}')
    out.append("# TYPE g gauge")
    for i in range(GAUGES):
        out.append(f'g{{id="g{i}"}} {(i * 37 + int(t)) % 1000 / 7}')
    return ("\n".join(out) + "\n").encode()


def serve(first, last, render):
    """Serves render() (bytes, rendered at most once a second and shared) on every port from
    FIRST to LAST on loopback, until killed. Other benches import this with their own body."""
    lock = threading.Lock()
    cached = [None, b""]

    def cached_body():
        second = int(time.time())
        with lock:
            if cached[0] != second:
                cached[0], cached[1] = second, render()
            return cached[1]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            b = cached_body()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), Handler) for p in range(first, last + 1)]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    serve(FIRST, LAST, body)
