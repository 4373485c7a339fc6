#!/usr/bin/env python3
"""Loopback scrape target for bench/vmalert/run.sh: a synthetic Kubernetes cluster whose
series carry the metric names and label values that the given rule files select, so that
their selectors, joins and alerts have something to work on.

The metric names and label matchers are read from the rule files' `expr` fields (every
`name{...}` selector and bare metric name; names with a colon are recording-rule outputs
and are left out). Each name belongs to a family by prefix (container_*, kube_pod_*,
kube_node_*, node_*, apiserver_*, ...) that gives its entities (containers, pods, nodes,
deployments, ...) and their labels (namespace, pod, container, node, ...), shared by all
families so that `on (namespace, pod)` joins match. A label the entity does not give takes
the values the selectors ask for (`verb=~"LIST|GET"` gives LIST and GET; `code=~"5.."` gives
500; `image!=""` gives a non-empty value). Counters (_total, _count, _sum, _bucket) grow,
histograms get 13 buckets, state gauges (_info, _owner, status_*, ...) are 1 with 1 in 20
at 0 so that some alerts fire.

Usage: k8s_target.py PORT NODES PODS_PER_NODE RULE_FILE...   (serves until killed)
       k8s_target.py --count NODES PODS_PER_NODE RULE_FILE...   (prints the series count
                                                                 and the names per family)
"""
import itertools
import json
import os
import re
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
import target  # noqa: E402  (bench/api/target.py: the shared loopback server)

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}
LES = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"]
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exprs(path):
    """The `expr` values of a rule file, read from its YAML text (block scalars, quoted and
    plain scalars) without a YAML library."""
    lines = open(path, encoding="utf-8").read().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r'^(\s*)(?:-\s*)?"?expr"?\s*:\s*(.*)$', lines[i])
        i += 1
        if not m:
            continue
        indent = len(m.group(1))
        rest = m.group(2).strip()
        if rest.startswith(("|", ">")):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            out.append("\n".join(block))
        elif rest.startswith('"'):
            out.append(json.loads(rest))
        elif rest.startswith("'"):
            out.append(rest[1:-1].replace("''", "'"))
        else:
            out.append(rest)
    return out


def sample_values(op, regex):
    """Label values that satisfy one matcher."""
    if op == "=":
        return [regex.replace('\\"', '"')]
    if op == "!=":
        return ["x"] if regex != "x" else ["y"]
    pattern = regex.replace("\\\\", "\\")
    if op == "!~":
        return [v for v in ("x", "y1") if not re.fullmatch(pattern, v)][:1] or ["z9"]
    found = []
    for alt in pattern.split("|"):
        literal = re.sub(r"\\(.)", r"\1", alt)
        for cand in (literal.replace(".", "0"), re.sub(r"\(.*\)\?", "", literal), literal,
                     literal.replace(".*", "").replace(".+", "x"), "x"):
            if cand and re.fullmatch(pattern, cand):
                found.append(cand)
                break
    return sorted(set(found)) or ["x"]


def selectors(rule_files):
    """{metric name: {label: set of values}} over every selector of the rule files."""
    names = {}
    for path in rule_files:
        for e in exprs(path):
            e = re.sub(r"#.*", "", e)
            for m in SELECTOR.finditer(e):
                name = m.group(1)
                matchers = MATCHER.findall(m.group(2))
                if name is None:  # {__name__="..."} form
                    name = next((v for k, op, v in matchers if k == "__name__" and op == "="), None)
                if not name or ":" in name or name in KEYWORDS:
                    continue
                labels = names.setdefault(name, {})
                for k, op, v in matchers:
                    if k != "__name__":
                        labels.setdefault(k, set()).update(sample_values(op, v))
            # Bare names: drop strings, matchers, ranges and label lists, then every
            # identifier not followed by "(" is a metric name.
            bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", e)
            bare = re.sub(r"\{[^{}]*\}|\[[^\]]*\]", " ", bare)
            bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
            for m in IDENT.finditer(bare):
                word = m.group(0)
                after = bare[m.end():].lstrip()
                if (word.lower() in KEYWORDS or ":" in word or after.startswith("(")
                        or re.match(r"^\d", word) or (m.start() > 0 and bare[m.start() - 1] in "$.")):
                    continue
                names.setdefault(word, {})
    names.pop("up", None)  # written by the scraper itself
    return names


