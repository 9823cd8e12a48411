#!/usr/bin/env bash
# Stop every test service started by up.sh (safe when some or all are not running,
# or when STATE_DIR does not exist; meant for `trap ... EXIT`).
#   scripts/services/down.sh STATE_DIR
# Exits non-zero only if some process could not be killed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 STATE_DIR"
[[ -d "$1" ]] || { log "no state dir $1: nothing to stop"; exit 0; }
rc=0
"$HERE/kafka.sh" stop "$1" || rc=1
"$HERE/redis-cluster.sh" stop "$1" || rc=1
"$HERE/redis.sh" stop "$1" || rc=1
exit "$rc"
