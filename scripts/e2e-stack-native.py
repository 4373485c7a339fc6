#!/usr/bin/env python3
"""Runs the docker-compose topology natively, with the very files the compose file mounts.

lookout exporter, Debian's prometheus, prometheus-alertmanager and lookout evaluator (remote
mode, remote write) start on 127.0.0.1 with deploy/*.yml, rules/ and the same flags as
docker-compose.yml; Grafana is not started, so its target in deploy/exporter.yml is a real
outage. The script then checks what an operator would see:

* every service is ready and Prometheus scrapes the exporter, the /probe jobs and the evaluator;
* the evaluator loaded the shipped rule groups;
* ServerDown for grafana fires in the evaluator, reaches Alertmanager with the external label,
  and is remote-written to Prometheus as ALERTS (what Grafana's alert panels read);
* no ServerDown fires for a target that is up;
* a heartbeat push shows up in Prometheus;
* every PromQL expression of dashboards/*.json runs on Prometheus without an error.

Usage: scripts/e2e-stack-native.py   (LOOKOUT_BIN=path/to/lookout, default target/debug/lookout,
built with cargo when missing). Needs the ports 9090, 9093, 9095 and 9115 free; nothing leaves
127.0.0.1. Exit 0 when every check passed.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTS = {"prometheus": 9090, "alertmanager": 9093, "evaluator": 9095, "exporter": 9115}
RULE_GROUPS = {"lookout-availability", "lookout-latency", "lookout-dns", "lookout-certificates"}

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}{': ' + detail if detail else ''}")


def http(method, url, body=None, timeout=5):
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def get_json(url):
    _, body = http("GET", url)
    return json.loads(body)


def wait_for(what, predicate, timeout):
    """Polls predicate() until it returns a truthy value; returns it, or None on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError, urllib.error.URLError) as error:
            last_error = error
        time.sleep(1)
    print(f"     (gave up waiting for {what} after {timeout}s{'; last error: ' + str(last_error) if last_error else ''})")
    return None


