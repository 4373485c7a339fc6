#!/usr/bin/env python3
"""blackbox_exporter and `lookout exporter` side by side on the same loopback targets.

Starts Debian's blackbox_exporter (the oracle) and `lookout exporter` with one configuration
(the modules of `tests/differential/blackbox-modules.yml`), serves loopback targets (HTTP with
redirects, compression, status codes and headers; HTTPS with a self-signed certificate; a TCP
banner server; a gRPC health server, `examples/grpc_health_server.rs`, over h2c and TLS;
an OAuth 2.0 token endpoint; forward/CONNECT proxies, one asking for basic authentication),
probes every case of `tests/differential/blackbox-cases.tsv` on both, and
compares the answers metric by metric: families, types, label sets and values. Timings
(`*duration*` metrics) are compared by presence and label set only, and must be >= 0.

A difference fails the run unless `tests/differential/blackbox.expected` lists it (case, or a
pattern such as `grpc_*`; metric; and why: a deliberate difference of the README's
Differences table).

    scripts/differential/blackbox.py --lookout target/release/lookout [--only REGEX] [-v]
        [--grpc-server target/debug/examples/grpc_health_server]

Without --grpc-server the gRPC server is built with `cargo build --example
grpc_health_server -p lookout-exporter` (then target/debug/examples/grpc_health_server).
"""
import argparse
import base64
import fnmatch
import gzip
import http.client
import json
import http.server
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "differential")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- loopback targets

BODY = b"hello world, this is the loopback target\n"


