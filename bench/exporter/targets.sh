# Shared by the benches that load `lookout exporter` with many continuous HTTP targets;
# sourced once LOOKOUT, WORK, PIDS and wait_up are defined. Gives:
#   healthy_target PORT      starts a `lookout exporter` without modules on 127.0.0.1:PORT,
#                            whose /-/healthy is the HTTP target, and sets TARGET_URL to it
#   http_2xx_module          prints the module every exporter of these benches loads
#   http_targets N INTERVAL  prints `targets:` with t1..tN on TARGET_URL every INTERVAL
#                            (each its own ?n=, so each is a distinct target)
healthy_target() {
  echo "modules: {}" > "$WORK/healthy-target.yml"
  "$LOOKOUT" --log.level warn exporter --config.file "$WORK/healthy-target.yml" \
    --web.listen-address "127.0.0.1:$1" &
  PIDS+=($!)
  TARGET_URL="http://127.0.0.1:$1/-/healthy"
  wait_up "$TARGET_URL"
}
http_2xx_module() {
  printf 'modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n'
}
http_targets() {
  echo "targets:"
  for i in $(seq -w 1 "$1"); do
    printf '  - {name: t%s, module: http_2xx, target: "%s?n=%s", interval: %s}\n' \
      "$i" "$TARGET_URL" "$i" "$2"
  done
}
