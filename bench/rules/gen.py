#!/usr/bin/env python3
"""Generates one large `promtool test rules` file plus its rule file for bench/rules/run.sh.

JOBS jobs x INSTANCES instances, three series each (up, http_requests_total,
http_errors_total); per job two recording rules and three alerting rules. Every rule selects
one job, so no query holds more than promtool's 10,000-sample limit. The expectations are
exact (counts and alert label sets), so the file passes under both runners.

usage: gen.py OUT_DIR [JOBS] [INSTANCES] [MINUTES]
"""

import os
import sys


def main():
    out = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    instances = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    minutes = int(sys.argv[4]) if len(sys.argv) > 4 else 120
    os.makedirs(out, exist_ok=True)
    down_at = minutes // 4

    rules = ["groups:"]
    for j in range(jobs):
        job = f"job{j:03d}"
        rules += [
            f"  - name: {job}",
            "    rules:",
            "      - record: job:http_requests:rate5m",
            f"        expr: sum by (job) (rate(http_requests_total{{job=\"{job}\"}}[5m]))",
            "      - record: job:http_errors:rate5m",
            f"        expr: sum by (job) (rate(http_errors_total{{job=\"{job}\"}}[5m]))",
            "      - alert: InstanceDown",
            f"        expr: up{{job=\"{job}\"}} == 0",
            "        for: 5m",
            "        labels:",
            "          severity: critical",
            "        annotations:",
            "          summary: 'Instance {{ $labels.instance }} of {{ $labels.job }} is down'",
            "      - alert: HighErrorRatio",
            f"        expr: job:http_errors:rate5m{{job=\"{job}\"}} / job:http_requests:rate5m{{job=\"{job}\"}} > 0.05",
            "        for: 10m",
            "        labels:",
            "          severity: warning",
            "        annotations:",
            "          summary: 'Error ratio of {{ $labels.job }} is {{ $value | humanizePercentage }}'",
            "      - alert: JobMostlyDown",
            f"        expr: avg by (job) (up{{job=\"{job}\"}}) < 0.5",
            "        for: 5m",
            "        labels:",
            "          severity: critical",
        ]
    with open(os.path.join(out, "bench.rules.yml"), "w") as f:
        f.write("\n".join(rules) + "\n")

    t = [
        "rule_files:",
        "  - bench.rules.yml",
        "evaluation_interval: 1m",
        "tests:",
        "  - name: large",
        "    interval: 1m",
        "    input_series:",
    ]
    for j in range(jobs):
        job = f"job{j:03d}"
        for i in range(instances):
            inst = f"host{i:03d}:9100"
            up = f"1x{down_at} 0x{minutes - down_at}" if i == 0 else f"1x{minutes}"
            t += [
                f"      - series: 'up{{job=\"{job}\",instance=\"{inst}\"}}'",
                f"        values: '{up}'",
                f"      - series: 'http_requests_total{{job=\"{job}\",instance=\"{inst}\"}}'",
                f"        values: '0+10x{minutes}'",
                f"      - series: 'http_errors_total{{job=\"{job}\",instance=\"{inst}\"}}'",
                f"        values: '0+1x{minutes}'",
            ]
    t.append("    alert_rule_test:")
    # Down since DOWN_AT, `for: 5m`: still pending two minutes later.
    t += [
        f"      - eval_time: {down_at + 2}m",
        "        alertname: InstanceDown",
        "        exp_alerts: []",
    ]
    t += [
        f"      - eval_time: {minutes}m",
        "        alertname: InstanceDown",
        "        exp_alerts:",
    ]
    for j in range(jobs):
        job = f"job{j:03d}"
        t += [
            "          - exp_labels:",
            f"              job: {job}",
            "              instance: host000:9100",
            "              severity: critical",
            "            exp_annotations:",
            f"              summary: 'Instance host000:9100 of {job} is down'",
        ]
    t += [
        f"      - eval_time: {minutes}m",
        "        alertname: JobMostlyDown",
        "        exp_alerts: []",
    ]
    t.append("    promql_expr_test:")
    t += [
        "      - expr: count(job:http_requests:rate5m)",
        f"        eval_time: {minutes}m",
        "        exp_samples:",
        f"          - value: {jobs}",
        "      - expr: count by (alertname, alertstate) (ALERTS)",
        f"        eval_time: {minutes}m",
        "        exp_samples:",
        "          - labels: '{alertname=\"InstanceDown\",alertstate=\"firing\"}'",
        f"            value: {jobs}",
        "          - labels: '{alertname=\"HighErrorRatio\",alertstate=\"firing\"}'",
        f"            value: {jobs}",
        "      - expr: count(up == 0)",
        f"        eval_time: {minutes}m",
        "        exp_samples:",
        f"          - value: {jobs}",
    ]
    with open(os.path.join(out, "bench_test.yml"), "w") as f:
        f.write("\n".join(t) + "\n")
    print(
        f"{jobs * instances * 3} series, {jobs * 5} rules ({jobs * 2} recording, "
        f"{jobs * 3} alerting), {minutes + 1} evaluation steps"
    )


if __name__ == "__main__":
    main()