class Target(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        path = urllib.parse.urlparse(self.path).path
        if path == "/echo":
            return self.send(200, data, [("Content-Type", "text/plain")])
        if path.startswith("/token"):
            return self.token(path, data)
        self.do_GET()

    def token(self, path, data):
        """An OAuth 2.0 token endpoint (client credentials): /token takes the credentials
        either way, /token-params only as form parameters (401 to basic authentication),
        /token-fail always fails. The token names the client, so the probed page can check it."""
        form = urllib.parse.parse_qs(data.decode())
        client = (form.get("client_id") or [""])[0]
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            if path == "/token-params":
                return self.send(401, b'{"error":"invalid_client"}', [("Content-Type", "application/json")])
            client = urllib.parse.unquote_plus(base64.b64decode(auth[6:]).decode().split(":")[0])
        if path == "/token-fail" or form.get("grant_type") != ["client_credentials"] or not client:
            return self.send(400, b'{"error":"invalid_request"}', [("Content-Type", "application/json")])
        scope = (form.get("scope") or [""])[0].replace(" ", "_")
        body = json.dumps({"access_token": f"tok-{client}-{scope}", "token_type": "bearer",
                           "expires_in": 3600}).encode()
        return self.send(200, body, [("Content-Type", "application/json")])

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        path = url.path
        if path == "/ok":
            return self.send(200, BODY, [("Content-Type", "text/plain"),
                                         ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                                         ("X-Test", "present")])
        if path.startswith("/status/"):
            return self.send(int(path.rsplit("/", 1)[1]), BODY)
        if path == "/redirect":
            code = int(q.get("code", ["302"])[0])
            to = q.get("to", ["/ok"])[0]
            return self.send(code, b"", [("Location", to)])
        if path == "/loop":
            return self.send(302, b"", [("Location", "/loop")])
        if path == "/gzip":
            body = gzip.compress(BODY * 10)
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                return self.send(200, body, [("Content-Encoding", "gzip")])
            return self.send(200, BODY * 10)
        if path == "/size":
            n = int(q.get("n", ["100"])[0])
            return self.send(200, b"x" * n)
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return None
        if path == "/headers":
            # Echoes the request headers as the body, one per line (not User-Agent: each
            # program names itself).
            lines = "".join(f"{k}: {v}\n" for k, v in self.headers.items()
                            if k.lower() != "user-agent")
            return self.send(200, lines.encode())
        if path == "/multi":
            return self.send(200, BODY, [("X-Multi", "one"), ("X-Multi", "two")])
        if path == "/json":
            return self.send(200, b'{"status":"ok","items":[1,2,3]}',
                             [("Content-Type", "application/json")])
        return self.send(404, b"not found\n")


class ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_http(tls_context=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    if tls_context:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


class Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy: absolute-form requests are relayed (adding `X-Proxied: yes` to the
    answer), CONNECT opens a tunnel. Hosts under `.test` are the loopback targets. With
    `need_auth`, requests without `Proxy-Authorization: Basic user:pass` get 407."""
    protocol_version = "HTTP/1.1"
    need_auth = False

    def log_message(self, *args):
        pass

    def refuse(self):
        if not self.need_auth:
            return False
        if self.headers.get("Proxy-Authorization") == "Basic " + base64.b64encode(b"user:pass").decode():
            return False
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    @staticmethod
    def address(host, port):
        return ("127.0.0.1" if host.endswith(".test") else host.strip("[]"), int(port))

    def do_CONNECT(self):
        if self.refuse():
            return
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection(self.address(host, port), timeout=5)
        except OSError:
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        pipe(self.connection, upstream)

    def relay(self):
        if self.refuse():
            return
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-authorization", "connection")}
        conn = http.client.HTTPConnection(*self.address(url.hostname, url.port or 80), timeout=5)
        conn.request(self.command, url.path + ("?" + url.query if url.query else ""), data, headers)
        answer = conn.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        for k, v in answer.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("X-Proxied", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        conn.close()

    do_GET = do_POST = do_HEAD = relay


def pipe(a, b):
    def one_way(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    t = threading.Thread(target=one_way, args=(b, a), daemon=True)
    t.start()
    one_way(a, b)
    t.join(10)
    b.close()


def serve_proxy(need_auth=False):
    handler = type("AuthProxy" if need_auth else "OpenProxy", (Proxy,), {"need_auth": need_auth})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def serve_banner(banner, expect_reply=None):
    """A TCP server that writes `banner`, then answers a line with `expect_reply`."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def handle(conn):
        with conn:
            try:
                conn.sendall(banner)
                if expect_reply is not None:
                    conn.settimeout(2)
                    data = conn.recv(4096)
                    if data:
                        conn.sendall(expect_reply)
                time.sleep(0.05)
            except OSError:
                pass

    def loop():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


def serve_dns(folder):
    """dnsmasq on a loopback port, answering for example.test from fixed records only."""
    port = free_port()
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    args = [dnsmasq, "--no-daemon", "--no-resolv", "--no-hosts", "--no-poll",
            "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
            f"--pid-file={os.path.join(folder, 'dnsmasq.pid')}", "--local=/example.test/",
            "--user=" + ("root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")),
            "--host-record=a.example.test,192.0.2.1,2001:db8::1",
            "--host-record=b.example.test,192.0.2.2",
            "--txt-record=txt.example.test,\"v=spf1 -all\"",
            "--txt-record=multi.example.test,\"hello\",\"world\"",
            "--txt-record=spf.example.test,v=spf1 -all",
            "--mx-host=example.test,mail.example.test,10",
            "--srv-host=_http._tcp.example.test,a.example.test,80,0,5",
            "--cname=alias.example.test,a.example.test"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    sys.exit("dnsmasq did not start")


def make_cert(folder):
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "30", "-subj", "/O=example/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def serve_grpc(program, cert, key):
    """The gRPC health server: its process and its ports (grpc, grpc6, grpcbare, grpctls)."""
    if program is None:
        subprocess.run(["cargo", "build", "--quiet", "--example", "grpc_health_server",
                        "-p", "lookout-exporter"], cwd=ROOT, check=True)
        program = os.path.join(ROOT, "target", "debug", "examples", "grpc_health_server")
    # It serves until its standard input closes, so it never outlives this script.
    proc = subprocess.Popen([program, "--tls-cert", cert, "--tls-key", key],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    fields = dict(f.split("=", 1) for f in line.split())
    if set(fields) != {"plain", "plain6", "bare", "tls"}:
        proc.kill()
        sys.exit(f"grpc_health_server did not print its ports: {line!r}")
    return proc, {"grpc": fields["plain"], "grpc6": fields["plain6"],
                  "grpcbare": fields["bare"], "grpctls": fields["tls"]}


# ---------------------------------------------------------------- exposition parsing

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value}, {family: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            samples[("__unparsable__", frozenset())] = line
            continue
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = m.group(3)
    return samples, types


def is_timing(name):
    return "duration" in name or name == "probe_dns_lookup_time_seconds"


def same_value(a, b):
    try:
        fa, fb = float(a), float(b)
    except ValueError:
        return a == b
    if fa != fa and fb != fb:
        return True
    return fa == fb


def compare(bb_text, lo_text):
    bb, bb_types = parse(bb_text)
    lo, lo_types = parse(lo_text)
    diffs = []
    for fam in sorted(set(bb_types) | set(lo_types)):
        if bb_types.get(fam) != lo_types.get(fam):
            diffs.append((fam, f"type: blackbox {bb_types.get(fam)}, lookout {lo_types.get(fam)}"))
    for key in sorted(set(bb) | set(lo), key=lambda k: (k[0], sorted(k[1]))):
        name, labels = key
        shown = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}" if labels else "")
        if key not in lo:
            diffs.append((name, f"missing in lookout: {shown} {bb[key]}"))
        elif key not in bb:
            diffs.append((name, f"only in lookout: {shown} {lo[key]}"))
        elif is_timing(name):
            for side, v in (("blackbox", bb[key]), ("lookout", lo[key])):
                if float(v) < 0:
                    diffs.append((name, f"negative timing from {side}: {shown} {v}"))
        elif not same_value(bb[key], lo[key]):
            diffs.append((name, f"value: {shown} blackbox {bb[key]}, lookout {lo[key]}"))
    return diffs


# ---------------------------------------------------------------- running

def wait_ready(url, proc, name):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{name} exited: {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"{name} did not get ready at {url}")


def probe(port, module, target, extra="", options=""):
    """`options`: space-separated `POST` (the method) and `Header-Name=value` request headers."""
    q = urllib.parse.urlencode({"module": module, "target": target})
    url = f"http://127.0.0.1:{port}/probe?{q}{extra}"
    method, headers = "GET", {}
    for option in options.split():
        if option == "POST":
            method = "POST"
        else:
            name, _, value = option.partition("=")
            headers[name] = value
    request = urllib.request.Request(url, method=method, headers=headers,
                                     data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def substitute(text, ports):
    for k, v in ports.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def listed(expected, name, metric):
    """The row of `expected` that allows `metric` to differ in case `name`, if any: the case
    field may be a shell-style pattern (`grpc_*`), `*` for every case."""
    for key in ((name, metric), (name, "*"), ("*", metric)):
        if key in expected:
            return key
    for case, m in expected:
        if "*" in case and case != "*" and m in (metric, "*") and fnmatch.fnmatchcase(name, case):
            return (case, m)
    return None


def read_expected():
    out = {}
    path = os.path.join(HERE, "blackbox.expected")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                sys.exit(f"{path}:{n}: want three tab-separated fields: case, metric, reason")
            out[(parts[0], parts[1])] = parts[2]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lookout", required=True)
    ap.add_argument("--blackbox", default=shutil.which("prometheus-blackbox-exporter") or "blackbox_exporter")
    ap.add_argument("--grpc-server", help="the grpc_health_server example (built when not given)")
    ap.add_argument("--only", help="regex on case names")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="lookout-bbdiff-")
    cert, key = make_cert(work)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    dns_proc, dns_port = serve_dns(work)
    grpc_proc, grpc_ports = serve_grpc(args.grpc_server, cert, key)
    ports = {
        "dns": dns_port,
        "http": serve_http(),
        "https": serve_http(tls),
        "banner": serve_banner(b"SSH-2.0-OpenSSH_9.2 loopback\r\n"),
        "echo": serve_banner(b"220 hello\r\n", b"250 ok\r\n"),
        "closed": free_port(),
        "proxy": serve_proxy(),
        "authproxy": serve_proxy(need_auth=True),
        "ca": cert,
        **grpc_ports,
    }
    with open(os.path.join(HERE, "blackbox-modules.yml"), encoding="utf-8") as f:
        config = substitute(f.read(), ports)
    config_path = os.path.join(work, "blackbox.yml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(config)

    bb_port, lo_port = free_port(), free_port()
    logs = {n: open(os.path.join(work, f"{n}.log"), "w") for n in ("blackbox", "lookout")}
    bb = subprocess.Popen([args.blackbox, f"--config.file={config_path}",
                           f"--web.listen-address=127.0.0.1:{bb_port}"],
                          stdout=logs["blackbox"], stderr=subprocess.STDOUT)
    lo = subprocess.Popen([args.lookout, "exporter", "--config.file", config_path,
                           "--web.listen-address", f"127.0.0.1:{lo_port}"],
                          stdout=logs["lookout"], stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{bb_port}/-/healthy", bb, "blackbox_exporter")
        wait_ready(f"http://127.0.0.1:{lo_port}/-/healthy", lo, "lookout exporter")
        return run_cases(args, ports, bb_port, lo_port)
    except SystemExit:
        for name, f in logs.items():
            f.flush()
            with open(f.name, encoding="utf-8", errors="replace") as log:
                print(f"--- {name} log\n" + log.read()[-3000:])
        raise
    finally:
        for p in (bb, lo, dns_proc, grpc_proc):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def run_cases(args, ports, bb_port, lo_port):
    expected = read_expected()
    seen_expected = set()
    cases = []
    with open(os.path.join(HERE, "blackbox-cases.tsv"), encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, module, target, *extra = line.rstrip("\n").split("\t")
            extra += ["", ""]
            cases.append((name, module, substitute(target, ports), extra[0], extra[1]))
    if args.only:
        cases = [c for c in cases if re.search(args.only, c[0])]
    failures, identical = 0, 0
    for name, module, target, extra, options in cases:
        bb_status, bb_text = probe(bb_port, module, target, extra, options)
        lo_status, lo_text = probe(lo_port, module, target, extra, options)
        diffs = []
        if bb_status != lo_status:
            diffs.append(("__status__", f"HTTP status: blackbox {bb_status}, lookout {lo_status}"))
        if bb_status == 200 and lo_status == 200:
            diffs += compare(bb_text, lo_text)
        unexpected = []
        for metric, what in diffs:
            row = listed(expected, name, metric)
            if row:
                seen_expected.add(row)
                continue
            unexpected.append(what)
        if unexpected:
            failures += 1
            print(f"DIFFERENT {name} (module {module}, target {target}):")
            for what in unexpected:
                print(f"  {what}")
            if args.verbose:
                print("  --- blackbox\n" + bb_text + "  --- lookout\n" + lo_text)
        elif not diffs:
            identical += 1
    run = [c[0] for c in cases]
    stale = [k for k in expected if k not in seen_expected and k[0] != "*"
             and (any(fnmatch.fnmatchcase(n, k[0]) for n in run)
                  or (not args.only and "*" not in k[0]))]
    for case, metric in stale:
        print(f"NO LONGER DIFFERENT (remove from blackbox.expected): {case}\t{metric}")
    print(f"blackbox: {len(cases)} cases, {identical} identical, "
          f"{len(cases) - identical - failures} with listed differences only, {failures} unexpected")
    failed = failures + len(stale)
    print(f"blackbox: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
