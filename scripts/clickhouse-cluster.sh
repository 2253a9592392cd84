#!/usr/bin/env bash
# Starts a local replicated ClickHouse for the ledger's cluster mode: one
# ZooKeeper (Debian's zookeeper package) and two clickhouse-server replicas of
# one shard (cluster "switchyard"), each in a temporary directory on free
# loopback ports. Installs the packages with apt-get when they are missing,
# like scripts/clickhouse.sh.
#
#   scripts/clickhouse-cluster.sh install   install the packages only
#   scripts/clickhouse-cluster.sh           start, print the environment, serve
#
# Started, it prints the settings the ledger needs as KEY=value lines on
# stdout, then "ready", and reads commands from stdin, one a line, answering
# each with "ok" (or "error: …"):
#
#   stop N   kill -9 replica N (1 or 2)
#   term N   SIGTERM replica N and wait for it to exit
#   start N  start replica N again and wait until it answers
#
# End of stdin, SIGTERM or SIGINT stops everything the script started and
# removes its temporary directory. Progress goes to stderr.
set -euo pipefail

CHC_CLUSTER=${CHC_CLUSTER:-switchyard}
CHC_DIR=""
CHC_ZK_PID=""
CHC_ZK_PORT=""
declare -a CHC_PID=("" "" "")
declare -a CHC_TCP=("" "" "")
declare -a CHC_HTTP=("" "" "")
declare -a CHC_INTER=("" "" "")

chc_log() { echo "clickhouse-cluster: $*" >&2; }

