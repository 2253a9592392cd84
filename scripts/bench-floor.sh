#!/usr/bin/env bash
# Contract floor benchmark: what serving Switchyard's NATS contract costs
# at the least, beside what the pipeline costs, in one run.
#   floor-0  - integration/cmd/benchfloor: llm.requests stored in the same
#              file-backed work queue, one pull consumer, the envelope
#              validated and the reply encoded by Switchyard's own code,
#              one vendor call through Switchyard's adapter, the reply
#              published; nothing else (package benchfloor says what is
#              left out),
#   floor-N  - the same with N durable hops before the vendor call (each a
#              JetStream publish with its ack, a pull delivery and an ack:
#              what one more stage costs at the least),
#   stored-N - floor-N with each reply stored in LLM_REPLIES before it is
#              delivered, as the contract requires of llm.replies.<tenant>.<id>
#              and as `up` stores it (stored-0 is the least the contract
#              itself allows),
#   http-N   - stored-N behind the least an HTTP door does (benchfloor -http:
#              an OpenAI chat completion turned into an envelope, published,
#              its reply awaited and written back; no keys, limits or
#              streaming), driven over HTTP like Bifrost core,
#   doors-N  - floor-0 with N direct hand-offs on core NATS before the vendor
#              call, through Switchyard's own DirectHandOff and DirectDoor
#              (what a hop like llm.router.route costs),
#   switchyard - `switchyard up`, ledger off, the harness's policy,
#   edge     - `switchyard up`'s HTTP edge (the same `up`, an API key of its
#              own), driven over HTTP like Bifrost core (--edge; off by
#              default: scripts/bench-edge.sh is its own benchmark),
#   bifrost-core - the harness's Bifrost core front (HTTP), when it builds
#              (its first build fetches Bifrost's modules; --no-bifrost
#              leaves it out),
# each on CPU 1 alone, driven by the harness's load generators
# (../shared/bench-peers, read-only) on CPU 0 with its mock vendor.
# Figures, not a pass/fail test. Builds into bin/, writes to .tmp/.
#
#   scripts/bench-floor.sh [--hops 0,1,2,4] [--stored 0] [--http 0] [--doors 1,3] [--rates 500,1500] [--clients 32] [--duration 10s] [--rounds 1] [--edge] [--no-bifrost]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS=${BENCH_PEERS:-$ROOT/../shared/bench-peers}
HOPS=0,1,2,4 STORED=0 HTTP=0 DOORS=1,3 RATES=500,1500 CLIENTS=32 DURATION=10s WARM=2s ROUNDS=1 BIFROST=1 EDGE=0
while [ $# -gt 0 ]; do
  case $1 in
  --hops) HOPS=$2; shift 2 ;;
  --stored) STORED=$2; shift 2 ;;
  --http) HTTP=$2; shift 2 ;;
  --doors) DOORS=$2; shift 2 ;;
  --rates) RATES=$2; shift 2 ;;
  --clients) CLIENTS=$2; shift 2 ;;
  --duration) DURATION=$2; shift 2 ;;
  --rounds) ROUNDS=$2; shift 2 ;;
  --no-bifrost) BIFROST=0; shift ;;
  --edge) EDGE=1; shift ;;
  *) echo "usage: $0 [--hops 0,1,2,4] [--stored 0] [--http 0] [--doors 1,3] [--rates 500,1500] [--clients 32] [--duration 10s] [--rounds 1] [--edge] [--no-bifrost]" >&2; exit 2 ;;
  esac
done
[ -d "$PEERS/tools" ] || { echo "bench-floor: $PEERS/tools not found (set BENCH_PEERS)" >&2; exit 1; }

BIN=$ROOT/bin WORK=$ROOT/.tmp/bench-floor
rm -rf "$WORK" && mkdir -p "$BIN" "$WORK"
# Fixed ports below the ephemeral range (32768+), where tests' random ports cannot take them.
MOCK_ADDR=127.0.0.1:${BENCH_FLOOR_MOCK_PORT:-21381}
NATS_PORT=${BENCH_FLOOR_NATS_PORT:-21322}
HTTP_ADDR=127.0.0.1:${BENCH_FLOOR_HTTP_PORT:-21390}
BIFROST_ADDR=127.0.0.1:${BENCH_FLOOR_BIFROST_PORT:-21385}
FLOOR_HTTP_ADDR=127.0.0.1:${BENCH_FLOOR_FRONT_PORT:-21386}
EDGE_ADDR=127.0.0.1:${BENCH_FLOOR_EDGE_PORT:-21387}
EDGE_BODY='{"model":"bench","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
KEY=
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'

