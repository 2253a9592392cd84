# Sourced by scripts/bench-sustained.sh and scripts/bench-timeline.sh: runs
# `switchyard up` the way ../shared/bench-peers runs its Switchyard target
# (the harness's mock and policy, `up` pinned to CPU 1 with the load and the
# mock on CPU 0, NATS authentication and the ledger off), with the collector
# traced (GODEBUG=gctrace=1) so the callers can read its collections.
#
# The caller sets ROOT (the repository). PERF_BIN names the folder that
# scripts/bench-peers.sh built (the harness's mock and natsload); PERF_HARNESS,
# PERF_SWITCHYARD_NATS_PORT, PERF_SWITCHYARD_HTTP_PORT and PERF_MOCK_PORT
# override the harness's folder and the ports. Everything started is killed
# on exit.
HARNESS=${PERF_HARNESS:-$ROOT/../shared/bench-peers}
BIN=${PERF_BIN:?set PERF_BIN to the folder scripts/bench-peers.sh built}
NATS_PORT=${PERF_SWITCHYARD_NATS_PORT:-31222}
HTTP_PORT=${PERF_SWITCHYARD_HTTP_PORT:-31090}
MOCK_ADDR=127.0.0.1:${PERF_MOCK_PORT:-31081}

perf_pids=()
perf_cleanup() {
	for p in "${perf_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap perf_cleanup EXIT

# perf_start_mock DIR: writes DIR/policy.yaml (the harness's policy aimed at
# the mock) and starts the mock on CPU 0.
perf_start_mock() {
	sed "s#@MOCK_BASE@#http://$MOCK_ADDR/v1#" "$HARNESS/switchyard/policy.yaml.tmpl" >"$1/policy.yaml"
	taskset -c 0 "$BIN/mock" -addr "$MOCK_ADDR" >"$1/mock.log" 2>&1 &
	perf_pids+=($!)
}

# perf_start_up CALLER BINARY DIR POLICY [NAME=VALUE ...]: starts BINARY's
# `up` on CPU 1 with its data in DIR/data and its log in DIR/up.log, the
# extra environment added, and waits until it is healthy (exits 1 with the
# log's tail if it never is). Sets up_pid.
perf_start_up() {
	local caller=$1 sy=$2 dir=$3 policy=$4 ready=
	shift 4
	mkdir -p "$dir/data"
	env -i PATH="$PATH" HOME="$HOME" GODEBUG=gctrace=1 "$@" SWITCHYARD_NATS_AUTH=off SWITCHYARD_DATA_DIR="$dir/data" \
		SWITCHYARD_NATS_PORT="$NATS_PORT" SWITCHYARD_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
		SWITCHYARD_POLICY="$policy" SWITCHYARD_SIM=off SWITCHYARD_LEDGER=false SWITCHYARD_LOG_LEVEL=warn \
		taskset -c 1 "$sy" up >"$dir/up.log" 2>&1 &
	up_pid=$!
	perf_pids+=("$up_pid")
	for _ in $(seq 1 120); do
		kill -0 "$up_pid" 2>/dev/null || break
		if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/healthz"; then ready=1 && break; fi
		sleep 0.25
	done
	[ -n "$ready" ] || { echo "$caller: $sy up did not become healthy:" >&2; tail -5 "$dir/up.log" >&2; exit 1; }
}

# perf_stop_up: stops the `up` perf_start_up started.
perf_stop_up() {
	kill "$up_pid" 2>/dev/null || true
	wait "$up_pid" 2>/dev/null || true
}
