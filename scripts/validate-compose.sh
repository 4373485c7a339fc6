#!/usr/bin/env bash
# Validates the docker-compose stack without a Docker engine:
#   1. docker-compose.yml against the Compose Specification JSON schema (the copy bundled
#      with PyPI's check-jsonschema);
#   2. every bind mount, the build context and Dockerfile exist in the repository, and every
#      container path a service's command, environment or healthcheck names (and Grafana's
#      dashboard provider path) lies on one of its bind mounts and exists there;
#   3. deploy/prometheus.yml with `promtool check config`, deploy/alertmanager.yml with
#      `amtool check-config`, the rule globs of deploy/evaluator.yml (the rules themselves:
#      scripts/check-rules.sh);
#   4. dashboards: valid JSON, every panel on the provisioned data source, every `expr`
#      parsed by Prometheus's own parser (promtool check rules on a generated file);
#   5. with LOOKOUT_BIN=path/to/lookout, deploy/exporter.yml with
#      `lookout exporter --config.check`.
# Needs python3 with pip (installs check-jsonschema if missing), promtool (Debian package
# prometheus) and amtool (Debian package prometheus-alertmanager).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0

fail() { echo "validate-compose: $*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 is needed"
command -v promtool >/dev/null || fail "promtool is needed (apt-get install prometheus)"
command -v amtool >/dev/null || fail "amtool is needed (apt-get install prometheus-alertmanager)"
if ! python3 -c 'import check_jsonschema' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check \
    "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}" \
    || fail "cannot install check-jsonschema from PyPI"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== docker-compose.yml against the Compose Specification schema"
python3 -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

echo "== files the compose file mounts and names"
python3 - "$work/dashboard-exprs.yml" <<'PY'
import glob
import json
import os
import re
import sys

from ruamel.yaml import YAML

yaml = YAML(typ="safe")
root = os.getcwd()
errors = []


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f)


def inside_repo(path):
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


compose = load("docker-compose.yml")
declared_volumes = set((compose.get("volumes") or {}).keys())
checked = 0