echo "building switchyard, benchfloor and the harness tools ..." >&2
go build -o "$BIN/switchyard" ./services/switchyard
(cd integration && go build -o "$BIN/benchfloor" ./cmd/benchfloor)
for t in loadgen natsload mock; do
  (cd "$PEERS/tools" && GOWORK=off GOFLAGS=-mod=mod go build -o "$BIN/perf-$t" "./cmd/$t")
done
if [ "$BIFROST" = 1 ] && ! (cd "$PEERS/bifrostcore" && GOWORK=off go build -o "$BIN/perf-bifrostcore" .) >"$WORK/bifrost-build.log" 2>&1; then
  echo "bench-floor: Bifrost core did not build (logged in $WORK/bifrost-build.log); running without it" >&2
  BIFROST=0
fi

PIN_LOAD=() PIN_TARGET=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_LOAD=(taskset -c 0) PIN_TARGET=(taskset -c 1); fi

PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"${PIN_LOAD[@]}" "$BIN/perf-mock" -addr "$MOCK_ADDR" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
sed "s#@MOCK_BASE@#http://$MOCK_ADDR/v1#" "$PEERS/switchyard/policy.yaml.tmpl" >"$WORK/policy.yaml"
unset_env=()
for v in $(compgen -e | grep '^SWITCHYARD_'); do unset_env+=(-u "$v"); done # the caller's settings must not leak in

