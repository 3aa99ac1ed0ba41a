#!/usr/bin/env bash
# scripts/services.sh: install, start and control the services that the integration
# tests of this repository run against, on 127.0.0.1, without Docker:
#
#   PostgreSQL   127.0.0.1:5432   Debian package, cluster "main", role/db reliable/reliable
#   Redis        127.0.0.1:6379   Debian package, own daemon (state in $STATE/redis)
#   RabbitMQ     127.0.0.1:5672   Debian package, management on 127.0.0.1:15672,
#                                 rabbitmq_consistent_hash_exchange, user reliable/reliable
#   Kafka        127.0.0.1:19092,19093,19094   Apache Kafka (KRaft) from Maven Central jars,
#                                 three combined broker+controller nodes (ids 1,2,3),
#                                 controllers on 19192..19194, RF 3, min.insync.replicas=2;
#                                 version 4.4.0 (default) or 3.9.1, see RELIABLE_KAFKA_VERSION
#
# Usage: scripts/services.sh COMMAND [ARGS]
#   up                  install what is missing, start everything, wait, write the env file
#   down                stop everything that up started
#   status              show what runs
#   env                 print the endpoints as `export KEY='value'` lines
#   kafka-stop N        SIGTERM broker N (controlled shutdown), wait until it exited
#   kafka-kill N        SIGKILL broker N, wait until it is gone
#   kafka-start N       start broker N (no-op when it runs), wait until its port answers
#   kafka-wait          wait until all three brokers are registered in the cluster
#   kafka-start-all     start every broker that is not running, all at once (after a kill
#                       of all: one at a time, the first never finds a quorum), and wait
#                       until all are registered; keeps the state folder's version/ports
#   kafka-purge         stop Kafka and delete its data (jars stay cached)
#   kafka-up            only the Kafka part of `up` (start or switch the cluster, write
#                       the env file); leaves PostgreSQL, Redis and RabbitMQ alone
#   kafka-version       print the Kafka version of the cluster in the state folder
#   rabbitmq-stop | rabbitmq-start | rabbitmq-restart
#                       stop/start the whole RabbitMQ server (Erlang VM included)
#   postgres-restart [PORT]
#                       restart the local PostgreSQL cluster listening on PORT (default
#                       5432) with a fast shutdown (every session is cut, the replication
#                       connections included) and wait until it accepts connections;
#                       exits 3 when no local cluster listens on PORT
#
# State (jars, Kafka data and logs, pid files, Redis data) lives in $RELIABLE_SERVICES_DIR
# (default /var/cache/reliable, outside the work tree so several clones share one set of
# services and the jars are downloaded once per machine). The endpoints are also written
# to $RELIABLE_ENV_FILE (default <repo>/.cache/services.env, git-ignored), which
# internal/testenv and the Makefile read.
#
# Kafka settings, read by `up` and `kafka-up` only (the other commands act on the cluster
# the state folder holds, whose version and ports are recorded there):
#   RELIABLE_KAFKA_VERSION    4.4.0 (default) or 3.9.1: the jars come from
#                             internal/testenv/kafka/pom-<version>.xml. When the state
#                             folder holds a cluster of another version (or other ports),
#                             `up` kills it, deletes its data (a 4.x cluster's metadata
#                             cannot go back to 3.9, and an upgraded one would not be the
#                             3.9 cluster asked for) and starts a fresh one. Jars are cached
#                             per version in $RELIABLE_SERVICES_DIR/kafka-jars, so switching
#                             back and forth downloads nothing. The version and port base
#                             are recorded in <state>/kafka/version and port-base (a cluster
#                             without them predates the switch: 3.9.1 on 19092), and written
#                             to the env file as RELIABLE_KAFKA_CLUSTER_VERSION (not
#                             RELIABLE_KAFKA_VERSION, so that sourcing the env file does not
#                             pin the next `up` to the version running now).
#   RELIABLE_KAFKA_PORT_BASE  port of broker 1 (default 19092); broker N listens on
#                             BASE+N-1, its controller on BASE+100+N-1. With another
#                             RELIABLE_SERVICES_DIR this runs a second cluster beside the
#                             first (e.g. to try a version without disturbing tests).
#
# Facts learned while writing this (Debian 12 machine, gVisor sandbox):
# - PID 1 is not systemd; `service`/init.d scripts and pg_ctlcluster work, and
#   /usr/sbin/policy-rc.d (exit 101) keeps apt from starting services on install.
# - RabbitMQ 3.10.8 starts with /etc/init.d/rabbitmq-server (start-stop-daemon + rabbitmqctl
#   wait); a full stop+start (rabbitmq-restart) takes 15-18 s, `rabbitmqctl stop_app/start_app` ~7 s.
#   NODENAME=rabbit@localhost avoids depending on the host name.
# - Kafka runs from `mvn dependency:copy-dependencies` of org.apache.kafka:kafka_2.13 (see
#   internal/testenv/kafka/pom-<version>.xml); main classes kafka.tools.StorageTool
#   (format) and kafka.Kafka (node) in both 3.9 and 4.4. BrokerApiVersionsCommand lists
#   the registered (unfenced) brokers and serves as the cluster health check: in 3.9 it is
#   kafka.admin.BrokerApiVersionsCommand in the broker jar, in 4.x
#   org.apache.kafka.tools.BrokerApiVersionsCommand in kafka-tools (added to the 4.4 pom).
# - 3.9.1 logs through slf4j 1.7 + reload4j (-Dlog4j.configuration=file:log4j.properties);
#   4.4.0 through slf4j 2 + log4j2 (-Dlog4j2.configurationFile=log4j2.properties). 4.4's
#   pom resolves slf4j-api 1.7.36 unless 2.0.x is pinned: the broker then logs nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${RELIABLE_SERVICES_DIR:-/var/cache/reliable}
ENV_FILE=${RELIABLE_ENV_FILE:-$ROOT/.cache/services.env}
KAFKA_SRC=$ROOT/internal/testenv/kafka
KAFKA_DEFAULT_VERSION=4.4.0
# What `up` asks for; KAFKA_VERSION and KAFKA_PORT_BASE are what the commands act on
# (kafka_load_state sets them from the state folder).
KAFKA_WANT_VERSION=${RELIABLE_KAFKA_VERSION:-$KAFKA_DEFAULT_VERSION}
KAFKA_WANT_PORT_BASE=${RELIABLE_KAFKA_PORT_BASE:-19092}
KAFKA_VERSION=$KAFKA_WANT_VERSION
KAFKA_PORT_BASE=$KAFKA_WANT_PORT_BASE

