#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for tests, built from
# Maven Central jars (no tarball download).
#   scripts/services/kafka.sh fetch STATE_DIR  # jars -> $PUSHPLAT_CACHE_DIR/kafka-VER/libs
#   scripts/services/kafka.sh start STATE_DIR  # fetch if needed, format, start, wait ready
#   scripts/services/kafka.sh stop  STATE_DIR  # SIGTERM, bounded wait, then SIGKILL
#   scripts/services/kafka.sh restart STATE_DIR  # stop, then start again: same port, same data
# start appends `export PUSHPLAT_TEST_KAFKA_URL=kafka://127.0.0.1:PORT` to STATE_DIR/env.
# Files: STATE_DIR/kafka/{server.properties,server.log,stdout.log,format.log,fetch.log,
# kafka.pid,port,data/}.
# Knobs: PUSHPLAT_CACHE_DIR (default ~/.cache/pushplat), PUSHPLAT_KAFKA_VERSION
# (default 4.1.1), PUSHPLAT_KAFKA_START_TIMEOUT (default 90 s),
# PUSHPLAT_KAFKA_JAVA_OPTS (default -Xmx512m -Xms128m).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=${PUSHPLAT_KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=2.24.3 # the log4j2 line Kafka 4.1 ships with; binds its slf4j 1.7 API
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
CACHE=${PUSHPLAT_CACHE_DIR:-$HOME/.cache/pushplat}/kafka-$KAFKA_VERSION
LIBS=$CACHE/libs
START_TIMEOUT=${PUSHPLAT_KAFKA_START_TIMEOUT:-90}
read -r -a JAVA_OPTS <<<"${PUSHPLAT_KAFKA_JAVA_OPTS:--Xmx512m -Xms128m}"

usage() { die "usage: $0 fetch|start|stop|restart STATE_DIR"; }
[[ $# -eq 2 ]] || usage
cmd=$1
STATE=$(abs_state_dir "$2")
DIR=$STATE/kafka
PIDFILE=$DIR/kafka.pid
PROC_PATTERN="kafka.Kafka $DIR/server.properties"

fetched() { [[ -f "$CACHE/.complete" ]] && compgen -G "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; }

fetch() {
  mkdir -p "$DIR" "$CACHE"
  if fetched; then
    log "kafka $KAFKA_VERSION jars already in $LIBS"
    return 0
  fi
  ensure_maven "$STATE/apt.log"
  ensure_java "$STATE/apt.log"
  local lock=$CACHE/.lock tmp start=$SECONDS
  exec {lockfd}>"$lock"
  flock -w 600 "$lockfd" || die "timed out waiting for another fetch ($lock)"
  if fetched; then # another process fetched while we waited
    exec {lockfd}>&-
    return 0
  fi
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  cat >"$tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>pushplat.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  log "fetching kafka $KAFKA_VERSION jars with Maven (log: $DIR/fetch.log)"
  if ! (cd "$tmp" && mvn -B -q "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs") >"$DIR/fetch.log" 2>&1; then
    rm -rf "$tmp"
    exec {lockfd}>&-
    tail_log "$DIR/fetch.log"
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $DIR/fetch.log)"
  fi
  rm -rf "$LIBS"
  mv "$tmp/libs" "$LIBS"
  rm -rf "$tmp"
  touch "$CACHE/.complete"
  exec {lockfd}>&-
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars into $LIBS in $((SECONDS - start))s"
}

# new_cluster_id: a random Kafka cluster id (base64url UUID, 22 chars). Like Kafka's
# own Uuid.randomUuid() it never starts with '-', which argparse4j would take for a flag.
new_cluster_id() {
  python3 - <<'PY'
import base64, uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not cid.startswith("-"):
        print(cid)
        break
PY
}

start() {
  ensure_java "$STATE/apt.log"
  fetched || fetch
  if [[ -f "$PIDFILE" ]] && proc_matches "$(cat "$PIDFILE")" "$PROC_PATTERN"; then
    die "kafka already running (pid $(cat "$PIDFILE")); run: $0 stop $STATE"
  fi
  rm -rf "$DIR/data" "$PIDFILE" "$DIR/server.log" "$DIR/stdout.log"
  mkdir -p "$DIR/data"
  local ports bport cport t0=$SECONDS
  mapfile -t ports < <(free_ports 2)
  bport=${ports[0]}
  cport=${ports[1]}
  cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cat >"$DIR/log4j2.properties" <<L4J
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $DIR/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
L4J
  local JVM
  jvm_args
  if ! java "${JVM[@]}" kafka.tools.StorageTool format --cluster-id="$(new_cluster_id)" \
    --config "$DIR/server.properties" --standalone >"$DIR/format.log" 2>&1; then
    tail_log "$DIR/format.log"
    die "kafka storage format failed (log: $DIR/format.log)"
  fi
  launch "$bport"
  echo "$bport" >"$DIR/port"
  append_env "$STATE" PUSHPLAT_TEST_KAFKA_URL "kafka://127.0.0.1:$bport"
  log "kafka ready on 127.0.0.1:$bport in $((SECONDS - t0))s"
}

# jvm_args: the JVM options and classpath of every Kafka process (into the array JVM).
jvm_args() {
  # log4j must not shut down before Kafka's own shutdown hook has logged its last lines
  JVM=("${JAVA_OPTS[@]}" -Djava.awt.headless=true -Dlog4j2.shutdownHookEnabled=false
    "-Dlog4j2.configurationFile=$DIR/log4j2.properties" "-Dkafka.logs.dir=$DIR"
    -cp "$LIBS/*")
}

# launch BROKER_PORT: start the broker on the formatted data dir and wait until it serves.
launch() {
  local bport=$1 pid deadline JVM
  jvm_args
  nohup java "${JVM[@]}" kafka.Kafka "$DIR/server.properties" \
    >>"$DIR/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  log "kafka $KAFKA_VERSION starting (pid $pid, broker 127.0.0.1:$bport)"
  deadline=$((SECONDS + START_TIMEOUT))
  until port_open 127.0.0.1 "$bport" &&
    python3 "$SERVICES_DIR/kafka_probe.py" 127.0.0.1 "$bport" >>"$DIR/probe.log" 2>&1; do
    if ! proc_matches "$pid" "$PROC_PATTERN"; then
      tail_log "$DIR/stdout.log"
      tail_log "$DIR/server.log"
      rm -f "$PIDFILE"
      die "kafka exited during start-up (logs: $DIR/server.log, $DIR/stdout.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$DIR/server.log"
      stop_pidfile "$PIDFILE" "$PROC_PATTERN" kafka 10 || true
      die "kafka not ready after ${START_TIMEOUT}s (logs: $DIR/server.log, $DIR/probe.log)"
    fi
    sleep 0.2
  done
}

# restart: stop the broker and start it again on the same port and data (its topics,
# records and committed offsets survive, as with a real broker restart).
restart() {
  [[ -f "$DIR/port" ]] || die "kafka was never started in $STATE; run: $0 start $STATE"
  stop_pidfile "$PIDFILE" "$PROC_PATTERN" kafka 30
  local t0=$SECONDS
  launch "$(cat "$DIR/port")"
  log "kafka restarted on 127.0.0.1:$(cat "$DIR/port") in $((SECONDS - t0))s"
}

case "$cmd" in
fetch) fetch ;;
start) start ;;
stop) stop_pidfile "$PIDFILE" "$PROC_PATTERN" kafka 30 ;;
restart) restart ;;
*) usage ;;
esac
