#!/usr/bin/env bash
# Edge benchmark: the same load, from the same load generator, sent
#   direct  - to the mock vendor itself (the floor),
#   nats    - to Switchyard through its NATS contract (JetStream publish,
#             reply subject), the pipeline without the edge,
#   edge    - to Switchyard's HTTP edge (POST /v1/chat/completions with an
#             API key): HTTP in, NATS out, NATS in, HTTP out,
# at each offered rate (open loop), then each saturated (closed loop).
# It reuses the side-by-side harness in ../shared/bench-peers (its mock
# upstream, its HTTP load generator `loadgen`, its NATS load generator
# `natsload` and its Switchyard policy), read-only: everything it builds
# and writes goes to bin/ and .tmp/ here. Figures, not a pass/fail test.
#
#   scripts/bench-edge.sh [--rates 500,1500] [--duration 10s] [--clients 256] [--stream] [--no-pin]
#
# --stream sends "stream": true (with include_usage) to the edge, which
# relays the pipeline's deltas as SSE, and to the vendor directly. The
# harness's mock cannot stream, so in this mode the vendor is Switchyard's
# own simulator (`switchyard sim`, zero latency) in its place; natsload has
# no streaming mode, so there is no nats row.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${BENCH_PEERS:-$ROOT/../shared/bench-peers}
RATES=500,1500 DURATION=10s WARM=2s CLIENTS=256 STREAM=0 PIN=1
while [ $# -gt 0 ]; do
  case $1 in
  --rates) RATES=$2; shift 2 ;;
  --duration) DURATION=$2; shift 2 ;;
  --clients) CLIENTS=$2; shift 2 ;;
  --stream) STREAM=1; shift ;;
  --no-pin) PIN=0; shift ;;
  *) echo "usage: $0 [--rates 500,1500] [--duration 10s] [--clients 256] [--stream] [--no-pin]" >&2; exit 2 ;;
  esac
done
[ -d "$PEERS/tools" ] || { echo "bench-edge: $PEERS/tools not found (set BENCH_PEERS)" >&2; exit 1; }

BIN=$ROOT/bin WORK=$ROOT/.tmp/bench-edge
rm -rf "$WORK" && mkdir -p "$BIN" "$WORK/data"
# Fixed ports below the ephemeral range (32768+), where tests' random ports cannot take them.
MOCK_ADDR=127.0.0.1:${BENCH_EDGE_MOCK_PORT:-21281}
EDGE_ADDR=127.0.0.1:${BENCH_EDGE_PORT:-21280}
NATS_PORT=${BENCH_EDGE_NATS_PORT:-21222}
HTTP_ADDR=127.0.0.1:${BENCH_EDGE_HTTP_PORT:-21290}

echo "building switchyard and the harness tools ..." >&2
go build -o "$BIN/switchyard" ./services/switchyard
for t in loadgen natsload mock; do
  (cd "$PEERS/tools" && GOWORK=off GOFLAGS=-mod=mod go build -o "$BIN/perf-$t" "./cmd/$t")
done

# Pinned like the harness: load generator and mock on CPU 0, Switchyard on CPU 1.
PIN_LOAD=() PIN_TARGET=()
if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_LOAD=(taskset -c 0) PIN_TARGET=(taskset -c 1); fi

PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

VENDOR_BASE=http://$MOCK_ADDR/v1
if [ "$STREAM" = 1 ]; then
  VENDOR_BASE=http://$MOCK_ADDR/openai/v1
  "${PIN_LOAD[@]}" "$BIN/switchyard" sim -addr "$MOCK_ADDR" >"$WORK/mock.log" 2>&1 &
else
  "${PIN_LOAD[@]}" "$BIN/perf-mock" -addr "$MOCK_ADDR" >"$WORK/mock.log" 2>&1 &
fi
MOCK_PID=$!
PIDS+=("$MOCK_PID")
sed "s#@MOCK_BASE@#$VENDOR_BASE#" "$PEERS/switchyard/policy.yaml.tmpl" >"$WORK/policy.yaml"
unset_env=()
for v in $(compgen -e | grep '^SWITCHYARD_'); do unset_env+=(-u "$v"); done # the caller's settings must not leak in
# Authentication off (loopback only): natsload, like the harness's, connects without credentials.
env "${unset_env[@]}" SWITCHYARD_NATS_AUTH=off SWITCHYARD_DATA_DIR="$WORK/data" SWITCHYARD_NATS_PORT="$NATS_PORT" SWITCHYARD_HTTP_ADDR="$HTTP_ADDR" \
  SWITCHYARD_EDGE_ADDR="$EDGE_ADDR" SWITCHYARD_POLICY="$WORK/policy.yaml" SWITCHYARD_SIM=off SWITCHYARD_LEDGER=false \
  SWITCHYARD_LOG_LEVEL=warn "${PIN_TARGET[@]}" "$BIN/switchyard" up >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!
