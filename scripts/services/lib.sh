# shellcheck shell=bash
# Shared helpers for scripts/services/*.sh. Source it, do not run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Helpers: log, die, abs_state_dir, append_env, free_port, free_ports N,
# free_cluster_ports N, port_open, wait_for_port, wait_until, proc_matches,
# stop_pidfile, apt_install, ensure_redis, ensure_chromium, ensure_java, ensure_maven, tail_log.

if [[ -n "${_PUSHPLAT_SERVICES_LIB:-}" ]]; then
  return 0
fi
_PUSHPLAT_SERVICES_LIB=1

# shellcheck disable=SC2034 # used by the scripts that source this file
SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[services %s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

die() {
  printf '[services %s] ERROR: %s\n' "$(basename "$0" .sh)" "$*" >&2
  exit 1
}

# tail_log FILE [N]: print the last N lines of FILE to stderr (for error reports).
tail_log() {
  local f=$1 n=${2:-30}
  if [[ -s "$f" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$f" >&2
    tail -n "$n" "$f" >&2 || true
    printf -- '-----\n' >&2
  fi
}

# abs_state_dir DIR: create DIR if needed and print its absolute path.
abs_state_dir() {
  [[ -n "${1:-}" ]] || die "missing STATE_DIR argument"
  mkdir -p "$1" || die "cannot create state dir $1"
  (cd "$1" && pwd -P)
}

# append_env STATE_DIR NAME VALUE: append `export NAME=VALUE` to STATE_DIR/env.
append_env() {
  printf 'export %s=%s\n' "$2" "$3" >>"$1/env"
}

# free_port: print one TCP port on 127.0.0.1 that the kernel says is free now.
free_port() { free_ports 1; }

# free_ports N: print N distinct free loopback ports, one per line (all sockets are
# held open until all N are chosen, so they are distinct).
free_ports() {
  python3 - "${1:-1}" <<'PY'
import socket, sys
n = int(sys.argv[1])
socks = []
try:
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
finally:
    for s in socks:
        s.close()
PY
}

# free_cluster_ports N: print N distinct ports P (one per line) such that P and the
# Redis Cluster bus port P+10000 are both free on 127.0.0.1 and no two chosen ports
# collide with each other's bus ports. Ports are drawn from 20000..55534.
free_cluster_ports() {
  python3 - "${1:-6}" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
held, chosen, used = [], [], set()

def grab(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        return None
    return s

try:
    for _ in range(5000):
        if len(chosen) == n:
            break
        p = random.randrange(20000, 55535)
        if p in used or p + 10000 in used:
            continue
        a = grab(p)
        if a is None:
            continue
        b = grab(p + 10000)
        if b is None:
            a.close()
            continue
        held += [a, b]
        chosen.append(p)
        used.update((p, p + 10000))
    if len(chosen) < n:
        sys.exit("could not find %d free port pairs (p, p+10000)" % n)
    print("\n".join(map(str, chosen)))
finally:
    for s in held:
        s.close()
PY
}

# port_open HOST PORT: succeed if a TCP connection to HOST:PORT is accepted.
port_open() {
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_until TIMEOUT_S DESCRIPTION CMD [ARGS...]: poll CMD (every 0.1 s) until it
# succeeds; return 1 with a clear message when TIMEOUT_S elapses first.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf '[services %s] ERROR: timed out after %ss waiting for %s\n' \
        "$(basename "$0" .sh)" "$timeout" "$what" >&2
      return 1
    fi
    sleep 0.1
  done
}

# wait_for_port HOST PORT TIMEOUT_S: bounded wait until HOST:PORT accepts connections.
wait_for_port() {
  wait_until "$3" "$1:$2 to accept TCP connections" port_open "$1" "$2"
}

# proc_matches PID PATTERN: succeed if PID is alive and its command line contains
# PATTERN (guards against killing an unrelated process that reused a stale pid).
proc_matches() {
  local pid=$1 pat=$2 cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$pat"* ]]
}

# stop_pidfile PIDFILE PATTERN NAME [TERM_TIMEOUT_S]: SIGTERM the process in PIDFILE
# (only if its command line contains PATTERN), wait up to TERM_TIMEOUT_S (default 20),
# then SIGKILL. Removes the pidfile. Succeeds when nothing is running.
stop_pidfile() {
  local pidfile=$1 pat=$2 name=$3 timeout=${4:-20} pid deadline
  if [[ ! -f "$pidfile" ]]; then
    log "$name: no pidfile ($pidfile), not running"
    return 0
  fi
  pid=$(tr -dc '0-9' <"$pidfile" || true)
  if ! proc_matches "$pid" "$pat"; then
    log "$name: not running (stale pidfile, pid ${pid:-?})"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  local killed=0
  while proc_matches "$pid" "$pat"; do
    if ((SECONDS >= deadline)); then
      if ((killed)); then
        printf '[services %s] ERROR: %s pid %s survived SIGKILL for 10s\n' \
          "$(basename "$0" .sh)" "$name" "$pid" >&2
        return 1
      fi
      log "$name: pid $pid still alive ${timeout}s after SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
      deadline=$((SECONDS + 10))
    fi
    sleep 0.1
  done
  rm -f "$pidfile"
  log "$name: stopped (pid $pid)"
}

_APT_UPDATED=0
# apt_install LOGFILE PKG...: apt-get update (once per process) and install PKGs.
apt_install() {
  local logfile=$1
  shift
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $* (or install them by hand)"
  log "installing $* with apt-get (log: $logfile)"
  if ((_APT_UPDATED == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$logfile" 2>&1 ||
      { tail_log "$logfile"; die "apt-get update failed"; }
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$logfile" 2>&1 ||
    { tail_log "$logfile"; die "apt-get install $* failed"; }
}

# ensure_redis LOGFILE: make sure redis-server and redis-cli exist; install them from
# Debian if missing, and keep Debian's own redis service (port 6379) stopped.
ensure_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    return 0
  fi
  apt_install "$1" redis-server redis-tools
  # apt may start the packaged service on 6379; we only run our own instances.
  service redis-server stop >>"$1" 2>&1 || true
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable redis-server >>"$1" 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    update-rc.d redis-server disable >>"$1" 2>&1 || true
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    die "redis-server/redis-cli still missing after apt-get install"
  fi
}

# ensure_chromium LOGFILE: Debian's chromium and chromium-driver (/usr/bin/chromium,
# /usr/bin/chromedriver) for the browser tests. Never a browser downloaded by a test tool.
ensure_chromium() {
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    return 0
  fi
  apt_install "$1" chromium chromium-driver
  [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || die "chromium/chromedriver still missing after apt-get install"
}

# ensure_java LOGFILE: make sure a Java runtime (17+) is on PATH.
ensure_java() {
  command -v java >/dev/null || apt_install "$1" openjdk-17-jre-headless
  command -v java >/dev/null || die "java not found after install"
}

# ensure_maven LOGFILE: make sure mvn is on PATH.
ensure_maven() {
  command -v mvn >/dev/null || apt_install "$1" maven
  command -v mvn >/dev/null || die "mvn not found after install"
}

# redis_start_instance DIR PORT [EXTRA_CONF_LINE...]: write DIR/redis.conf and start a
# daemonized redis-server bound to 127.0.0.1:PORT (no persistence; pidfile
# DIR/redis.pid, log DIR/redis.log), then wait until it answers PING.
redis_start_instance() {
  local dir=$1 port=$2 line
  shift 2
  mkdir -p "$dir"
  {
    echo "bind 127.0.0.1"
    echo "port $port"
    echo "daemonize yes"
    echo "pidfile $dir/redis.pid"
    echo "logfile $dir/redis.log"
    echo "dir $dir"
    echo 'save ""'
    echo "appendonly no"
    for line in "$@"; do echo "$line"; done
  } >"$dir/redis.conf"
  redis-server "$dir/redis.conf" >>"$dir/redis.log" 2>&1 ||
    { tail_log "$dir/redis.log"; die "redis-server on port $port failed to start"; }
  if ! wait_until "${PUSHPLAT_REDIS_START_TIMEOUT:-15}" "redis on 127.0.0.1:$port to answer PING" \
    redis_ping "$port"; then
    tail_log "$dir/redis.log"
    die "redis-server on port $port did not come up (log: $dir/redis.log)"
  fi
  wait_until 5 "pidfile $dir/redis.pid" test -s "$dir/redis.pid" ||
    die "redis-server on port $port wrote no pidfile"
}

# redis_ping PORT: succeed if redis on 127.0.0.1:PORT answers PONG.
redis_ping() {
  [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
}