def prom_query(expr):
    query = urllib.parse.urlencode({"query": expr})
    return get_json(f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/query?{query}")


def lookout_binary():
    binary = os.environ.get("LOOKOUT_BIN") or os.path.join(ROOT, "target", "debug", "lookout")
    if not os.access(binary, os.X_OK):
        if os.environ.get("LOOKOUT_BIN"):
            sys.exit(f"e2e-stack-native: LOOKOUT_BIN={binary} is not an executable")
        subprocess.run(["cargo", "build", "--locked", "--bin", "lookout"], cwd=ROOT, check=True)
    return binary


def main():
    for tool in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            sys.exit(f"e2e-stack-native: {tool} is needed (apt-get install {tool})")
    for name, port in PORTS.items():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                sys.exit(f"e2e-stack-native: port {port} ({name}) is already in use")
    lookout = lookout_binary()
    work = tempfile.mkdtemp(prefix="lookout-stack-")
    processes = []

    def start(name, argv):
        log = open(os.path.join(work, f"{name}.log"), "wb")
        processes.append((name, subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log))

    try:
        # The commands of docker-compose.yml, with 127.0.0.1 listen addresses and temporary
        # storage.
        start("exporter", [lookout, "exporter", "--config.file", "deploy/exporter.yml",
                           "--web.listen-address", "127.0.0.1:9115"])
        start("prometheus", ["prometheus", "--config.file=deploy/prometheus.yml",
                             f"--storage.tsdb.path={work}/prometheus",
                             "--web.listen-address=127.0.0.1:9090", "--web.enable-lifecycle",
                             "--web.enable-remote-write-receiver"])
        start("alertmanager", ["prometheus-alertmanager", "--config.file=deploy/alertmanager.yml",
                               f"--storage.path={work}/alertmanager",
                               "--web.listen-address=127.0.0.1:9093", "--cluster.listen-address="])
        for name, path in (("exporter", "/-/ready"), ("prometheus", "/-/ready"), ("alertmanager", "/-/ready")):
            url = f"http://127.0.0.1:{PORTS[name]}{path}"
            check(f"{name} is ready", wait_for(url, lambda: http("GET", url)[0] == 200, 30))
        start("evaluator", [lookout, "evaluator", "--config.file", "deploy/evaluator.yml",
                            "--datasource.url", "http://127.0.0.1:9090",
                            "--remote-write.url", "http://127.0.0.1:9090/api/v1/write",
                            "--rules.state-file", f"{work}/alerts-state.json",
                            "--web.listen-address", "127.0.0.1:9095",
                            "--web.external-url", "http://127.0.0.1:9095"])
        url = "http://127.0.0.1:9095/-/ready"
        check("evaluator is ready", wait_for(url, lambda: http("GET", url)[0] == 200, 30))

        groups = wait_for("rule groups", lambda: {
            g["name"] for g in get_json("http://127.0.0.1:9095/api/v1/rules")["data"]["groups"]}, 10) or set()
        check("evaluator loaded the shipped rule groups", RULE_GROUPS <= groups, f"got {sorted(groups)}")

        status, _ = http("POST", "http://127.0.0.1:9115/heartbeat/nightly-backup", body=b"")
        check("heartbeat push accepted", 200 <= status < 300, f"status {status}")

        def scrape_jobs_up():
            targets = get_json("http://127.0.0.1:9090/api/v1/targets?state=active")["data"]["activeTargets"]
            jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
            return jobs if {"lookout-exporter", "lookout-evaluator", "blackbox-http"} <= jobs else None
        check("Prometheus scrapes the exporter, the /probe job and the evaluator",
              wait_for("scrape targets up", scrape_jobs_up, 60))

        def grafana_down_firing():
            alerts = get_json("http://127.0.0.1:9095/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"].get("alertname") == "ServerDown"
                    and a["labels"].get("instance") == "grafana" and a["state"] == "firing"]
        firing = wait_for("ServerDown{instance=grafana} firing", grafana_down_firing, 180)
        check("ServerDown fires for the target that is down (grafana)", firing)
        if firing:
            annotations = firing[0]["annotations"]
            check("ServerDown carries the seed's annotations",
                  annotations.get("summary") == "Server grafana is down"
                  and annotations.get("description") == "grafana of job monitoring has been down for more than 1 minute.",
                  json.dumps(annotations))

        def in_alertmanager():
            alerts = get_json("http://127.0.0.1:9093/api/v2/alerts")
            return [a for a in alerts if a["labels"].get("alertname") == "ServerDown"
                    and a["labels"].get("instance") == "grafana"]
        received = wait_for("the alert in Alertmanager", in_alertmanager, 60)
        check("Alertmanager received it", received)
        if received:
            check("with the evaluator's external label", received[0]["labels"].get("monitor") == "lookout",
                  json.dumps(received[0]["labels"]))

        check("ALERTS is remote-written to Prometheus", wait_for(
            "ALERTS in Prometheus",
            lambda: prom_query('ALERTS{alertname="ServerDown",instance="grafana",alertstate="firing"}')["data"]["result"],
            60))

        alerts = get_json("http://127.0.0.1:9095/api/v1/alerts")["data"]["alerts"]
        wrong = [a["labels"].get("instance") for a in alerts if a["labels"].get("alertname") == "ServerDown"
                 and a["labels"].get("instance") in {"prometheus", "alertmanager", "lookout-exporter", "127.0.0.1:9115"}]
        check("no ServerDown for targets that are up", not wrong, f"{wrong}")

        check("the heartbeat push reached Prometheus", wait_for(
            "lookout_heartbeat_last_seen_timestamp_seconds",
            lambda: prom_query('lookout_heartbeat_last_seen_timestamp_seconds{name="nightly-backup"}')["data"]["result"],
            40))

        for dashboard in sorted(glob.glob(os.path.join(ROOT, "dashboards", "**", "*.json"), recursive=True)):
            with open(dashboard, encoding="utf-8") as f:
                board = json.load(f)
            stack = list(board.get("panels") or [])
            while stack:
                panel = stack.pop(0)
                stack.extend(panel.get("panels") or [])
                for target in panel.get("targets") or []:
                    if "expr" not in target:
                        continue
                    try:
                        result = prom_query(target["expr"])
                        ok, detail = result.get("status") == "success", json.dumps(result)[:200]
                    except urllib.error.HTTPError as error:
                        ok, detail = False, error.read().decode(errors="replace")[:200]
                    check(f"dashboard query runs: {panel.get('title')} [{target.get('refId')}]", ok, detail)
    finally:
        for name, process, log in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for name, process, log in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        if failed:
            for name, _, _ in processes:
                path = os.path.join(work, f"{name}.log")
                with open(path, "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                print(f"----- last lines of {name}'s log -----\n{tail}")
        shutil.rmtree(work, ignore_errors=True)

    print(f"stack: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
