#!/usr/bin/env bash
# Installs (Debian's clickhouse-server package) and starts a local ClickHouse
# for the demo and the tests. Source it, then call ch_ensure; it registers
# ch_stop to stop on exit only a server it started itself.
set -euo pipefail

CH_CONFIG=${CH_CONFIG:-/etc/clickhouse-server/config.xml}
CH_STARTED_PID=""

ch_ping() { clickhouse-client --host 127.0.0.1 --port 9000 -q 'SELECT 1' >/dev/null 2>&1; }

ch_install() {
  if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ]; then
    return 0
  fi
  echo "clickhouse: installing Debian's clickhouse-server and clickhouse-client" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

ch_ensure() {
  if ch_ping; then
    echo "clickhouse: already running on 127.0.0.1:9000" >&2
    return 0
  fi
  ch_install
  echo "clickhouse: starting /usr/sbin/clickhouse-server" >&2
  local log=${TMPDIR:-/tmp}/switchyard-clickhouse.log
  /usr/sbin/clickhouse-server --config-file="$CH_CONFIG" >"$log" 2>&1 &
  CH_STARTED_PID=$!
  trap ch_stop EXIT
  for _ in $(seq 1 120); do
    if ch_ping; then
      echo "clickhouse: ready ($(clickhouse-client -q 'SELECT version()'))" >&2
      return 0
    fi
    if ! kill -0 "$CH_STARTED_PID" 2>/dev/null; then
      echo "clickhouse: server exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "clickhouse: not ready after 60s; see $log" >&2
  return 1
}

ch_stop() {
  if [ -n "$CH_STARTED_PID" ] && kill -0 "$CH_STARTED_PID" 2>/dev/null; then
    echo "clickhouse: stopping the server this script started" >&2
    kill "$CH_STARTED_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$CH_STARTED_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$CH_STARTED_PID" 2>/dev/null || true
  fi
  CH_STARTED_PID=""
}