KAFKA_DIR=$STATE/kafka
KAFKA_JARS=$STATE/kafka-jars
KAFKA_IDS=(1 2 3)
KAFKA_HEAP=${RELIABLE_KAFKA_HEAP:-"-Xms128m -Xmx512m"}
PG_USER=reliable PG_PASSWORD=reliable PG_DB=reliable PG_PORT=5432
RABBIT_USER=reliable RABBIT_PASSWORD=reliable
REDIS_PORT=6379

log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

broker_port() { echo $((KAFKA_PORT_BASE + $1 - 1)); }
controller_port() { echo $((KAFKA_PORT_BASE + 100 + $1 - 1)); }
kafka_nodes() {
  local id out=""
  for id in "${KAFKA_IDS[@]}"; do out+="${out:+,}$id@127.0.0.1:$(broker_port "$id")"; done
  echo "$out"
}
kafka_brokers() {
  local id out=""
  for id in "${KAFKA_IDS[@]}"; do out+="${out:+,}127.0.0.1:$(broker_port "$id")"; done
  echo "$out"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.5 s until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

APT_UPDATED=0
# apt_install PKG...: install the missing ones; `apt-get update` only if one is not found.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/reliable-apt.log 2>&1; then
    if ((APT_UPDATED == 0)); then
      APT_UPDATED=1
      log "apt-get update (a package was not found)"
      apt-get update -q >/tmp/reliable-apt.log 2>&1 || { cat /tmp/reliable-apt.log >&2; die "apt-get update failed"; }
      apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/reliable-apt.log 2>&1 ||
        { tail -30 /tmp/reliable-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
    else
      tail -30 /tmp/reliable-apt.log >&2; die "apt-get install ${missing[*]} failed"
    fi
  fi
}

require_root() { [[ $(id -u) == 0 ]] || die "run as root (installs packages and starts system services)"; }

# ---------------------------------------------------------------- PostgreSQL

pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1; }

pg_psql() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"; }

