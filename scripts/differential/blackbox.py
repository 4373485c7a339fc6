#!/usr/bin/env python3
"""blackbox_exporter and `lookout exporter` side by side on the same loopback targets.

Starts Debian's blackbox_exporter (the oracle) and `lookout exporter` with one configuration
(the modules of `tests/differential/blackbox-modules.yml`), serves loopback targets (HTTP with
redirects, compression, status codes and headers; HTTPS with a self-signed certificate; a TCP
banner server, a STARTTLS dialogue server, HTTPS servers that need a client certificate or speak
only TLS 1.2 or only TLS 1.3, dnsmasq as a recursive-style and as an authoritative server, DNS
over TLS in front of it, a gRPC health server (`examples/grpc_health_server.rs`) over h2c and
TLS, an OAuth 2.0 token endpoint, forward/CONNECT proxies, one asking for basic
authentication), probes every case of `tests/differential/blackbox-cases.tsv` on both (in
parallel), and compares the answers metric by metric: families, types, label sets and values.
Timings (`*duration*` metrics) are compared by presence and label set only, and must be >= 0.

Configuration errors are compared too: every document of
`tests/differential/blackbox-configs.yml` is checked with `--config.check` by both programs,
which must agree on whether it is valid (metric `__config__` in the expected file).

A difference fails the run unless `tests/differential/blackbox.expected` lists it (case, or a
pattern such as `grpc_*`; metric; and why: a deliberate difference of the README's
Differences table).

    scripts/differential/blackbox.py --lookout target/release/lookout [--only REGEX] [-j N] [-v]
        [--grpc-server target/debug/examples/grpc_health_server]

Without --grpc-server the gRPC server is built with `cargo build --example
grpc_health_server -p lookout-exporter` (then target/debug/examples/grpc_health_server).
"""
import argparse
import base64
import concurrent.futures
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
import zlib

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

    def do_PUT(self):
        self.do_POST()

    def do_DELETE(self):
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
        if path == "/slow":
            time.sleep(float(q.get("s", ["3"])[0]))
            return self.send(200, BODY)
        if path == "/deflate":
            if "deflate" in (self.headers.get("Accept-Encoding") or ""):
                return self.send(200, zlib.compress(BODY * 10), [("Content-Encoding", "deflate")])
            return self.send(200, BODY * 10)
        if path == "/bad-gzip":
            return self.send(200, b"this is not gzip", [("Content-Encoding", "gzip")])
        if path == "/auth":
            # 200 only with basic auth user:secret (dXNlcjpzZWNyZXQ=).
            if self.headers.get("Authorization") == "Basic dXNlcjpzZWNyZXQ=":
                return self.send(200, BODY)
            return self.send(401, b"", [("WWW-Authenticate", 'Basic realm="loopback"')])
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


class Target10(Target):
    protocol_version = "HTTP/1.0"


class ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        pass  # failed TLS handshakes are part of the tests


class LazyTLSServer(ThreadingHTTPServer):
    """Does the TLS handshake in the request's thread: a client that fails it (a test) must not
    hold up the others."""
    tls_context = None

    def finish_request(self, request, client_address):
        try:
            request = self.tls_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


def serve_http(tls_context=None, handler=Target):
    if tls_context:
        server = LazyTLSServer(("127.0.0.1", 0), handler)
        server.tls_context = tls_context
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
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


