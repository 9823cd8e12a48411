#!/usr/bin/env bash
# Redis Cluster (3 masters + 3 replicas, 6 redis-server processes) for tests.
#   scripts/services/redis-cluster.sh start STATE_DIR
#   scripts/services/redis-cluster.sh stop  STATE_DIR   # kills all 6, even if some died
# Each node: 127.0.0.1:P (bus port P+10000), dir STATE_DIR/redis-cluster/P,
# cluster-node-timeout 2000 (PUSHPLAT_REDIS_CLUSTER_NODE_TIMEOUT_MS) so a replica
# takes over ~4-5 s after its master is kill -9'ed. start waits until every node reports cluster_state:ok and every
# replica is in sync, then appends to STATE_DIR/env:
#   export PUSHPLAT_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:FIRSTPORT
#   export PUSHPLAT_TEST_REDIS_CLUSTER_NODES=127.0.0.1:P1,...,127.0.0.1:P6
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=6
READY_TIMEOUT=${PUSHPLAT_REDIS_CLUSTER_TIMEOUT:-60}
NODE_TIMEOUT_MS=${PUSHPLAT_REDIS_CLUSTER_NODE_TIMEOUT_MS:-2000}

usage() { die "usage: $0 start|stop STATE_DIR"; }
[[ $# -eq 2 ]] || usage
cmd=$1
STATE=$(abs_state_dir "$2")
DIR=$STATE/redis-cluster

# any_node_alive: succeed if some node of a previous start is still running.
any_node_alive() {
  local pf
  for pf in "$DIR"/*/redis.pid; do
    [[ -f "$pf" ]] && proc_matches "$(cat "$pf")" redis-server && return 0
  done
  return 1
}

# cluster_ready PORT...: every node says cluster_state:ok, knows all nodes, sees 3
# masters with slots, and every replica's link to its master is up.
cluster_ready() {
  local p info masters=0 repl
  for p in "$@"; do
    info=$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null) || return 1
    [[ "$info" == *"cluster_state:ok"* ]] || return 1
    [[ "$info" == *"cluster_known_nodes:$NODES"* ]] || return 1
    [[ "$info" == *"cluster_size:3"* ]] || return 1
    repl=$(redis-cli -h 127.0.0.1 -p "$p" info replication 2>/dev/null) || return 1
    if [[ "$repl" == *"role:master"* ]]; then
      masters=$((masters + 1))
      [[ "$repl" == *"connected_slaves:1"* ]] || return 1
    else
      [[ "$repl" == *"master_link_status:up"* ]] || return 1
    fi
  done
  ((masters == 3))
}

start() {
  ensure_redis "$STATE/apt.log"
  any_node_alive && die "redis cluster already running in $DIR; run: $0 stop $STATE"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  local ports=() p addrs=()
  mapfile -t ports < <(free_cluster_ports "$NODES")
  [[ ${#ports[@]} -eq $NODES ]] || die "could not pick $NODES free port pairs"
  printf '%s\n' "${ports[@]}" >"$DIR/ports"
  for p in "${ports[@]}"; do
    redis_start_instance "$DIR/$p" "$p" \
      "cluster-enabled yes" \
      "cluster-config-file $DIR/$p/nodes.conf" \
      "cluster-node-timeout $NODE_TIMEOUT_MS" \
      "cluster-replica-validity-factor 0" \
      "cluster-announce-ip 127.0.0.1" \
      "repl-diskless-sync-delay 0"
    addrs+=("127.0.0.1:$p")
  done
  log "6 nodes up (${ports[*]}); creating cluster (log: $DIR/create.log)"
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$DIR/create.log" 2>&1; then
    tail_log "$DIR/create.log"
    die "redis-cli --cluster create failed (log: $DIR/create.log)"
  fi
  if ! wait_until "$READY_TIMEOUT" "cluster_state:ok on all $NODES nodes with replicas in sync" \
    cluster_ready "${ports[@]}"; then
    for p in "${ports[@]}"; do
      echo "--- node $p:" >&2
      redis-cli -h 127.0.0.1 -p "$p" cluster info 2>&1 | grep -E 'cluster_state|known_nodes|cluster_size' >&2 || true
    done
    die "redis cluster did not become ready (logs: $DIR/*/redis.log, $DIR/create.log)"
  fi
  append_env "$STATE" PUSHPLAT_TEST_REDIS_CLUSTER_URL "redis+cluster://${addrs[0]}"
  append_env "$STATE" PUSHPLAT_TEST_REDIS_CLUSTER_NODES "$(IFS=,; echo "${addrs[*]}")"
  log "redis cluster ready: $(IFS=,; echo "${addrs[*]}")"
}

stop() {
  local pf rc=0 found=0
  for pf in "$DIR"/*/redis.pid; do
    [[ -e "$pf" ]] || continue
    found=1
    stop_pidfile "$pf" redis-server "cluster node $(basename "$(dirname "$pf")")" 10 || rc=1
  done
  # redis removes its pidfile on a clean shutdown; a node killed -9 leaves a stale one
  # (handled above). Nodes whose pidfile is gone are not running.
  ((found)) || log "redis cluster: no running nodes in $DIR"
  return "$rc"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