postgres_up() {
  command -v pg_ctlcluster >/dev/null && [[ -n $(pg_version) ]] || apt_install postgresql
  local v; v=$(pg_version)
  [[ -n $v ]] || die "no PostgreSQL server found after install"
  if ! pg_lsclusters -h | awk -v v="$v" '$1==v && $2=="main"' | grep -q .; then
    log "postgres: creating cluster $v/main"
    pg_createcluster "$v" main --port "$PG_PORT" >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$v" '$1==v && $2=="main" && $4=="online"' | grep -q .; then
    log "postgres: starting cluster $v/main"
    pg_ctlcluster "$v" main start 9>&-
  fi
  wait_for 60 "postgres on 127.0.0.1:$PG_PORT" pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
  # Role, database and a connection limit that fits parallel test packages. Fast path:
  # one psql round trip when everything is already in place.
  local ok
  ok=$(pg_psql -At -c "SELECT (SELECT count(*) FROM pg_roles WHERE rolname='$PG_USER' AND rolreplication)::text
        || (SELECT count(*) FROM pg_database WHERE datname='$PG_DB')::text
        || (current_setting('max_connections')::int >= 300
            AND current_setting('wal_level') = 'logical')::text")
  if [[ $ok != 11true ]]; then
    log "postgres: creating role/database $PG_USER/$PG_DB"
    pg_psql <<SQL
DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
  -- REPLICATION: the log-reading outbox relay opens a replication connection.
  ALTER ROLE $PG_USER REPLICATION;
END\$\$;
SQL
    if [[ $(pg_psql -At -c "SELECT count(*) FROM pg_database WHERE datname='$PG_DB'") == 0 ]]; then
      pg_psql -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi
    # wal_level=logical: the outbox relay's log-reading mode (outbox.ModeLog) reads
    # committed rows from a logical replication slot. max_slot_wal_keep_size caps the
    # WAL an abandoned slot can retain (the slot is then invalidated and the relay
    # falls back to polling), so a test left running cannot fill the disk.
    if [[ $(pg_psql -At -c "SELECT current_setting('max_connections')::int >= 300
          AND current_setting('wal_level') = 'logical'") != t ]]; then
      pg_psql -c "ALTER SYSTEM SET max_connections = 300"
      pg_psql -c "ALTER SYSTEM SET wal_level = logical"
      pg_psql -c "ALTER SYSTEM SET max_replication_slots = 20"
      pg_psql -c "ALTER SYSTEM SET max_wal_senders = 20"
      pg_psql -c "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'"
      log "postgres: restarting for max_connections=300, wal_level=logical"
      pg_ctlcluster "$v" main restart 9>&-
      wait_for 60 "postgres on 127.0.0.1:$PG_PORT" pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
    fi
  fi
  PGPASSWORD=$PG_PASSWORD psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -c 'SELECT 1' >/dev/null ||
    die "postgres: cannot log in as $PG_USER over TCP"
}

# postgres_restart PORT: `pg_ctlcluster ... restart -m fast` of the cluster on PORT (a
# fast shutdown rolls back open transactions and ends every backend, as a database
# restart or failover looks from the clients), then wait for pg_isready.
postgres_restart() {
  local port=${1:-$PG_PORT} v name
  [[ $port =~ ^[0-9]+$ ]] || die "postgres-restart: bad port '$port'"
  command -v pg_lsclusters >/dev/null || { log "postgres: no pg_lsclusters: not a local Debian cluster"; exit 3; }
  read -r v name < <(pg_lsclusters -h | awk -v p="$port" '$3==p {print $1, $2; exit}') || true
  [[ -n ${v:-} ]] || { log "postgres: no local cluster listens on port $port"; exit 3; }
  log "postgres: restarting cluster $v/$name (port $port, fast shutdown)"
  pg_ctlcluster "$v" "$name" restart -m fast 9>&-
  wait_for 60 "postgres on 127.0.0.1:$port" pg_isready -q -h 127.0.0.1 -p "$port"
}

postgres_down() {
  local v; v=$(pg_version)
  [[ -n $v ]] && command -v pg_ctlcluster >/dev/null || return 0
  if pg_lsclusters -h | awk -v v="$v" '$1==v && $2=="main" && $4=="online"' | grep -q .; then
    log "postgres: stopping"
    pg_ctlcluster "$v" main stop
  fi
}

# ---------------------------------------------------------------- Redis

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
  command -v redis-server >/dev/null || apt_install redis-server
  if redis_ping; then return 0; fi
  log "redis: starting"
  mkdir -p "$STATE/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" \
    --save '' --appendonly yes --appendfsync everysec --protected-mode yes 9>&-
  wait_for 30 "redis on 127.0.0.1:$REDIS_PORT" redis_ping
}

redis_down() {
  command -v redis-cli >/dev/null || return 0
  if redis_ping; then
    log "redis: stopping"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 20))
    while redis_ping && ((SECONDS < deadline)); do sleep 0.2; done
  fi
}

# ---------------------------------------------------------------- RabbitMQ

rabbit_mgmt_ok() {
  curl -fsS -m 3 -u "$RABBIT_USER:$RABBIT_PASSWORD" http://127.0.0.1:15672/api/whoami 2>/dev/null | grep -q administrator
}

rabbit_configure() {
  mkdir -p /etc/rabbitmq
  local env_conf='# Written by reliable-go scripts/services.sh: a test broker on loopback only.
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"'
  local conf='# Written by reliable-go scripts/services.sh: a test broker on loopback only.
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672'
  local changed=0
  if [[ $(cat /etc/rabbitmq/rabbitmq-env.conf 2>/dev/null) != "$env_conf" ]]; then
    printf '%s\n' "$env_conf" >/etc/rabbitmq/rabbitmq-env.conf; changed=1
  fi
  if [[ $(cat /etc/rabbitmq/rabbitmq.conf 2>/dev/null) != "$conf" ]]; then
    printf '%s\n' "$conf" >/etc/rabbitmq/rabbitmq.conf; changed=1
  fi
  local plugins='[rabbitmq_consistent_hash_exchange,rabbitmq_management].'
  if [[ $(cat /etc/rabbitmq/enabled_plugins 2>/dev/null) != "$plugins" ]]; then
    printf '%s\n' "$plugins" >/etc/rabbitmq/enabled_plugins
    chown rabbitmq:rabbitmq /etc/rabbitmq/enabled_plugins 2>/dev/null || true
    changed=1
  fi
  echo "$changed"
}

rabbit_running() { /etc/init.d/rabbitmq-server status >/dev/null 2>&1; }

rabbit_start() {
  if ! rabbit_running; then
    log "rabbitmq: starting"
    /etc/init.d/rabbitmq-server start >/dev/null 9>&- || {
      tail -30 /var/log/rabbitmq/rabbit@localhost.log >&2 2>/dev/null || true
      die "rabbitmq-server did not start"
    }
  fi
  wait_for 90 "rabbitmq AMQP on 127.0.0.1:5672" port_open 5672
  wait_for 90 "rabbitmq management on 127.0.0.1:15672" port_open 15672
  rabbit_heal
}

# RabbitMQ 3.10's dead-letter supervisor of quorum queues (rabbit_fifo_dlx_sup)
# can reach its restart intensity at boot when quorum queues with at-least-once
# dead-lettering are deleted while the node starts (queues tests deleted around a
# restart), and then stays down: every later declare of such a queue fails with
# 541 INTERNAL_ERROR (compare rabbitmq-server issue 16652). A restart heals it;
# check after every start and restart up to twice.
rabbit_dlx_ok() {
  local pid
  pid=$(rabbitmqctl -q eval 'erlang:whereis(rabbit_fifo_dlx_sup).' 2>/dev/null) || return 1
  [[ $pid == "<"* ]]
}

rabbit_heal() {
  local try
  for try in 1 2; do
    rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
    rabbit_dlx_ok && return 0
    log "rabbitmq: quorum-queue dead-letter supervisor is down (RabbitMQ 3.10 boot bug), restarting (try $try)"
    /etc/init.d/rabbitmq-server stop >/dev/null || true
    local deadline=$((SECONDS + 30))
    while port_open 5672 && ((SECONDS < deadline)); do sleep 0.3; done
    /etc/init.d/rabbitmq-server start >/dev/null 9>&- || die "rabbitmq-server did not start"
    wait_for 90 "rabbitmq AMQP on 127.0.0.1:5672" port_open 5672
    wait_for 90 "rabbitmq management on 127.0.0.1:15672" port_open 15672
  done
  rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
  rabbit_dlx_ok || die "rabbitmq: quorum-queue dead-letter supervisor still down after restarts"
}

rabbit_stop() {
  if rabbit_running; then
    log "rabbitmq: stopping"
    /etc/init.d/rabbitmq-server stop >/dev/null || true
  fi
  local deadline=$((SECONDS + 30))
  while port_open 5672 && ((SECONDS < deadline)); do sleep 0.3; done
}

rabbitmq_up() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  command -v curl >/dev/null || apt_install curl
  local changed; changed=$(rabbit_configure)
  if [[ $changed == 1 ]] && rabbit_running; then
    log "rabbitmq: configuration changed, restarting"
    rabbit_stop
  fi
  rabbit_start
  if ! rabbit_mgmt_ok; then
    log "rabbitmq: creating user $RABBIT_USER"
    rabbitmqctl -q await_startup --timeout 60 >/dev/null
    rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$RABBIT_USER" ||
      rabbitmqctl -q add_user "$RABBIT_USER" "$RABBIT_PASSWORD" >/dev/null
    rabbitmqctl -q set_user_tags "$RABBIT_USER" administrator >/dev/null
    rabbitmqctl -q set_permissions -p / "$RABBIT_USER" '.*' '.*' '.*' >/dev/null
    wait_for 60 "rabbitmq management API as $RABBIT_USER" rabbit_mgmt_ok
  fi
}