def serve_tcp(handle):
    """A TCP server calling `handle(conn)` in a thread per connection."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def run(conn):
        try:
            with conn:
                handle(conn)
        except (OSError, ssl.SSLError):
            pass

    def loop():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


def read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def serve_starttls(tls_context):
    """An SMTP-like dialogue: 220 greeting, EHLO lists STARTTLS, STARTTLS upgrades the same
    connection to TLS, then EHLO answers `250 secure` and QUIT closes."""
    def handle(conn):
        conn.settimeout(5)
        conn.sendall(b"220 loopback ESMTP\r\n")
        secure = False
        while True:
            line = read_line(conn).strip().upper()
            if not line:
                return
            if line.startswith(b"EHLO"):
                conn.sendall(b"250 secure\r\n" if secure else
                             b"250-loopback\r\n250-STARTTLS\r\n250 OK\r\n")
            elif line == b"STARTTLS" and not secure:
                conn.sendall(b"220 go ahead\r\n")
                conn = tls_context.wrap_socket(conn, server_side=True)
                secure = True
            elif line == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"500 what\r\n")
    return serve_tcp(handle)


def serve_tls_forward(tls_context, port):
    """TLS in front of a loopback TCP port (DNS over TLS before dnsmasq)."""
    def read_message(sock):
        """One DNS-over-TCP message: the 2-byte length, then that many bytes."""
        data = b""
        while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
            chunk = sock.recv(65537)
            if not chunk:
                return b""
            data += chunk
        return data

    def handle(conn):
        conn.settimeout(5)
        conn = tls_context.wrap_socket(conn, server_side=True)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as up:
            while True:
                query = read_message(conn)
                if not query:
                    return
                up.sendall(query)
                conn.sendall(read_message(up))
    return serve_tcp(handle)


def serve_banner(banner, expect_reply=None):
    """A TCP server that writes `banner`, then answers a line with `expect_reply`."""
    def handle(conn):
        conn.sendall(banner)
        if expect_reply is not None:
            conn.settimeout(2)
            data = conn.recv(4096)
            if data:
                conn.sendall(expect_reply)
        time.sleep(0.05)
    return serve_tcp(handle)


DNS_RECORDS = ["--host-record=a.example.test,192.0.2.1,2001:db8::1",
               "--host-record=b.example.test,192.0.2.2",
               "--txt-record=txt.example.test,\"v=spf1 -all\"",
               "--txt-record=multi.example.test,\"hello\",\"world\"",
               "--txt-record=spf.example.test,v=spf1 -all",
               "--mx-host=example.test,mail.example.test,10",
               "--srv-host=_http._tcp.example.test,a.example.test,80,0,5",
               "--cname=alias.example.test,a.example.test",
               "--ptr-record=1.2.0.192.in-addr.arpa,a.example.test",
               "--txt-record=long.example.test,\"one\",\"two\",\"three\""]


def serve_dns(folder, name, extra):
    """dnsmasq on a loopback port, answering for example.test from fixed records only; `extra`
    are more dnsmasq arguments (an authoritative zone)."""
    port = free_port()
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    # --keep-in-foreground, not --no-daemon: that debug mode answers TCP queries in the one
    # process, so one slow TCP client (DNS over TLS to the plain port) stalls every query.
    args = [dnsmasq, "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
            "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
            f"--pid-file={os.path.join(folder, name + '.pid')}", "--local=/example.test/",
            "--user=" + ("root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"))]
    args += DNS_RECORDS + extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    sys.exit("dnsmasq did not start")


def make_cert(folder, name="", cn="localhost"):
    key, cert = os.path.join(folder, f"{name}key.pem"), os.path.join(folder, f"{name}cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert,
         "-days", "30", "-subj", f"/O=example/CN={cn}",
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


def server_tls(cert, key, minimum=None, maximum=None, client_ca=None):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    if minimum:
        tls.minimum_version = minimum
    if maximum:
        tls.maximum_version = maximum
    if client_ca:
        tls.verify_mode = ssl.CERT_REQUIRED
        tls.load_verify_locations(client_ca)
    return tls


AUTH_ZONE = ["--auth-server=ns1.auth.test,127.0.0.1", "--auth-zone=auth.test",
             "--auth-soa=2024010101,hostmaster.auth.test", "--auth-sec-servers=ns2.auth.test",
             "--host-record=www.auth.test,192.0.2.10", "--host-record=ns1.auth.test,192.0.2.53",
             "--mx-host=auth.test,mail.auth.test,5", "--txt-record=auth.test,zone"]


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
    except OSError as e:  # no answer within 30 s: a difference of its own
        return f"no answer ({e})", ""


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
    ap.add_argument("-j", "--jobs", type=int, default=16, help="cases probed at once")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="lookout-bbdiff-")
    cert, key = make_cert(work)
    client_cert, client_key = make_cert(work, "client-", "client")
    tls = server_tls(cert, key)
    dns_proc, dns_port = serve_dns(work, "dnsmasq", [])
    auth_proc, auth_port = serve_dns(work, "dnsmasq-auth", AUTH_ZONE)
    grpc_proc, grpc_ports = serve_grpc(args.grpc_server, cert, key)
    for name, text in (("empty", ""), ("password", "secret\n"), ("token", "token123\n")):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write(text)
    ports = {
        "dns": dns_port,
        "dnsauth": auth_port,
        "dot": serve_tls_forward(tls, dns_port),
        "http": serve_http(),
        "http10": serve_http(handler=Target10),
        "https": serve_http(tls),
        "https12": serve_http(server_tls(cert, key, maximum=ssl.TLSVersion.TLSv1_2)),
        "https13": serve_http(server_tls(cert, key, minimum=ssl.TLSVersion.TLSv1_3)),
        "mtls": serve_http(server_tls(cert, key, client_ca=client_cert)),
        "starttls": serve_starttls(tls),
        "banner": serve_banner(b"SSH-2.0-OpenSSH_9.2 loopback\r\n"),
        "echo": serve_banner(b"220 hello\r\n", b"250 ok\r\n"),
        "closed": free_port(),
        "proxy": serve_proxy(),
        "authproxy": serve_proxy(need_auth=True),
        "ca": cert,
        **grpc_ports,
        "key": key,
        "client_cert": client_cert,
        "client_key": client_key,
        "dir": work,
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
        expected = read_expected()
        seen = set()
        failed = run_cases(args, ports, bb_port, lo_port, expected, seen)
        failed += run_config_checks(args, ports, work, expected, seen)
        if not args.only:
            failed += run_upstream_examples(args)
        # A row no case needs any more: its case is gone or no longer differs.
        stale = [k for k in expected if k not in seen and k[0] != "*"
                 and (not args.only or re.search(args.only, k[0].replace("*", "")))]
        for case, metric in stale:
            print(f"NO LONGER DIFFERENT (remove from blackbox.expected): {case}\t{metric}")
        failed += len(stale)
        print(f"blackbox: {failed} failed, {time.monotonic() - started:.1f} s")
        return 1 if failed else 0
    except SystemExit:
        for name, f in logs.items():
            f.flush()
            with open(f.name, encoding="utf-8", errors="replace") as log:
                print(f"--- {name} log\n" + log.read()[-3000:])
        raise
    finally:
        for p in (bb, lo, dns_proc, auth_proc, grpc_proc):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def allowed(expected, seen, name, metric):
    row = listed(expected, name, metric)
    if row:
        seen.add(row)
    return row is not None


def run_cases(args, ports, bb_port, lo_port, expected, seen):
    cases = []
    with open(os.path.join(HERE, "blackbox-cases.tsv"), encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, module, target, *extra = line.rstrip("\n").split("\t")
            extra += ["", ""]
            cases.append((name, module, substitute(target, ports), extra[0], extra[1]))
    names = [c[0] for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        sys.exit(f"duplicate case names: {sorted(dup)}")
    if args.only:
        cases = [c for c in cases if re.search(args.only, c[0])]

    def one(case):
        name, module, target, extra, options = case
        # Both at once: a slow case (a timeout) costs its time once.
        with concurrent.futures.ThreadPoolExecutor(2) as pair:
            start = time.monotonic()
            bb_f = pair.submit(probe, bb_port, module, target, extra, options)
            lo_f = pair.submit(probe, lo_port, module, target, extra, options)
            bb_r = bb_f.result()
            bb_s = time.monotonic() - start
            lo_r = lo_f.result()
            return bb_r, lo_r, (bb_s, time.monotonic() - start)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, cases))
    slow = sorted(((max(r[2]), c[0], r[2]) for c, r in zip(cases, results)), reverse=True)
    for _, name, (bb_s, lo_s) in slow[:3]:
        print(f"slowest: {name} (blackbox {bb_s:.1f} s, lookout {lo_s:.1f} s)")
    failures, identical = 0, 0
    for (name, module, target, _, _), ((bb_status, bb_text), (lo_status, lo_text), _) in zip(cases, results):
        diffs = []
        if isinstance(bb_status, str) or isinstance(lo_status, str):
            # Every case must be answered in time, by both: the harness's run time is bounded.
            diffs.append(("__no_answer__", f"blackbox {bb_status}, lookout {lo_status}"))
        elif bb_status != lo_status:
            diffs.append(("__status__", f"HTTP status: blackbox {bb_status}, lookout {lo_status}"))
        if bb_status == 200 and lo_status == 200:
            diffs += compare(bb_text, lo_text)
        unexpected = [what for metric, what in diffs if not allowed(expected, seen, name, metric)]
        if unexpected:
            failures += 1
            print(f"DIFFERENT {name} (module {module}, target {target}):")
            for what in unexpected:
                print(f"  {what}")
            if args.verbose:
                print("  --- blackbox\n" + bb_text + "  --- lookout\n" + lo_text)
        elif not diffs:
            identical += 1
    print(f"blackbox: {len(cases)} cases, {identical} identical, "
          f"{len(cases) - identical - failures} with listed differences only, {failures} unexpected")
    return failures


def read_config_cases(ports):
    """The documents of blackbox-configs.yml: `--- name` starts one."""
    cases, name, lines = [], None, []
    with open(os.path.join(HERE, "blackbox-configs.yml"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("--- "):
                if name:
                    cases.append((name, substitute("".join(lines), ports)))
                name, lines = line[4:].strip(), []
            elif name:
                lines.append(line)
    if name:
        cases.append((name, substitute("".join(lines), ports)))
    return cases


def run_config_checks(args, ports, work, expected, seen):
    """Each configuration through both programs' `--config.check`: valid for both or neither."""
    cases = read_config_cases(ports)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c[0])]
    folder = os.path.join(work, "configs")
    os.makedirs(folder, exist_ok=True)

    def check(case):
        name, text = case
        path = os.path.join(folder, name + ".yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        bb = subprocess.run([args.blackbox, f"--config.file={path}", "--config.check"],
                            capture_output=True, text=True, timeout=30)
        lo = subprocess.run([args.lookout, "exporter", "--config.file", path, "--config.check"],
                            capture_output=True, text=True, timeout=30)
        return bb, lo

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(check, cases))
    failures, agreed = 0, 0
    for (name, _), (bb, lo) in zip(cases, results):
        bb_ok, lo_ok = bb.returncode == 0, lo.returncode == 0
        if bb_ok == lo_ok:
            agreed += 1
            if args.verbose:
                print(f"config {name}: {'valid' if bb_ok else 'invalid'} for both")
            continue
        if allowed(expected, seen, name, "__config__"):
            continue
        failures += 1
        print(f"DIFFERENT config {name}: blackbox {'accepts' if bb_ok else 'refuses'}, "
              f"lookout {'accepts' if lo_ok else 'refuses'}")
        for who, r in (("blackbox", bb), ("lookout", lo)):
            out = (r.stdout + r.stderr).strip().splitlines()
            print(f"  {who}: {out[-1] if out else ''}")
    print(f"blackbox: {len(cases)} configurations, {agreed} judged alike, "
          f"{len(cases) - agreed - failures} with listed differences only, {failures} unexpected")
    return failures


