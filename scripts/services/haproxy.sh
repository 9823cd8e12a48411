#!/usr/bin/env bash
# HAProxy in TCP mode (layer 4) in front of edges' client ports, for tests and local tries.
#   scripts/services/haproxy.sh start STATE_DIR BACKEND...   # BACKEND: host:port of an edge's
#                                                            # client port (--edge-port)
#   scripts/services/haproxy.sh stop  STATE_DIR              # stop it (safe if not running)
# start renders deploy/haproxy/haproxy.cfg.template with a free 127.0.0.1 frontend port,
# starts haproxy in the background, waits until the port accepts, then prints and appends
# `export PUSHPLAT_TEST_HAPROXY_ADDR=127.0.0.1:PORT` to STATE_DIR/env.
# Files: STATE_DIR/haproxy/{haproxy.cfg,haproxy.log,haproxy.pid,port}.
# Installs Debian's haproxy with apt-get when it is missing (and keeps the packaged
# service stopped). Knobs: PUSHPLAT_HAPROXY_CHECK_INTER (health-check interval, default
# 1s), PUSHPLAT_HAPROXY_MAXCONN (default 4096), PUSHPLAT_HAPROXY_START_TIMEOUT (default 15 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEMPLATE=$SERVICES_DIR/../../deploy/haproxy/haproxy.cfg.template
CHECK_INTER=${PUSHPLAT_HAPROXY_CHECK_INTER:-1s}
MAXCONN=${PUSHPLAT_HAPROXY_MAXCONN:-4096}
START_TIMEOUT=${PUSHPLAT_HAPROXY_START_TIMEOUT:-15}

usage() { die "usage: $0 start STATE_DIR HOST:PORT... | stop STATE_DIR"; }
[[ $# -ge 2 ]] || usage
cmd=$1
STATE=$(abs_state_dir "$2")
shift 2
DIR=$STATE/haproxy
CFG=$DIR/haproxy.cfg
PIDFILE=$DIR/haproxy.pid
PROC_PATTERN="haproxy -db -f $CFG"

# ensure_haproxy LOGFILE: install Debian's haproxy if missing; keep its own service
# (which would listen per /etc/haproxy/haproxy.cfg) stopped and disabled.
ensure_haproxy() {
  command -v haproxy >/dev/null && return 0
  apt_install "$1" haproxy
  service haproxy stop >>"$1" 2>&1 || true
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable haproxy >>"$1" 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    update-rc.d haproxy disable >>"$1" 2>&1 || true
  fi
  command -v haproxy >/dev/null || die "haproxy still missing after apt-get install"
}

# render BIND BACKEND...: the template with its placeholders filled in, on stdout.
render() {
  local bind=$1 servers="" i=0 b text
  shift
  for b in "$@"; do
    i=$((i + 1))
    servers+="    server edge$i $b"$'\n'
  done
  text=$(<"$TEMPLATE")
  text=${text//'{{BIND}}'/"$bind"}
  text=${text//'{{CHECK_INTER}}'/"$CHECK_INTER"}
  text=${text//'{{MAXCONN}}'/"$MAXCONN"}
  text=${text//'{{SERVERS}}'/"${servers%$'\n'}"}
  printf '%s\n' "$text"
}

start() {
  (($# >= 1)) || usage
  local b
  for b in "$@"; do
    [[ "$b" =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]] || die "backend '$b' is not HOST:PORT"
  done
  [[ -f "$TEMPLATE" ]] || die "template not found: $TEMPLATE"
  ensure_haproxy "$STATE/apt.log"
  if [[ -f "$PIDFILE" ]] && proc_matches "$(cat "$PIDFILE")" "$PROC_PATTERN"; then
    die "haproxy already running (pid $(cat "$PIDFILE")); run: $0 stop $STATE"
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  local port pid deadline
  port=$(free_port)
  render "127.0.0.1:$port" "$@" >"$CFG"
  if ! haproxy -c -q -f "$CFG" >"$DIR/check.log" 2>&1; then
    tail_log "$DIR/check.log"
    die "haproxy rejected the rendered config $CFG"
  fi
  # -db: stay in the foreground (we background it), logging to stdout -> haproxy.log.
  nohup haproxy -db -f "$CFG" >"$DIR/haproxy.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  log "haproxy starting (pid $pid, 127.0.0.1:$port -> $*)"
  deadline=$((SECONDS + START_TIMEOUT))
  until port_open 127.0.0.1 "$port"; do
    if ! proc_matches "$pid" "$PROC_PATTERN"; then
      tail_log "$DIR/haproxy.log"
      rm -f "$PIDFILE"
      die "haproxy exited during start-up (log: $DIR/haproxy.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$DIR/haproxy.log"
      stop_pidfile "$PIDFILE" "$PROC_PATTERN" haproxy 5 || true
      die "haproxy not accepting on 127.0.0.1:$port after ${START_TIMEOUT}s (log: $DIR/haproxy.log)"
    fi
    sleep 0.1
  done
  echo "$port" >"$DIR/port"
  append_env "$STATE" PUSHPLAT_TEST_HAPROXY_ADDR "127.0.0.1:$port"
  echo "export PUSHPLAT_TEST_HAPROXY_ADDR=127.0.0.1:$port"
  log "haproxy ready on 127.0.0.1:$port (config: $CFG, log: $DIR/haproxy.log)"
}

case "$cmd" in
start) start "$@" ;;
stop)
  (($# == 0)) || usage
  stop_pidfile "$PIDFILE" "$PROC_PATTERN" haproxy 10
  ;;
*) usage ;;
esac