rabbitmq_down() {
  [[ -x /etc/init.d/rabbitmq-server ]] || return 0
  rabbit_stop
}

# ---------------------------------------------------------------- Kafka

# kafka_load_state sets KAFKA_VERSION and KAFKA_PORT_BASE from the cluster the state
# folder holds. A folder with a cluster but no recorded version was written before the
# version switch existed: it is the 3.9.1 cluster on the default ports.
kafka_load_state() {
  if [[ -s $KAFKA_DIR/version ]]; then
    KAFKA_VERSION=$(cat "$KAFKA_DIR/version")
    KAFKA_PORT_BASE=$(cat "$KAFKA_DIR/port-base" 2>/dev/null || echo 19092)
  elif [[ -s $KAFKA_DIR/cluster.id ]]; then
    KAFKA_VERSION=3.9.1 KAFKA_PORT_BASE=19092
  else
    KAFKA_VERSION=$KAFKA_WANT_VERSION KAFKA_PORT_BASE=$KAFKA_WANT_PORT_BASE
  fi
  kafka_check_version "$KAFKA_VERSION"
}

kafka_check_version() {
  [[ -f $KAFKA_SRC/pom-$1.xml ]] ||
    die "kafka: no $KAFKA_SRC/pom-$1.xml for version '$1' (have: $(cd "$KAFKA_SRC" && ls pom-*.xml | sed 's/^pom-//; s/\.xml$//' | paste -sd' '))"
  [[ $KAFKA_WANT_PORT_BASE =~ ^[0-9]+$ ]] && ((KAFKA_WANT_PORT_BASE > 1024 && KAFKA_WANT_PORT_BASE < 65400)) ||
    die "kafka: RELIABLE_KAFKA_PORT_BASE must be a port number (got '$KAFKA_WANT_PORT_BASE')"
}

