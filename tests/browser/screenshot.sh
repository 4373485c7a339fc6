#!/bin/sh
# Makes docs/status-page.png: runs `lookout up` on a demo outage (tests/browser/demo/),
# waits until the alerts fire (ServerDown has `for: 1m`), and has headless Chromium
# (Debian's `chromium`) take a screenshot of the status page, with the same flags as
# tests/status_page.rs. Loopback only. Run from anywhere:
#
#   tests/browser/screenshot.sh [path/to/lookout]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
lookout=${1:-}
if [ -z "$lookout" ]; then
    (cd "$repo" && cargo build --release --bin lookout)
    lookout="$repo/target/release/lookout"
fi
command -v chromium >/dev/null || { echo "install Debian's chromium" >&2; exit 1; }
work=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The web server that stays up; nothing listens on 29001 (the load balancer is down).
python3 -m http.server 29002 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids="$pids $!"
"$lookout" up --config.dir "$here/demo" \
    --web.listen-address.exporter 127.0.0.1:29115 \
    --web.listen-address.evaluator 127.0.0.1:29095 >"$work/up.out" 2>"$work/up.err" &
pids="$pids $!"

echo "waiting for the alerts to fire (about 80 seconds)..."
tries=0
until [ "$(curl -fsS http://127.0.0.1:29095/api/v1/alerts 2>/dev/null | grep -o '"state":"firing"' | wc -l)" -ge 3 ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
        echo "the alerts did not fire; lookout's log:" >&2
        cat "$work/up.err" >&2
        exit 1
    fi
    sleep 5
done

mkdir -p "$repo/docs"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$work/profile" --window-size=1280,1640 \
    --screenshot="$repo/docs/status-page.png" http://127.0.0.1:29095/ 2>/dev/null
echo "wrote $repo/docs/status-page.png"