def cluster(nodes, pods_per_node):
    """Entities of the synthetic cluster: {kind: [labels, ...]}."""
    ns = [f"ns{i}" for i in range(max(1, nodes // 2))]
    node_list = [{"node": f"node{i}", "instance": f"node{i}"} for i in range(nodes)]
    pods, containers, owners = [], [], {}
    for n in range(nodes):
        for k in range(pods_per_node):
            i = n * pods_per_node + k
            kind = ("ReplicaSet", "StatefulSet", "DaemonSet", "Job")[i % 4]
            owner = f"{kind.lower()}{i // 8}"
            pod = {"namespace": ns[i % len(ns)], "pod": f"pod{i}", "node": f"node{n}",
                   "uid": f"uid{i}", "owner_kind": kind, "owner_name": owner}
            pods.append(pod)
            owners.setdefault((kind, pod["namespace"], owner), pod)
            for c in range(2):
                containers.append({**{k: pod[k] for k in ("namespace", "pod", "node")},
                                   "container": f"c{c}", "image": f"img{c}", "instance": pod["node"],
                                   "id": f"/kubepods/{pod['uid']}/c{c}", "name": f"k8s_c{c}_{pod['pod']}"})
    for n in node_list:  # node-exporter pods, joined by node_* rules on (namespace, pod)
        pods.append({"namespace": "monitoring", "pod": f"node-exporter-{n['node']}", "node": n["node"],
                     "uid": f"uid-ne-{n['node']}", "owner_kind": "DaemonSet", "owner_name": "node-exporter"})
    objects = {}
    for (kind, namespace, name), _ in owners.items():
        objects.setdefault(kind, []).append({"namespace": namespace, "name": name})
    volumes = [{"namespace": p["namespace"], "persistentvolumeclaim": f"pvc-{p['pod']}",
                "node": p["node"], "instance": p["node"]} for p in pods[: len(pods) // 4]]
    return {"node": node_list, "pod": pods, "container": containers, "objects": objects,
            "volume": volumes, "namespace": [{"namespace": n} for n in ns]}


def family(name, c):
    """The entities a metric is reported for, as label dicts."""
    objects = c["objects"]

    def objs(kind, label):
        return [{"namespace": o["namespace"], label: o["name"]} for o in objects.get(kind, [])]

    if name.startswith("container_"):
        return c["container"]
    if name.startswith("kube_pod_container_"):
        return [{k: v for k, v in ct.items() if k in ("namespace", "pod", "container", "node")}
                for ct in c["container"]]
    if name.startswith("kube_pod_"):
        keep = ("namespace", "pod", "uid") + (("node",) if name == "kube_pod_info" else ()) + (
            ("owner_kind", "owner_name") if name == "kube_pod_owner" else ())
        return [{k: p[k] for k in keep} for p in c["pod"]]
    if name.startswith("kube_replicaset_"):
        return [{"namespace": o["namespace"], "replicaset": o["name"], "owner_kind": "Deployment",
                 "owner_name": "deploy-" + o["namespace"]} for o in objects.get("ReplicaSet", [])]
    if name.startswith("kube_job_"):
        return [{"namespace": o["namespace"], "job_name": o["name"], "owner_kind": "CronJob",
                 "owner_name": "cron"} for o in objects.get("Job", [])]
    if name.startswith("kube_statefulset_"):
        return objs("StatefulSet", "statefulset")
    if name.startswith("kube_daemonset_"):
        return objs("DaemonSet", "daemonset")
    if name.startswith("kube_deployment_"):
        return [{"namespace": n["namespace"], "deployment": "deploy-" + n["namespace"]} for n in c["namespace"]]
    if name.startswith("kube_horizontalpodautoscaler_"):
        return [{"namespace": n["namespace"], "horizontalpodautoscaler": "hpa-" + n["namespace"]} for n in c["namespace"]]
    if name.startswith("kube_poddisruptionbudget_"):
        return [{"namespace": n["namespace"], "poddisruptionbudget": "pdb-" + n["namespace"]} for n in c["namespace"]]
    if name.startswith("kube_resourcequota"):
        return [{"namespace": n["namespace"], "resourcequota": "rq-" + n["namespace"]} for n in c["namespace"]]
    if name.startswith("kube_persistentvolumeclaim_"):
        return [{k: v["namespace" if k == "namespace" else k] for k in ("namespace", "persistentvolumeclaim")} for v in c["volume"]]
    if name.startswith("kube_persistentvolume_"):
        return [{"persistentvolume": "pv-" + v["persistentvolumeclaim"]} for v in c["volume"]]
    if name.startswith("kubelet_volume_stats_"):
        return c["volume"]
    if name.startswith(("kube_node_", "kubelet_")):
        return c["node"]
    if name.startswith("node_"):
        return [{"instance": n["node"], "namespace": "monitoring", "pod": f"node-exporter-{n['node']}"}
                for n in c["node"]]
    if name.startswith(("apiserver_", "aggregator_", "kubernetes_build_info", "rest_client_")):
        return [{"instance": f"10.0.0.{i}:6443"} for i in range(3)]
    if name.startswith("scheduler_"):
        return [{"instance": f"10.0.0.{i}:10259"} for i in range(3)]
    return [{"instance": "other"}]


STATE = re.compile(r"_info$|_owner$|_labels$|_phase$|_condition$|_ready$|_role$|_taint$|unschedulable"
                   r"|access_mode|_reason$|node_name$|_revision$")
EXTRA = {  # dimensions the selectors do not name but the rules group by
    "node_cpu_seconds_total": {"cpu": ["0", "1", "2", "3"], "mode": ["idle", "user", "system", "iowait"]},
    "apiserver_request_total": {"resource": ["pods", "nodes", "secrets"], "code": ["200", "500"]},
    "apiserver_request_sli_duration_seconds_bucket": {"resource": ["pods", "nodes"], "scope": ["resource", "cluster"]},
    "apiserver_request_sli_duration_seconds_count": {"resource": ["pods", "nodes"], "scope": ["resource", "cluster"]},
    "kube_pod_container_resource_requests": {"resource": ["cpu", "memory"]},
    "kube_pod_container_resource_limits": {"resource": ["cpu", "memory"]},
    "kube_node_status_allocatable": {"resource": ["cpu", "memory", "pods"]},
    "kube_node_status_capacity": {"resource": ["cpu", "memory", "pods"]},
    "kube_resourcequota": {"resource": ["requests.cpu", "requests.memory"], "type": ["hard", "used"]},
    "kube_pod_status_phase": {"phase": ["Running", "Pending", "Failed", "Unknown"]},
}


def series(rule_files, nodes, pods_per_node):
    """[(name, labels text, kind, seed)] for every series; kind is "c" (counter), "s" (state)
    or "g" (gauge)."""
    names = selectors(rule_files)
    c = cluster(nodes, pods_per_node)
    out = []
    for name in sorted(names):
        wanted = {k: sorted(v) for k, v in names[name].items()}
        for k, v in EXTRA.get(name, {}).items():
            wanted[k] = sorted(set(wanted.get(k, [])) | set(v))
        kind = "c" if re.search(r"(_total|_count|_sum|_bucket)$", name) else ("s" if STATE.search(name) else "g")
        for entity in family(name, c):
            dims = {k: v for k, v in wanted.items() if k not in entity and k != "le"}
            keys = sorted(dims)
            combos = list(itertools.islice(itertools.product(*(dims[k] for k in keys)), 64))
            for combo in combos:
                labels = {**entity, **dict(zip(keys, combo))}
                if "job" in labels and len(wanted.get("job", [])) > 1:
                    labels["job"] = wanted["job"][0]
                text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                seed = zlib.crc32(f"{name}{{{text}}}".encode())
                if name.endswith("_bucket"):
                    for j, le in enumerate(LES):
                        out.append((name, text + (',' if text else '') + f'le="{le}"', "b", seed, j))
                else:
                    out.append((name, text, kind, seed, 0))
    return out


T0 = time.time()


def render_fn(all_series):
    prefix = [f"{n}{{{t}}} " for n, t, _, _, _ in all_series]

    def render():
        t = time.time() - T0
        lines = []
        for p, (_, _, kind, seed, j) in zip(prefix, all_series):
            if kind == "c":
                v = int(t * (1 + seed % 7))
            elif kind == "b":
                v = int(t * (2 + seed % 5)) * (j + 1) // len(LES)
            elif kind == "s":
                v = 0 if seed % 20 == 0 else 1
            else:
                v = (seed % 1000) + int(t) % 10
            lines.append(f"{p}{v}")
        return ("\n".join(lines) + "\n").encode()

    return render


if __name__ == "__main__":
    if sys.argv[1] == "--count":
        nodes, ppn, files = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
        s = series(files, nodes, ppn)
        names = sorted({n for n, *_ in s})
        print(f"{len(s)} series, {len(names)} metric names")
        counts = {}
        for n, *_ in s:
            counts[n] = counts.get(n, 0) + 1
        for n in names:
            print(f"  {counts[n]:7} {n}")
        sys.exit(0)
    port, nodes, ppn, files = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    target.serve(port, port, render_fn(series(files, nodes, ppn)))