for name, service in (compose.get("services") or {}).items():
    where = f"docker-compose.yml: services.{name}"
    build = service.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not os.path.isdir(context):
            errors.append(f"{where}.build.context: {context} is not a directory")
        elif not os.path.isfile(os.path.join(context, dockerfile)):
            errors.append(f"{where}.build.dockerfile: {os.path.join(context, dockerfile)} does not exist")
        checked += 1
    for env_file in ([service["env_file"]] if isinstance(service.get("env_file"), str) else service.get("env_file") or []):
        path = env_file if isinstance(env_file, str) else env_file.get("path")
        if not os.path.isfile(path):
            errors.append(f"{where}.env_file: {path} does not exist")

    # Bind mounts: container path -> repository path.
    binds = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            is_bind = source.startswith((".", "/", "~"))
        else:
            source, target = volume.get("source", ""), volume.get("target", "")
            is_bind = volume.get("type") == "bind"
        if not is_bind:
            if source and source not in declared_volumes:
                errors.append(f"{where}.volumes: named volume {source!r} is not declared under volumes:")
            continue
        if not inside_repo(source):
            errors.append(f"{where}.volumes: {source} is outside the repository; every mounted file must live in it")
        elif not os.path.exists(source):
            errors.append(f"{where}.volumes: {source} does not exist")
        else:
            checked += 1
        binds[target.rstrip("/")] = os.path.normpath(source)

    def repo_path(container_path):
        """The repository path behind a container path, or None when no bind mount holds it."""
        best = None
        for target, source in binds.items():
            if container_path == target or container_path.startswith(target + "/"):
                if best is None or len(target) > len(best[0]):
                    best = (target, source)
        if best is None:
            return None
        return os.path.join(best[1], container_path[len(best[0]):].lstrip("/"))

    def check_path(container_path, field):
        global checked
        local = repo_path(container_path)
        if local is None:
            return
        if not glob.glob(local):
            errors.append(f"{where}.{field}: {container_path} (= {local} in the repository) does not exist")
        else:
            checked += 1

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)

    for field in ("command", "entrypoint", "environment", "healthcheck"):
        for text in strings(service.get(field)):
            for token in re.split(r"[\s=,]+", text):
                if token.startswith("/"):
                    check_path(token, field)

    # Grafana: dashboard providers and data sources come from the provisioning folder.
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment if "=" in item)
    image = str(service.get("image") or "")
    provisioning = environment.get("GF_PATHS_PROVISIONING")
    if provisioning is None and "grafana" in image:
        provisioning = "/etc/grafana/provisioning"
    if provisioning:
        provider_dir = repo_path(provisioning.rstrip("/") + "/dashboards")
        datasource_dir = repo_path(provisioning.rstrip("/") + "/datasources")
        if provider_dir is None or datasource_dir is None:
            errors.append(f"{where}: Grafana's provisioning folders {provisioning}/dashboards and {provisioning}/datasources must be bind-mounted from the repository")
        else:
            for provider_file in sorted(glob.glob(os.path.join(provider_dir, "*.y*ml"))):
                for provider in (load(provider_file) or {}).get("providers") or []:
                    path = (provider.get("options") or {}).get("path")
                    if path and not (repo_path(path) and os.path.isdir(repo_path(path))):
                        errors.append(f"{provider_file}: provider {provider.get('name')!r} path {path} is not a mounted directory of services.{name}")
                    else:
                        checked += 1
            uids = set()
            for source_file in sorted(glob.glob(os.path.join(datasource_dir, "*.y*ml"))):
                for datasource in (load(source_file) or {}).get("datasources") or []:
                    uids.add(datasource.get("uid"))
            # Dashboards must use a provisioned data source.
            for dashboard in sorted(glob.glob("dashboards/**/*.json", recursive=True)):
                try:
                    with open(dashboard, encoding="utf-8") as f:
                        board = json.load(f)
                except ValueError as error:
                    errors.append(f"{dashboard}: not valid JSON: {error}")
                    continue

                def panels(items):
                    for panel in items or []:
                        yield panel
                        yield from panels(panel.get("panels"))

                # A `${name}` uid names a data source variable of the dashboard: it picks
                # among the provisioned Prometheus-type sources, so it is as good as one.
                variables = {"${" + v.get("name", "") + "}"
                             for v in (board.get("templating") or {}).get("list") or []
                             if v.get("type") == "datasource" and v.get("query") == "prometheus"}
                for panel in panels(board.get("panels")):
                    for target in [panel] + list(panel.get("targets") or []):
                        datasource = target.get("datasource")
                        if isinstance(datasource, dict) and datasource.get("type") == "prometheus" and datasource.get("uid") not in uids | variables:
                            errors.append(f"{dashboard}: panel {panel.get('title')!r} uses data source uid {datasource.get('uid')!r}, provisioned are {sorted(u for u in uids if u)}")

# Rule globs of the evaluator config, relative to its directory as in Prometheus.
evaluator = load("deploy/evaluator.yml") or {}
for pattern in evaluator.get("rule_files") or []:
    if not glob.glob(os.path.join("deploy", pattern)):
        errors.append(f"deploy/evaluator.yml: rule_files entry {pattern!r} matches no file")
    else:
        checked += 1

# Every PromQL expression of the dashboards, as recording rules for promtool to parse.
rules = []
for dashboard in sorted(glob.glob("dashboards/**/*.json", recursive=True)):
    try:
        with open(dashboard, encoding="utf-8") as f:
            board = json.load(f)
    except ValueError:
        continue
    stack = list(board.get("panels") or [])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if expr is None:
                continue
            if "$" in expr:
                errors.append(f"{dashboard}: panel {panel.get('title')!r} uses a Grafana variable in {expr!r}; keep expressions plain PromQL")
            rules.append({"record": f"dashboard_expr_{len(rules)}", "expr": expr})
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump({"groups": [{"name": "dashboard-expressions", "rules": rules}]}, f)

for error in errors:
    print(f"  ERROR {error}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"  {checked} paths checked, {len(rules)} dashboard expressions collected")
PY

echo "== deploy/prometheus.yml"
promtool check config deploy/prometheus.yml

echo "== deploy/alertmanager.yml"
amtool check-config deploy/alertmanager.yml

echo "== dashboard expressions parse as PromQL"
promtool check rules "$work/dashboard-exprs.yml"

if [ -n "${LOOKOUT_BIN:-}" ]; then
  echo "== deploy/exporter.yml"
  "$LOOKOUT_BIN" exporter --config.file deploy/exporter.yml --config.check
fi

echo "validate-compose: OK"