TARGET_PID=
start_target() { # name
  local name=$1 data=$WORK/data-$1
  rm -rf "$data" && mkdir -p "$data"
  if [ "$name" = bifrost-core ]; then
    "${PIN_TARGET[@]}" "$BIN/perf-bifrostcore" -addr "$BIFROST_ADDR" -primary "http://$MOCK_ADDR" >"$WORK/$name.log" 2>&1 &
  elif [ "$name" = switchyard ] || [ "$name" = edge ]; then
    local edge_addr=
    [ "$name" = edge ] && edge_addr=$EDGE_ADDR
    env "${unset_env[@]}" SWITCHYARD_NATS_AUTH=off SWITCHYARD_DATA_DIR="$data" SWITCHYARD_NATS_PORT="$NATS_PORT" SWITCHYARD_HTTP_ADDR="$HTTP_ADDR" \
      SWITCHYARD_EDGE_ADDR="$edge_addr" SWITCHYARD_POLICY="$WORK/policy.yaml" SWITCHYARD_SIM=off SWITCHYARD_LEDGER=false \
      SWITCHYARD_LOG_LEVEL=warn "${PIN_TARGET[@]}" "$BIN/switchyard" up >"$WORK/$name.log" 2>&1 &
  elif [ "${name%%-*}" = http ]; then
    "${PIN_TARGET[@]}" "$BIN/benchfloor" -store "$data" -port "$NATS_PORT" -vendor "http://$MOCK_ADDR/v1" -hops "${name#http-}" -stored-replies -http "$FLOOR_HTTP_ADDR" >"$WORK/$name.log" 2>&1 &
  elif [ "${name%%-*}" = stored ]; then
    "${PIN_TARGET[@]}" "$BIN/benchfloor" -store "$data" -port "$NATS_PORT" -vendor "http://$MOCK_ADDR/v1" -hops "${name#stored-}" -stored-replies >"$WORK/$name.log" 2>&1 &
  elif [ "${name%%-*}" = doors ]; then
    "${PIN_TARGET[@]}" "$BIN/benchfloor" -store "$data" -port "$NATS_PORT" -vendor "http://$MOCK_ADDR/v1" -door-hops "${name#doors-}" >"$WORK/$name.log" 2>&1 &
  else
    "${PIN_TARGET[@]}" "$BIN/benchfloor" -store "$data" -port "$NATS_PORT" -vendor "http://$MOCK_ADDR/v1" -hops "${name#floor-}" >"$WORK/$name.log" 2>&1 &
  fi
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  for ((i = 0; i < 240; i++)); do
    kill -0 "$TARGET_PID" 2>/dev/null || { echo "bench-floor: $name exited:" >&2; tail -n 20 "$WORK/$name.log" >&2; exit 1; }
    if [ "$name" = bifrost-core ]; then
      curl -sf -o /dev/null --max-time 1 -X POST -H 'Content-Type: application/json' -H 'Authorization: Bearer sk-mock' -d "$BODY" "http://$BIFROST_ADDR/v1/chat/completions" && return 0
    elif [ "$name" = switchyard ]; then
      curl -s -o /dev/null --max-time 1 "http://$HTTP_ADDR/healthz" && return 0
    elif [ "$name" = edge ]; then
      if curl -s -o /dev/null --max-time 1 "http://$HTTP_ADDR/healthz" && curl -s -o /dev/null --max-time 1 "http://$EDGE_ADDR/v1/models"; then
        KEY=$(SWITCHYARD_NATS_URL=nats://127.0.0.1:$NATS_PORT "$BIN/switchyard" keys create --tenant perf 2>"$WORK/keys.log") ||
          { echo "bench-floor: could not create the edge's API key:" >&2; cat "$WORK/keys.log" >&2; exit 1; }
        return 0
      fi
    else
      grep -q serving "$WORK/$name.log" && return 0
    fi
    sleep 0.25
  done
  echo "bench-floor: $name did not start within 60 s" >&2
  exit 1
}
stop_target() { kill "$TARGET_PID" 2>/dev/null || true; wait "$TARGET_PID" 2>/dev/null || true; }

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
run() { # target round mode v
  local target=$1 round=$2 mode=$3 v=$4
  local load=(-rate "$v" -c 512)
  [ "$mode" = closed ] && load=(-c "$v")
  local tool=(natsload -url "nats://127.0.0.1:$NATS_PORT" -tenant perf -route bench)
  [ "$target" = bifrost-core ] && tool=(loadgen -url "http://$BIFROST_ADDR/v1/chat/completions" -body "$BODY")
  [ "${target%%-*}" = http ] && tool=(loadgen -url "http://$FLOOR_HTTP_ADDR/v1/chat/completions" -body "$BODY")
  [ "$target" = edge ] && tool=(loadgen -url "http://$EDGE_ADDR/v1/chat/completions" -body "$EDGE_BODY" -H "Authorization: Bearer $KEY")
  echo "  $target round $round: $mode $v ..." >&2
  "${PIN_LOAD[@]}" "$BIN/perf-${tool[0]}" -target "$target" -label "$target/$round/$mode/$v" "${load[@]}" -d "$DURATION" -warm "$WARM" -drain 5s \
    -pids "$TARGET_PID" -mockpids "$MOCK_PID" "${tool[@]:1}" \
    2>>"$WORK/load.log" | sed -n 's/^RESULT //p' >>"$RESULTS"
}
TARGETS=()
for h in ${HOPS//,/ }; do TARGETS+=("floor-$h"); done
for h in ${STORED//,/ }; do TARGETS+=("stored-$h"); done
for h in ${HTTP//,/ }; do TARGETS+=("http-$h"); done
for h in ${DOORS//,/ }; do TARGETS+=("doors-$h"); done
TARGETS+=(switchyard)
[ "$EDGE" = 1 ] && TARGETS+=(edge)
[ "$BIFROST" = 1 ] && TARGETS+=(bifrost-core)
echo "running: ${TARGETS[*]}; rates $RATES and $CLIENTS clients, $DURATION per phase ($WARM warm-up left out), $ROUNDS round(s)" >&2
for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${TARGETS[@]}"; do
    start_target "$t"
    run "$t" "$round" closed "$CLIENTS"
    for r in ${RATES//,/ }; do run "$t" "$round" open "$r"; done
    stop_target
  done
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("switchyard contract floor benchmark: the harness's mock vendor and natsload; one process on CPU 1; ms")
print(f"{'target':12} {'round':>5} {'load':12} {'req/s':>7} {'p50':>7} {'p99':>7} {'errors':>6} {'CPU ms/req':>10} {'foreign':>7}")
for r in rows:
    _, rnd, mode, v = r["label"].split("/")
    l, cores = r["lat"], r.get("target_cores", 0)
    cpu = 1000 * cores / r["achieved_rps"] if r["achieved_rps"] else float("nan")
    print(f"{r['target']:12} {rnd:>5} {mode + ' ' + v:12} {r['achieved_rps']:7.0f} {l['p50_ms']:7.3f} {l['p99_ms']:7.2f} {r['errors']:6d} {cpu:10.3f} {r.get('foreign_cores', 0):7.2f}")
print("CPU ms/req: the target process's CPU over the phase per answered request; foreign: the machine's other")
print("work in the phase (other processes on this shared machine), in cores of 2.")
PY
