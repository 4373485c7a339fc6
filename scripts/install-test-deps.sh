#!/usr/bin/env bash
# Installs the real peers Lookout's tests talk to, from Debian's packages: Prometheus and
# promtool, VictoriaMetrics (the other remote engine of tests/remote_engines.rs),
# Alertmanager and amtool, headless Chromium for the status-page test,
# blackbox_exporter (the oracle of the exporter's differential test) with dnsmasq and
# openssl for its loopback DNS server and test certificate. Packages
# already present are left alone, so a second run does nothing.
set -euo pipefail

declare -A provides=(
  [promtool]=prometheus
  [prometheus]=prometheus
  [victoria-metrics]=victoria-metrics
  [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager
  [chromium]=chromium
  [setpriv]=util-linux
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [dnsmasq]=dnsmasq-base
  [openssl]=openssl
)
need=()
for cmd in "${!provides[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("${provides[$cmd]}")
done
[ ${#need[@]} -eq 0 ] && exit 0

mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