kafka_major() { echo "${KAFKA_VERSION%%.*}"; }

# kafka_libs_dir: the jar cache of KAFKA_VERSION, named by its pom's hash so an edited
# pom downloads afresh.
kafka_libs_dir() {
  local pom=$KAFKA_SRC/pom-$KAFKA_VERSION.xml
  [[ -f $pom ]] || die "missing $pom"
  echo "$KAFKA_JARS/$KAFKA_VERSION-$(sha256sum "$pom" | cut -c1-12)"
}

kafka_fetch() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  local libs; libs=$(kafka_libs_dir)
  if [[ ! -f $libs/.complete ]]; then
    command -v mvn >/dev/null || apt_install maven
    log "kafka: downloading Kafka $KAFKA_VERSION jars from Maven Central into $libs"
    rm -rf "$libs.tmp"
    mvn -B -q -f "$KAFKA_SRC/pom-$KAFKA_VERSION.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs.tmp" >/tmp/reliable-mvn.log 2>&1 ||
      { tail -40 /tmp/reliable-mvn.log >&2; die "mvn dependency:copy-dependencies failed"; }
    touch "$libs.tmp/.complete"
    rm -rf "$libs" && mv "$libs.tmp" "$libs"
  fi
  # $KAFKA_DIR/libs-<version> points at the cluster's jars: tests that start a broker of
  # their own (adapters/kafka's TLS/SASL node) glob $RELIABLE_KAFKA_HOME/libs-*.
  mkdir -p "$KAFKA_DIR"
  ln -sfn "$libs" "$KAFKA_DIR/libs-$KAFKA_VERSION"
}

# kafka_log_flag: the JVM flag that points the version's logging backend at its config.
kafka_log_flag() {
  if (($(kafka_major) >= 4)); then
    echo "-Dlog4j2.configurationFile=$KAFKA_DIR/config/log4j2.properties"
  else
    echo "-Dlog4j.configuration=file:$KAFKA_DIR/config/log4j.properties"
  fi
}

kafka_java() {
  local libs; libs=$(kafka_libs_dir)
  java -Djava.net.preferIPv4Stack=true "$(kafka_log_flag)" -cp "$libs/*" "$@"
}

