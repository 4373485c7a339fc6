# Shared by the bench scripts that start programs side by side; sourced after HERE and ROOT
# are set. Gives LOOKOUT (LOOKOUT_BIN or the release build), a scratch directory WORK
# removed on exit, PIDS (every process started, stopped on exit or by stop_all), and:
#   need CMD...       exits unless every command is on PATH
#   build_lookout     builds the release binary unless LOOKOUT_BIN names one
#   ports_free PORT...  exits if something already listens there (it would be measured)
#   wait_up URL       waits up to a minute for URL to answer
LOOKOUT=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout}
WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
need() {
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || { echo "needs $cmd" >&2; exit 1; }
  done
}
build_lookout() {
  if [ -z "${LOOKOUT_BIN:-}" ]; then
    echo "building lookout (release)..." >&2
    (cd "$ROOT" && cargo build --release --locked --bin lookout --quiet)
  fi
}
ports_free() {
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port $p is in use: set PORT_BASE to a free range" >&2; exit 1
    fi
  done
}
wait_up() {
  for _ in $(seq 1 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not reachable: $1" >&2; exit 1
}
