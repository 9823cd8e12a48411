#!/usr/bin/env bash
# Standalone Redis for tests.
#   scripts/services/redis.sh start STATE_DIR   # start on a free 127.0.0.1 port
#   scripts/services/redis.sh stop  STATE_DIR   # stop it (safe if not running)
#   scripts/services/redis.sh restart STATE_DIR # stop, then start on the same port, empty
# start appends `export PUSHPLAT_TEST_REDIS_URL=redis://127.0.0.1:PORT/0` to
# STATE_DIR/env. Data/log/pidfile live in STATE_DIR/redis (no persistence).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { die "usage: $0 start|stop|restart STATE_DIR"; }
[[ $# -eq 2 ]] || usage
cmd=$1
STATE=$(abs_state_dir "$2")
DIR=$STATE/redis

case "$cmd" in
start)
  ensure_redis "$STATE/apt.log"
  if [[ -f "$DIR/redis.pid" ]] && proc_matches "$(cat "$DIR/redis.pid")" redis-server; then
    die "redis already running (pid $(cat "$DIR/redis.pid")); run: $0 stop $STATE"
  fi
  rm -rf "$DIR"
  port=$(free_port)
  redis_start_instance "$DIR" "$port"
  echo "$port" >"$DIR/port"
  append_env "$STATE" PUSHPLAT_TEST_REDIS_URL "redis://127.0.0.1:$port/0"
  log "redis up on 127.0.0.1:$port (pid $(cat "$DIR/redis.pid"))"
  ;;
stop)
  stop_pidfile "$DIR/redis.pid" redis-server redis
  ;;
restart)
  # A restart without persistence (save "", appendonly no): the same port, no data.
  [[ -f "$DIR/port" ]] || die "redis was never started in $STATE; run: $0 start $STATE"
  stop_pidfile "$DIR/redis.pid" redis-server redis
  redis_start_instance "$DIR" "$(cat "$DIR/port")"
  log "redis restarted on 127.0.0.1:$(cat "$DIR/port") (pid $(cat "$DIR/redis.pid")), empty"
  ;;
*) usage ;;
esac