def run_upstream_examples(args):
    """Upstream's example configurations, as published, must load: blackbox_exporter's
    example.yml at v0.23.0 and at HEAD (../shared/conformance/blackbox, beside the
    checkout, or $LOOKOUT_CONFORMANCE) and Debian's own /etc/prometheus/blackbox.yml. Where
    blackbox 0.23 is the oracle (the v0.23.0 file, Debian's file) it must accept them too;
    the HEAD file uses settings of later releases, so Lookout alone checks it."""
    base = os.environ.get("LOOKOUT_CONFORMANCE") or os.path.join(
        os.path.dirname(ROOT), "shared", "conformance")
    files = [(os.path.join(base, "blackbox", "example-v0.23.0.yml"), True),
             (os.path.join(base, "blackbox", "example-head.yml"), False),
             ("/etc/prometheus/blackbox.yml", True)]
    failures = 0
    for path, oracle in files:
        if not os.path.exists(path):
            print(f"MISSING upstream example {path}")
            failures += 1
            continue
        runs = [("lookout", [args.lookout, "exporter", "--config.file", path, "--config.check"])]
        if oracle:
            runs.append(("blackbox", [args.blackbox, f"--config.file={path}", "--config.check"]))
        for who, cmd in runs:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                failures += 1
                print(f"REFUSED by {who}: {path}\n  {(r.stdout + r.stderr).strip()}")
    print(f"blackbox: {len(files)} upstream example files, {failures} failures")
    return failures


if __name__ == "__main__":
    sys.exit(main())
