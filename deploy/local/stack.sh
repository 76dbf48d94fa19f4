#!/usr/bin/env bash
# Local Kafka (KRaft, one combined broker+controller node, from Maven Central jars)
# and Redis (Debian's redis-server) on 127.0.0.1, for the demo and the tests.
#
#   stack.sh up      start both (a no-op for whatever already answers)
#   stack.sh down    stop both
#   stack.sh status  print what answers
#   stack.sh registry [PORT]       start a Confluent-compatible schema registry (Apicurio)
#   stack.sh registry-down [PORT]  stop it
#   stack.sh kafka-down    stop only the broker (`up` starts it again on its data)
#   stack.sh redis-down    stop only Redis, dropping its data (`up` starts it empty)
#
# Ports: RILL_LOCAL_KAFKA_PORT (19092), RILL_LOCAL_CONTROLLER_PORT (19093),
# RILL_LOCAL_REDIS_PORT (16379). State lives in .rill/ (git-ignored); the addresses are
# written to .rill/local.env, which the Makefile, the tests and the demo read.
#
# A second, independent instance (the chaos suite's, which it stops and restarts) runs
# with RILL_LOCAL_STATE_DIR set to another directory and the three ports set to others;
# the broker jars are shared (RILL_CACHE_DIR, default .rill/cache).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/deploy/local"
state="${RILL_LOCAL_STATE_DIR:-$root/.rill}"
cache="${RILL_CACHE_DIR:-$root/.rill/cache}"
kafka_port="${RILL_LOCAL_KAFKA_PORT:-19092}"
ctrl_port="${RILL_LOCAL_CONTROLLER_PORT:-19093}"
redis_port="${RILL_LOCAL_REDIS_PORT:-16379}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$state"

log() { printf '[stack] %s\n' "$*" >&2; }

kafka_answers() {
  "$python" - "$kafka_port" <<'PY' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
admin.describe_cluster(request_timeout=3).result(timeout=4)
PY
}

redis_answers() { redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

jars() {
  if [ ! -f "$cache/kafka-lib/.complete" ]; then
    log "resolving the Kafka broker jars from Maven Central (once)"
    rm -rf "$cache/kafka-lib"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$cache/kafka-lib"
    touch "$cache/kafka-lib/.complete"
  fi
}

kafka_up() {
  if kafka_answers; then log "kafka already answers on 127.0.0.1:$kafka_port"; return; fi
  jars
  local dir="$state/kafka"
  mkdir -p "$dir/logs"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$ctrl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Transactions past their timeout are aborted within a second (a test times one out).
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
auto.create.topics.enable=true
log.retention.hours=4
PROPS
  local cp="$cache/kafka-lib/*"
  local jvm=(-Xms256m -Xmx512m -XX:+UseSerialGC -Dkafka.logs.dir="$dir/logs"
    -Dlog4j2.configurationFile="$here/log4j2.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    id=$(java -cp "$cp" "${jvm[@]}" kafka.tools.StorageTool random-uuid)
    java -cp "$cp" "${jvm[@]}" kafka.tools.StorageTool format -t "$id" \
      -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1
  fi
  log "starting kafka on 127.0.0.1:$kafka_port"
  nohup java -cp "$cp" "${jvm[@]}" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 120); do
    if kafka_answers; then log "kafka answers"; return; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      log "kafka exited; last lines of its log:"; tail -n 30 "$dir/logs/stdout.log" "$dir/logs/server.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "kafka did not answer within 120 s"; exit 1
}

redis_up() {
  if redis_answers; then log "redis already answers on 127.0.0.1:$redis_port"; return; fi
  command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server)"; exit 1; }
  local dir="$state/redis"
  mkdir -p "$dir"
  log "starting redis on 127.0.0.1:$redis_port"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  for _ in $(seq 1 50); do redis_answers && { log "redis answers"; return; }; sleep 0.2; done
  log "redis did not answer"; exit 1
}

apicurio_version=3.0.9
registry_jar() {
  local dir="$cache/apicurio"
  local jar="$dir/apicurio-registry-app-$apicurio_version-runner.jar"
  mkdir -p "$dir"
  exec {lock}>"$dir/.lock"
  flock "$lock"  # parallel test workers: one resolves, the others wait for it
  if [ ! -f "$jar" ]; then
    log "resolving Apicurio Registry $apicurio_version from Maven Central (once, ~160 MB)"
    mkdir -p "$dir"
    mvn -q -B dependency:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$apicurio_version:tar.gz:all" \
      -DoutputDirectory="$dir" >&2
    tar -xzf "$dir/apicurio-registry-app-$apicurio_version-all.tar.gz" -C "$dir" >&2
    rm -f "$dir/apicurio-registry-app-$apicurio_version-all.tar.gz"
  fi
  exec {lock}>&-
  echo "$jar"
}

registry_answers() { curl -sf "http://127.0.0.1:$1/apis/ccompat/v7/subjects" >/dev/null 2>&1; }

registry_up() {
  local port="${1:-${RILL_LOCAL_REGISTRY_PORT:-18081}}"
  if registry_answers "$port"; then log "registry already answers on 127.0.0.1:$port"; return; fi
  local jar; jar=$(registry_jar)
  mkdir -p "$state/registry"
  log "starting the schema registry on 127.0.0.1:$port"
  nohup java -Xms64m -Xmx384m -XX:+UseSerialGC -Dquarkus.http.port="$port" \
    -Dquarkus.http.host=127.0.0.1 -jar "$jar" >"$state/registry/$port.log" 2>&1 &
  echo $! >"$state/registry/$port.pid"
  for _ in $(seq 1 120); do
    if registry_answers "$port"; then
      log "registry answers"
      echo "SCHEMA_REGISTRY_URL=http://127.0.0.1:$port/apis/ccompat/v7"
      return
    fi
    sleep 0.5
  done
  log "the registry did not answer within 60 s; its log:"; tail -n 20 "$state/registry/$port.log" >&2
  exit 1
}

write_env() {
  cat >"$state/local.env" <<ENV
KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port
REDIS_URL=redis://127.0.0.1:$redis_port/0
ENV
}

stop_pidfile() {
  local f="$1"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case "${1:-up}" in
  up) redis_up; kafka_up; write_env; cat "$state/local.env" ;;
  registry) registry_up "${2:-}" ;;
  registry-down) stop_pidfile "$state/registry/${2:-${RILL_LOCAL_REGISTRY_PORT:-18081}}.pid" ;;
  kafka-down) stop_pidfile "$state/kafka/pid" ;;
  redis-down) redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true ;;
  down)
    for f in "$state"/registry/*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
    stop_pidfile "$state/kafka/pid"
    redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$state/local.env"; log "stopped" ;;
  status)
    kafka_answers && echo "kafka: up 127.0.0.1:$kafka_port" || echo "kafka: down"
    redis_answers && echo "redis: up 127.0.0.1:$redis_port" || echo "redis: down" ;;
  *) echo "usage: $0 up|down|status|kafka-down|redis-down|registry [PORT]|registry-down [PORT]" >&2; exit 2 ;;
esac