chc_install() {
  local missing=()
  [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse-server >/dev/null 2>&1 || missing+=(clickhouse-server clickhouse-client)
  [ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
  command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
  [ ${#missing[@]} -eq 0 ] && return 0
  chc_log "installing Debian's ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# chc_free_port prints a loopback port nothing listens on and that no earlier
# call returned, below the ephemeral range (an outgoing connection could take
# a port from that range before the server binds it).
CHC_TAKEN=" "
chc_free_port() {
  local p low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$low" -gt 11000 ] || low=32768
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % (low - 10000)))
    case "$CHC_TAKEN" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      CHC_TAKEN="$CHC_TAKEN$p "
      echo "$p"
      return 0
    fi
  done
  chc_log "no free port found"
  return 1
}

# chc_zk_ok: ZooKeeper serves clients ("srvr" reports its mode). "ruok"
# answers imok before it does, and a clickhouse-server 18.16 whose first
# ZooKeeper handshake fails can crash (a segfault in its DDL worker).
chc_zk_ok() {
  local reply
  reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$CHC_ZK_PORT; echo srvr >&3; cat <&3" 2>/dev/null || true)
  case "$reply" in *"Mode: standalone"*) return 0 ;; esac
  return 1
}

chc_start_zookeeper() {
  CHC_ZK_PORT=$(chc_free_port)
  mkdir -p "$CHC_DIR/zk/data"
  cat >"$CHC_DIR/zk/zoo.cfg" <<EOF
tickTime=500
dataDir=$CHC_DIR/zk/data
clientPort=$CHC_ZK_PORT
clientPortAddress=127.0.0.1
maxSessionTimeout=30000
admin.enableServer=false
4lw.commands.whitelist=srvr
EOF
  java -Xmx256m -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain \
    "$CHC_DIR/zk/zoo.cfg" >"$CHC_DIR/zk/zookeeper.log" 2>&1 </dev/null &
  CHC_ZK_PID=$!
  for _ in $(seq 1 300); do
    chc_zk_ok && { chc_log "zookeeper ready on 127.0.0.1:$CHC_ZK_PORT"; return 0; }
    kill -0 "$CHC_ZK_PID" 2>/dev/null || { chc_log "zookeeper exited:"; tail -n 20 "$CHC_DIR/zk/zookeeper.log" >&2; return 1; }
    sleep 0.1
  done
  chc_log "zookeeper not ready after 30s"
  return 1
}

# chc_config N writes replica N's config.xml: its ports and directories, the
# cluster of one shard with both replicas (internal_replication: the
# Replicated tables copy the data, the Distributed table writes to one
# replica), ZooKeeper, the macros and the distributed DDL queue.
chc_config() {
  local n=$1 d="$CHC_DIR/ch$1"
  mkdir -p "$d/data/tmp" "$d/data/user_files" "$d/data/format_schemas"
  cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$d/server.log</log>
        <errorlog>$d/server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>${CHC_TCP[$n]}</tcp_port>
    <http_port>${CHC_HTTP[$n]}</http_port>
    <interserver_http_port>${CHC_INTER[$n]}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/data/tmp/</tmp_path>
    <user_files_path>$d/data/user_files/</user_files_path>
    <format_schema_path>$d/data/format_schemas/</format_schema_path>
    <users_config>$CHC_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <remote_servers>
        <$CHC_CLUSTER>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>${CHC_TCP[1]}</port></replica>
                <replica><host>127.0.0.1</host><port>${CHC_TCP[2]}</port></replica>
            </shard>
        </$CHC_CLUSTER>
    </remote_servers>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$CHC_ZK_PORT</port></node>
        <session_timeout_ms>4000</session_timeout_ms>
    </zookeeper>
    <macros>
        <shard>01</shard>
        <replica>r$n</replica>
    </macros>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
</yandex>
EOF
}

chc_ping() { clickhouse-client --host 127.0.0.1 --port "${CHC_TCP[$1]}" -q 'SELECT 1' >/dev/null 2>&1; }

chc_spawn_replica() {
  local n=$1 d="$CHC_DIR/ch$1"
  if [ -n "${CHC_PID[$n]}" ] && kill -0 "${CHC_PID[$n]}" 2>/dev/null; then
    chc_log "replica $n is already running"
    return 0
  fi
  /usr/sbin/clickhouse-server --config-file="$d/config.xml" >>"$d/stdout.log" 2>&1 </dev/null &
  CHC_PID[$n]=$!
}

chc_wait_replica() {
  local n=$1
  for _ in $(seq 1 600); do
    if chc_ping "$n"; then
      chc_log "replica $n ready on 127.0.0.1:${CHC_TCP[$n]} (pid ${CHC_PID[$n]})"
      return 0
    fi
    if ! kill -0 "${CHC_PID[$n]}" 2>/dev/null; then
      chc_log "replica $n exited; last lines of $CHC_DIR/ch$n/server.err.log:"
      tail -n 20 "$CHC_DIR/ch$n/server.err.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  chc_log "replica $n not ready after 60s"
  return 1
}

chc_start_replica() { chc_spawn_replica "$1" && chc_wait_replica "$1"; }

# chc_kill PID SIGNAL: signal a process and wait (up to 30s) until it is gone.
chc_kill() {
  local pid=$1 sig=$2
  [ -n "$pid" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

chc_stop_replica() {
  local n=$1 sig=$2
  chc_kill "${CHC_PID[$n]}" "$sig"
  wait "${CHC_PID[$n]}" 2>/dev/null || true
  CHC_PID[$n]=""
}

chc_down() {
  local n
  for n in 1 2; do chc_stop_replica "$n" TERM; done
  chc_kill "$CHC_ZK_PID" TERM
  CHC_ZK_PID=""
  if [ -n "$CHC_DIR" ] && [ -z "${CHC_KEEP:-}" ]; then rm -rf "$CHC_DIR"; fi
  chc_log "stopped"
}

chc_up() {
  chc_install
  CHC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-chcluster.XXXXXX")
  trap chc_down EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  local n
  for n in 1 2; do
    CHC_TCP[n]=$(chc_free_port)
    CHC_HTTP[n]=$(chc_free_port)
    CHC_INTER[n]=$(chc_free_port)
  done
  cat >"$CHC_DIR/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
EOF
  chc_start_zookeeper
  for n in 1 2; do chc_config "$n"; done
  # Both replicas start at once: each takes a few seconds on its own.
  for n in 1 2; do chc_spawn_replica "$n"; done
  for n in 1 2; do chc_wait_replica "$n"; done
  echo "SWITCHYARD_CLICKHOUSE_ADDR=127.0.0.1:${CHC_TCP[1]},127.0.0.1:${CHC_TCP[2]}"
  echo "SWITCHYARD_CLICKHOUSE_CLUSTER=$CHC_CLUSTER"
  echo "CHCLUSTER_REPLICA1=127.0.0.1:${CHC_TCP[1]}"
  echo "CHCLUSTER_REPLICA2=127.0.0.1:${CHC_TCP[2]}"
  echo "CHCLUSTER_ZOOKEEPER=127.0.0.1:$CHC_ZK_PORT"
  echo "CHCLUSTER_DIR=$CHC_DIR"
  echo "ready"
  local cmd arg
  while read -r cmd arg; do
    case "$cmd:$arg" in
      stop:1 | stop:2) chc_stop_replica "$arg" KILL && echo ok ;;
      term:1 | term:2) chc_stop_replica "$arg" TERM && echo ok ;;
      start:1 | start:2) if chc_start_replica "$arg"; then echo ok; else echo "error: replica $arg did not start"; fi ;;
      *) echo "error: unknown command '$cmd $arg' (stop N, term N, start N)" ;;
    esac
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-up}" in
    install) chc_install ;;
    up) chc_up ;;
    *) echo "usage: $0 [install|up]" >&2; exit 2 ;;
  esac
fi
