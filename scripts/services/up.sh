#!/usr/bin/env bash
# Start every test service: standalone Redis, a 6-node Redis Cluster, and Kafka (KRaft).
#   scripts/services/up.sh STATE_DIR
# Truncates STATE_DIR/env, then each service appends its export lines; use with
#   source STATE_DIR/env
# On any failure it stops whatever it had started (down.sh) and exits non-zero.
# Typical CI use:
#   state=$(mktemp -d); trap 'scripts/services/down.sh "$state"' EXIT
#   scripts/services/up.sh "$state" && source "$state/env"
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 STATE_DIR"
STATE=$(abs_state_dir "$1")
: >"$STATE/env"

on_exit() {
  local rc=$?
  if ((rc != 0)); then
    log "start-up failed (exit $rc); stopping whatever was started"
    "$HERE/down.sh" "$STATE" || true
  fi
}
trap on_exit EXIT

t0=$SECONDS
"$HERE/kafka.sh" fetch "$STATE" # the only step that needs the network: do it first
"$HERE/redis.sh" start "$STATE"
"$HERE/redis-cluster.sh" start "$STATE"
"$HERE/kafka.sh" start "$STATE"
log "all services up in $((SECONDS - t0))s; env: $STATE/env"