PIDS+=("$SY_PID")
for ((i = 0; i < 240; i++)); do
  kill -0 "$SY_PID" 2>/dev/null || { cat "$WORK/switchyard.log" >&2; exit 1; }
  curl -s -o /dev/null --max-time 1 "http://$HTTP_ADDR/healthz" && curl -s -o /dev/null --max-time 1 "http://$EDGE_ADDR/v1/models" && break
  sleep 0.25
done
curl -s -o /dev/null --max-time 1 "http://$EDGE_ADDR/v1/models" || { echo "bench-edge: switchyard up did not start within 60 s:" >&2; tail -n 20 "$WORK/switchyard.log" >&2; exit 1; }
KEY=$(SWITCHYARD_NATS_URL=nats://127.0.0.1:$NATS_PORT "$BIN/switchyard" keys create --tenant perf 2>"$WORK/keys.log") ||
  { echo "bench-edge: could not create an API key:" >&2; cat "$WORK/keys.log" >&2; exit 1; }

STREAM_FIELDS=""
[ "$STREAM" = 1 ] && STREAM_FIELDS=',"stream":true,"stream_options":{"include_usage":true}'
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16'$STREAM_FIELDS'}'
EDGE_BODY='{"model":"bench","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16'$STREAM_FIELDS'}'

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
run() { # target mode(open RATE | closed C) tool args...
  local target=$1 mode=$2 v=$3 tool=$4
  shift 4
  local load=(-rate "$v" -c 512)
  [ "$mode" = closed ] && load=(-c "$v")
  echo "  $target $mode $v ..." >&2
  "${PIN_LOAD[@]}" "$BIN/perf-$tool" -target "$target" -label "$target/$mode/$v" "${load[@]}" -d "$DURATION" -warm "$WARM" -drain 5s \
    -pids "$SY_PID" -mockpids "$MOCK_PID" "$@" \
    2>>"$WORK/loadgen.log" | sed -n 's/^RESULT //p' >>"$RESULTS"
}
targets() { # mode v
  run direct "$1" "$2" loadgen -url "$VENDOR_BASE/chat/completions" -body "$BODY"
  [ "$STREAM" = 1 ] || run nats "$1" "$2" natsload -url "nats://127.0.0.1:$NATS_PORT" -tenant perf -route bench
  run edge "$1" "$2" loadgen -url "http://$EDGE_ADDR/v1/chat/completions" -body "$EDGE_BODY" -H "Authorization: Bearer $KEY"
}
echo "running: rates $RATES, $DURATION per phase ($WARM warm-up left out), saturation with $CLIENTS clients, stream=$STREAM, pinned=$PIN" >&2
for r in ${RATES//,/ }; do targets open "$r"; done
targets closed "$CLIENTS"

python3 - "$RESULTS" "$STREAM" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["target"], r["label"].split("/", 1)[1]): r for r in rows}
print(f"switchyard edge benchmark (stream={sys.argv[2]}): mock vendor, loadgen/natsload of bench-peers; ms")
print(f"{'target':7} {'load':12} {'req/s':>7} {'p50':>7} {'p99':>7} {'errors':>6}  {'added p50/p99 vs direct':>24}  {'edge minus nats p50/p99':>24}  {'sy cores':>8} {'foreign':>7}")
for r in rows:
    load = r["label"].split("/", 1)[1]
    d, n = by.get(("direct", load)), by.get(("nats", load))
    l = r["lat"]
    added = edge = ""
    if r["mode"] == "open" and d and r["target"] != "direct":
        added = f"{l['p50_ms'] - d['lat']['p50_ms']:+.3f} / {l['p99_ms'] - d['lat']['p99_ms']:+.3f}"
    if r["mode"] == "open" and n and r["target"] == "edge":
        edge = f"{l['p50_ms'] - n['lat']['p50_ms']:+.3f} / {l['p99_ms'] - n['lat']['p99_ms']:+.3f}"
    print(f"{r['target']:7} {load.replace('/', ' '):12} {r['achieved_rps']:7.0f} {l['p50_ms']:7.3f} {l['p99_ms']:7.2f} {r['errors']:6d}  {added:>24}  {edge:>24}  {r.get('target_cores', 0):8.2f} {r.get('foreign_cores', 0):7.2f}")
print("sy cores: CPU of the switchyard process during the phase (direct rows: none); foreign: the machine's other")
print("work in the phase (other processes on this shared machine), in cores of 2.")
EOF