kafka_cluster_id() {
  local f=$KAFKA_DIR/cluster.id
  if [[ ! -s $f ]]; then
    # A new cluster id invalidates formatted data dirs of an older cluster.
    rm -rf "$KAFKA_DIR"/n*/data
    mkdir -p "$KAFKA_DIR"
    # 16 random bytes, base64url without padding: what kafka-storage random-uuid prints.
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$f"
    echo "$KAFKA_VERSION" >"$KAFKA_DIR/version"
    echo "$KAFKA_PORT_BASE" >"$KAFKA_DIR/port-base"
  fi
  cat "$f"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/config"
  if (($(kafka_major) >= 4)); then
    cp "$KAFKA_SRC/log4j2.properties" "$KAFKA_DIR/config/log4j2.properties"
  else
    cp "$KAFKA_SRC/log4j.properties" "$KAFKA_DIR/config/log4j.properties"
  fi
  # 4.x: share groups (KIP-932) keep their state in __share_group_state, created on
  # first use with its own replication settings; the same durability as the other
  # internal topics, fewer partitions.
  local v4=""
  if (($(kafka_major) >= 4)); then
    v4='share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
share.coordinator.state.topic.num.partitions=10'
  fi
  local voters="" id
  for id in "${KAFKA_IDS[@]}"; do voters+="${voters:+,}$id@127.0.0.1:$(controller_port "$id")"; done
  for id in "${KAFKA_IDS[@]}"; do
    mkdir -p "$KAFKA_DIR/n$id"
    cat >"$KAFKA_DIR/config/n$id.properties.tmp" <<EOF
# Generated by scripts/services.sh; edits are overwritten on the next \`up\`.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$id"),CONTROLLER://127.0.0.1:$(controller_port "$id")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$id")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/n$id/data

# Durability as in production: every write on 3 replicas, acks=all needs 2 in sync.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
auto.create.topics.enable=false
num.partitions=3
$v4

# Faster tests on a small machine.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=16777216
# Notice a killed broker within seconds (defaults: 2 s / 9 s / 30 s).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
replica.lag.time.max.ms=10000
EOF
    mv "$KAFKA_DIR/config/n$id.properties.tmp" "$KAFKA_DIR/config/n$id.properties"
  done
}

