#!/usr/bin/env python3
"""Loopback scrape target for bench/tsdb/run.sh: SERIES series (1M is fine) rendered once at
start and served as cached bytes (no gzip), so a 60+ MB body goes out in well under a second
and both scrapers see exactly the same series. The mix follows bench/api/target.py: counters
x_total{id,grp}, histograms h (10 buckets + _sum + _count: 12 series each), gauges g.
Values are fixed: this target is for WAL replay and ingestion size, not for rate().

Usage: target.py PORT SERIES
"""
import http.server
import sys
import time

PORT = int(sys.argv[1])
SERIES = int(sys.argv[2])
LES = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
COUNTERS = SERIES * 46 // 100
HISTOGRAMS = SERIES * 4 // 100 // 12
GAUGES = SERIES - COUNTERS - HISTOGRAMS * 12

t0 = time.time()
out = ["# TYPE x_total counter"]
out += [f'x_total{{id="c{i}",grp="g{i % 50}"}} {i % 9973 * 3}' for i in range(COUNTERS)]
out.append("# TYPE h histogram")
for i in range(HISTOGRAMS):
    n = 1000 + i % 997
    out += [f'h_bucket{{id="h{i}",le="{le}"}} {n * (j + 1) // len(LES)}' for j, le in enumerate(LES)]
    out.append(f'h_sum{{id="h{i}"}} {n * 0.37:.3f}')
    out.append(f'h_count{{id="h{i}"}} {n}')
out.append("# TYPE g gauge")
out += [f'g{{id="g{i}"}} {(i * 37) % 1000 / 7}' for i in range(GAUGES)]
BODY = ("\n".join(out) + "\n").encode()
del out
print(f"target: {SERIES} series, {len(BODY) / 1e6:.1f} MB body, rendered in "
      f"{time.time() - t0:.1f}s", file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
