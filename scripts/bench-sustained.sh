#!/usr/bin/env bash
# Runs `switchyard up` under one steady open-loop rate for minutes, the way
# docs/performance.md ("Sustained load") was measured: the harness's natsload
# and mock (../shared/bench-peers), the harness's policy, `up` pinned to CPU 1
# with the load and the mock on CPU 0, NATS authentication and the ledger off,
# the collector traced (GODEBUG=gctrace=1). The harness's own phases last
# 15 s, too short to see what grows with time (the server's dedupe ids, the
# reply index).
#
#   PERF_BIN=/tmp/sybench scripts/bench-sustained.sh [switchyard binary ...]
#
# PERF_BIN must hold natsload and mock (scripts/bench-peers.sh builds them
# there, and `switchyard.bin`, the default binary). Several binaries run one
# after the other with the same load, for a before/after pair.
# RATE (500 req/s), DURATION (480 s), OUT (a new temporary folder).
# For each binary it prints natsload's figures and the live heap after the
# collections nearest to each minute, with how long they took.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/perf-up.sh"
RATE=${RATE:-500}
DURATION=${DURATION:-480}
OUT=${OUT:-$(mktemp -d /tmp/sustained.XXXXXX)}
for tool in natsload mock; do
	[ -x "$BIN/$tool" ] || { echo "bench-sustained: $BIN/$tool missing: run scripts/bench-peers.sh with PERF_BIN=$BIN first" >&2; exit 2; }
done
[ $# -gt 0 ] || set -- "$BIN/switchyard.bin"
mkdir -p "$OUT"
perf_start_mock "$OUT"

n=0
for sy in "$@"; do
	n=$((n + 1))
	run=$OUT/run$n
	rm -rf "$run" && mkdir -p "$run"
	perf_start_up bench-sustained "$sy" "$run" "$OUT/policy.yaml"
	taskset -c 0 "$BIN/natsload" -url "nats://127.0.0.1:$NATS_PORT" -rate "$RATE" -c 512 -d "${DURATION}s" -pids "$up_pid" >"$run/natsload.json" 2>"$run/natsload.err" || true
	perf_stop_up
	echo "== $sy ($(basename "$run"))"
	grep '^RESULT ' "$run/natsload.json" | sed 's/^RESULT //' | python3 -c '
import json, sys
d = json.load(sys.stdin)
l = d["lat"]
print("achieved %.0f req/s (offered %d), dropped %d (in-flight cap), timeouts %d; p50 %.2f p90 %.1f p99 %.1f max %.1f ms; CPU %.3f ms per request; foreign cores %.2f"
      % (d["achieved_rps"], d["offered_rps"], d["dropped"], d["timeouts"], l["p50_ms"], l["p90_ms"], l["p99_ms"], l["max_ms"], d["target_cpu_s_per_1k"], d["foreign_cores"]))'
	# gctrace: "gc N @T.s ...: A+B+C ms clock, ..., X->Y->Z MB, ..." (Z: live after the collection)
	awk -v dur="$DURATION" '/^gc [0-9]+ @/ {
		t = $3; sub("@", "", t); sub("s", "", t)
		split($5, clk, "+"); split($0, mb, "->"); split(mb[3], live, " ")
		m = int(t / 60 + 0.5); if (m < 1 || m * 60 > dur) next
		d = t - m * 60; if (d < 0) d = -d
		if (!(m in best) || d < best[m]) { best[m] = d; at[m] = t; heap[m] = live[1]; took[m] = clk[2] }
	} END {
		for (m = 1; m * 60 <= dur; m++) if (m in best) printf "  %2d min: live heap %4d MB after a collection at %.0f s that took %d ms\n", m, heap[m], at[m], took[m]
	}' "$run/up.log"
done
echo "logs: $OUT"