kafka_pid() {
  local id=$1 pid
  pid=$(cat "$KAFKA_DIR/n$id/pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $KAFKA_DIR/config/n$id.properties" || return 1
  echo "$pid"
}

check_id() {
  local id=${1:-}
  [[ $id =~ ^[123]$ ]] || die "broker id must be 1, 2 or 3 (got '${id}')"
}

kafka_format() {
  local id=$1 cid; cid=$(kafka_cluster_id)
  [[ -f $KAFKA_DIR/n$id/data/meta.properties ]] && return 0
  mkdir -p "$KAFKA_DIR/n$id/data"
  kafka_java kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/config/n$id.properties" \
    --ignore-formatted >"$KAFKA_DIR/n$id/format.log" 2>&1 ||
    { cat "$KAFKA_DIR/n$id/format.log" >&2; die "kafka: formatting node $id failed"; }
}

kafka_start() {
  local id=$1 wait=${2:-wait}
  check_id "$id"
  if kafka_pid "$id" >/dev/null; then return 0; fi
  [[ -f $KAFKA_DIR/config/n$id.properties ]] || kafka_write_config
  kafka_format "$id"
  kafka_fetch
  local libs; libs=$(kafka_libs_dir)
  local dir=$KAFKA_DIR/n$id
  [[ -f $dir/server.log ]] && mv -f "$dir/server.log" "$dir/server.log.1"
  log "kafka: starting node $id (Kafka $KAFKA_VERSION) on 127.0.0.1:$(broker_port "$id")"
  # setsid: the broker must outlive this shell and the test process that asked for it.
  # shellcheck disable=SC2086
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/pid" \
    java $KAFKA_HEAP -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Xss512k \
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true "$(kafka_log_flag)" \
    -cp "$libs/*" kafka.Kafka "$KAFKA_DIR/config/n$id.properties" \
    >"$dir/server.log" 2>&1 </dev/null 9>&- &
  if [[ $wait == wait ]]; then
    local deadline=$((SECONDS + 90)) grace=$((SECONDS + 3))
    until port_open "$(broker_port "$id")"; do
      if ((SECONDS > grace)) && ! kafka_pid "$id" >/dev/null; then
        tail -30 "$dir/server.log" >&2; die "kafka: node $id exited"
      fi
      ((SECONDS < deadline)) || { tail -30 "$dir/server.log" >&2; die "kafka: node $id did not open its port"; }
      sleep 0.3
    done
  fi
}

kafka_stop() {
  local id=$1 sig=${2:-TERM} pid
  check_id "$id"
  pid=$(kafka_pid "$id") || { rm -f "$KAFKA_DIR/n$id/pid"; return 0; }
  log "kafka: SIG$sig node $id (pid $pid)"
  kill -s "$sig" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "kafka: node $id still running after 60s, SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 30))
    fi
    sleep 0.2
  done
  rm -f "$KAFKA_DIR/n$id/pid"
}

# kafka_registered: number of brokers the cluster reports in its metadata.
kafka_registered() {
  local cmd=kafka.admin.BrokerApiVersionsCommand
  (($(kafka_major) >= 4)) && cmd=org.apache.kafka.tools.BrokerApiVersionsCommand
  # 4.x prints "(id: 1 rack: null isFenced: false)"; count unfenced brokers only.
  kafka_java "$cmd" --bootstrap-server "$(kafka_brokers)" 2>/dev/null |
    grep '^127\.0\.0\.1:[0-9]* (id: ' | grep -vc 'isFenced: true' || true
}

kafka_wait() {
  local deadline=$((SECONDS + ${1:-120})) id n=0
  for id in "${KAFKA_IDS[@]}"; do
    until port_open "$(broker_port "$id")"; do
      ((SECONDS < deadline)) || die "kafka: port of node $id not open"
      kafka_pid "$id" >/dev/null || { tail -30 "$KAFKA_DIR/n$id/server.log" >&2; die "kafka: node $id is not running"; }
      sleep 0.5
    done
  done
  while :; do
    n=$(kafka_registered)
    [[ $n == "${#KAFKA_IDS[@]}" ]] && break
    ((SECONDS < deadline)) || die "kafka: only $n of ${#KAFKA_IDS[@]} brokers registered"
    sleep 1
  done
}

# kafka_switch: when the state folder holds a cluster of another version or on other
# ports than `up` asks for, stop it and delete it (data, config, cluster id); the jar
# caches stay.
kafka_switch() {
  kafka_check_version "$KAFKA_WANT_VERSION"
  kafka_load_state
  if [[ $KAFKA_VERSION == "$KAFKA_WANT_VERSION" && $KAFKA_PORT_BASE == "$KAFKA_WANT_PORT_BASE" ]]; then
    return 0
  fi
  if [[ -e $KAFKA_DIR/cluster.id ]]; then
    log "kafka: switching from $KAFKA_VERSION (port base $KAFKA_PORT_BASE) to $KAFKA_WANT_VERSION" \
      "(port base $KAFKA_WANT_PORT_BASE): killing the old cluster and deleting its data"
    # SIGKILL: its data is deleted next, and a controlled shutdown of all nodes at once
    # can wait out kafka_stop's 60 s (the quorum is gone before the last node leaves).
    local id
    for id in "${KAFKA_IDS[@]}"; do kafka_stop "$id" KILL & done
    wait
    kafka_purge_data
  fi
  KAFKA_VERSION=$KAFKA_WANT_VERSION KAFKA_PORT_BASE=$KAFKA_WANT_PORT_BASE
}

# kafka_purge_data deletes the cluster (nodes must be stopped); jar caches stay.
kafka_purge_data() {
  rm -rf "$KAFKA_DIR"/n* "$KAFKA_DIR/cluster.id" "$KAFKA_DIR/version" "$KAFKA_DIR/port-base" \
    "$KAFKA_DIR/config" "$KAFKA_DIR"/libs-*
}

kafka_up() {
  kafka_switch
  kafka_start_all
}

# kafka_start_all starts every node of the cluster in the state folder that is not
# running (creating the cluster when there is none), all before waiting, and waits
# until all are registered. It never switches versions.
kafka_start_all() {
  kafka_fetch
  mkdir -p "$KAFKA_DIR"
  kafka_cluster_id >/dev/null
  kafka_write_config
  local id started=0 t0=$SECONDS
  for id in "${KAFKA_IDS[@]}"; do
    kafka_pid "$id" >/dev/null && continue
    # Port taken by something that is not our node: refuse rather than fight over it.
    if port_open "$(broker_port "$id")"; then die "kafka: port $(broker_port "$id") is taken by another process"; fi
    started=1
  done
  if ((started)); then
    # Format in parallel (one JVM each), then start all three before waiting: a KRaft
    # quorum needs 2 of 3 controllers before any broker can register.
    for id in "${KAFKA_IDS[@]}"; do kafka_format "$id" & done
    wait
    for id in "${KAFKA_IDS[@]}"; do kafka_start "$id" nowait; done
  fi
  kafka_wait 180
  ((started)) && log "kafka: cluster of ${#KAFKA_IDS[@]} Kafka $KAFKA_VERSION brokers ready in $((SECONDS - t0))s"
  return 0
}

kafka_down() {
  local id
  for id in "${KAFKA_IDS[@]}"; do kafka_stop "$id" TERM & done
  wait
}

# ---------------------------------------------------------------- env, status

env_lines() {
  cat <<EOF
RELIABLE_KAFKA_BROKERS='$(kafka_brokers)'
RELIABLE_KAFKA_NODES='$(kafka_nodes)'
RELIABLE_KAFKA_HOME='$KAFKA_DIR'
RELIABLE_KAFKA_CLUSTER_VERSION='$KAFKA_VERSION'
RELIABLE_SERVICES_DIR='$STATE'
RELIABLE_SERVICES_SCRIPT='$ROOT/scripts/services.sh'
RELIABLE_AMQP_URL='amqp://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:5672/'
RELIABLE_RABBITMQ_MANAGEMENT_URL='http://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:15672'
RELIABLE_REDIS_ADDR='127.0.0.1:$REDIS_PORT'
RELIABLE_POSTGRES_DSN='postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB?sslmode=disable'
EOF
}

write_env_file() {
  mkdir -p "$(dirname "$ENV_FILE")"
  { echo "# Written by scripts/services.sh up; endpoints of the local test services."; env_lines; } >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

status() {
  local id pid
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then echo "postgres   up    127.0.0.1:$PG_PORT"; else echo "postgres   down"; fi
  if command -v redis-cli >/dev/null && redis_ping; then echo "redis      up    127.0.0.1:$REDIS_PORT"; else echo "redis      down"; fi
  if port_open 5672; then echo "rabbitmq   up    127.0.0.1:5672 (management :15672)"; else echo "rabbitmq   down"; fi
  for id in "${KAFKA_IDS[@]}"; do
    if pid=$(kafka_pid "$id"); then echo "kafka n$id   up    127.0.0.1:$(broker_port "$id") pid $pid (Kafka $KAFKA_VERSION)"; else echo "kafka n$id   down"; fi
  done
}

# with_lock serializes the commands that change services. The lock is held on fd 9, so
# every daemon started under it must be started with `9>&-`: a daemon that inherits fd 9
# would hold the lock for as long as it runs.
with_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/services.lock"
  flock -w 900 9 || die "another scripts/services.sh holds $STATE/services.lock"
}

main() {
  local cmd=${1:-help}
  shift || true
  kafka_load_state
  case $cmd in
  up)
    require_root; with_lock
    local t0=$SECONDS t
    t=$SECONDS; postgres_up; log "postgres ready ($((SECONDS - t))s)"
    t=$SECONDS; redis_up; log "redis ready ($((SECONDS - t))s)"
    t=$SECONDS; rabbitmq_up; log "rabbitmq ready ($((SECONDS - t))s)"
    t=$SECONDS; kafka_up; log "kafka $KAFKA_VERSION ready ($((SECONDS - t))s)"
    write_env_file
    log "all services up in $((SECONDS - t0))s; endpoints written to $ENV_FILE"
    env_lines | sed 's/^/export /'
    ;;
  down)
    require_root; with_lock
    kafka_down; rabbitmq_down; redis_down; postgres_down
    log "all services stopped"
    ;;
  status) status ;;
  env) env_lines | sed 's/^/export /' ;;
  kafka-start) with_lock; kafka_start "${1:-}" wait ;;
  kafka-stop) with_lock; kafka_stop "${1:-}" TERM ;;
  kafka-kill) with_lock; kafka_stop "${1:-}" KILL ;;
  kafka-wait) kafka_wait "${1:-120}" ;;
  kafka-purge)
    with_lock; kafka_down
    kafka_purge_data
    log "kafka: data deleted"
    ;;
  kafka-up)
    with_lock
    local t0=$SECONDS
    kafka_up; write_env_file
    log "kafka $KAFKA_VERSION ready ($((SECONDS - t0))s); endpoints written to $ENV_FILE"
    ;;
  kafka-version) echo "$KAFKA_VERSION" ;;
  kafka-start-all) with_lock; kafka_start_all ;;
  rabbitmq-stop) require_root; with_lock; rabbit_stop ;;
  rabbitmq-start) require_root; with_lock; rabbit_start ;;
  rabbitmq-restart) require_root; with_lock; rabbit_stop; rabbit_start ;;
  postgres-restart) require_root; with_lock; postgres_restart "${1:-}" ;;
  help | -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try: $0 help)" ;;
  esac
}

main "$@"
