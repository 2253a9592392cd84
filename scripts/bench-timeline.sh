#!/usr/bin/env bash
# When the slow requests happen: runs `switchyard up` the way the harness
# does (../shared/bench-peers' mock and policy, `up` pinned to CPU 1, the
# load and the mock on CPU 0, NATS authentication and the ledger off, the
# collector traced), sends one request every 1/RATE s on llm.requests for
# DURATION s, and prints every 100-ms window of send time that holds a
# request slower than SLOW_MS, with the collections that started in it, and
# the run's p50, p90 and p99 (from publish to the reply's arrival).
# docs/performance.md ("The 500 req/s tail over time") was measured this way;
# scripts/cpu-noise.sh shows the machine's own share.
#
#   PERF_BIN=/tmp/sybench scripts/bench-timeline.sh [switchyard binary]
#
# PERF_BIN must hold mock (scripts/bench-peers.sh builds it there, and
# `switchyard.bin`, the default binary). RATE (500 req/s), DURATION (20 s),
# SLOW_MS (20), OUT (a new temporary folder); extra environment for `up`
# in UP_ENV (for example "GOGC=off GOMEMLIMIT=6GiB SWITCHYARD_GC_PERCENT=-1").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/perf-up.sh"
RATE=${RATE:-500}
DURATION=${DURATION:-20}
SLOW_MS=${SLOW_MS:-20}
OUT=${OUT:-$(mktemp -d /tmp/timeline.XXXXXX)}
SY=${1:-$BIN/switchyard.bin}
[ -x "$BIN/mock" ] || { echo "bench-timeline: $BIN/mock missing: run scripts/bench-peers.sh with PERF_BIN=$BIN first" >&2; exit 2; }
[ -x "$SY" ] || { echo "bench-timeline: $SY is not an executable switchyard binary" >&2; exit 2; }
mkdir -p "$OUT/client"

# The client: the repo's own nats.go, so it needs nothing the repo does not.
NATS_GO=$(awk '$1 == "github.com/nats-io/nats.go" { print $2 }' "$ROOT/pkg/go.mod")
cp "$ROOT/pkg/go.sum" "$OUT/client/go.sum"
cat >"$OUT/client/go.mod" <<EOF
module timeline

go 1.22

require github.com/nats-io/nats.go $NATS_GO
EOF
cat >"$OUT/client/main.go" <<'EOF'
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("url", "", "NATS URL")
	rate := flag.Int("rate", 500, "requests per second")
	dur := flag.Duration("d", 20*time.Second, "how long to send")
	slow := flag.Duration("slow", 20*time.Millisecond, "a request slower than this is slow")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "timeline:", err)
		os.Exit(1)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "timeline:", err)
		os.Exit(1)
	}
	type window struct {
		n, slow int
		max     time.Duration
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	windows := map[int]*window{}
	var lats []time.Duration
	start := time.Now()
	if _, err := nc.Subscribe("llm.replies.perf.>", func(m *nats.Msg) {
		now := time.Now()
		id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		mu.Lock()
		defer mu.Unlock()
		at, ok := sent[id]
		if !ok {
			return
		}
		delete(sent, id)
		k := int(at.Sub(start) / (100 * time.Millisecond))
		w := windows[k]
		if w == nil {
			w = &window{}
			windows[k] = w
		}
		lat := now.Sub(at)
		lats = append(lats, lat)
		w.n++
		if lat > *slow {
			w.slow++
		}
		w.max = max(w.max, lat)
	}); err != nil {
		fmt.Fprintln(os.Stderr, "timeline:", err)
		os.Exit(1)
	}
	fmt.Printf("start %.3f\n", float64(start.UnixNano())/1e9)
	prefix := fmt.Sprintf("tl%d-", start.UnixNano())
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	n := 0
	for time.Since(start) < *dur {
		<-tick.C
		id := fmt.Sprintf("%s%d", prefix, n)
		n++
		body := `{"id":"` + id + `","tenant":"perf","route":"bench","max_tokens":16,"messages":[{"role":"user","content":"Say hello"}]}`
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "llm.requests", Header: nats.Header{"Nats-Msg-Id": []string{id}}, Data: []byte(body)}); err != nil {
			fmt.Fprintln(os.Stderr, "timeline: publish:", err)
			os.Exit(1)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slowWindows := 0
	for k := 0; k <= int(*dur/(100*time.Millisecond)); k++ {
		if w := windows[k]; w != nil && w.slow > 0 {
			slowWindows++
			fmt.Printf("window %.1f %d %d %.1f\n", float64(k)/10, w.n, w.slow, float64(w.max)/1e6)
		}
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	pct := func(p int) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, len(lats)*p/100)]) / 1e6
	}
	fmt.Printf("summary %d %d %d %d %.2f %.2f %.2f\n", slowWindows, len(windows), len(lats), n, pct(50), pct(90), pct(99))
	if len(lats) != n {
		os.Exit(3)
	}
}
EOF
(cd "$OUT/client" && GOWORK=off GOFLAGS=-mod=mod go build -o timeline .)

perf_start_mock "$OUT"
up_start=$(date +%s.%N)
# shellcheck disable=SC2086 # UP_ENV is a list of assignments
perf_start_up bench-timeline "$SY" "$OUT" "$OUT/policy.yaml" ${UP_ENV:-}
rc=0
taskset -c 0 "$OUT/client/timeline" -url "nats://127.0.0.1:$NATS_PORT" -rate "$RATE" -d "${DURATION}s" -slow "${SLOW_MS}ms" >"$OUT/timeline.txt" || rc=$?
perf_stop_up
[ "$rc" = 0 ] || { echo "bench-timeline: not every request was answered (client exit $rc); see $OUT" >&2; exit 1; }

# gctrace: "gc N @T.s P%: A+B+C ms clock, ..." with T seconds since up started.
awk -v upstart="$up_start" -v rate="$RATE" -v slowms="$SLOW_MS" '
	FNR == NR {
		if ($1 == "gc" && $3 ~ /^@/) { t = $3; sub("@", "", t); sub("s", "", t); split($5, clk, "+"); gct[++ngc] = upstart + t; gcmark[ngc] = clk[2] }
		next
	}
	$1 == "start" { t0 = $2; next }
	$1 == "window" { w[++nw] = $2; wn[nw] = $3; ws[nw] = $4; wmax[nw] = $5; next }
	$1 == "summary" { slowwin = $2; allwin = $3; replies = $4; sent = $5; p50 = $6; p90 = $7; p99 = $8 }
	END {
		printf "%d req/s for %d requests, all answered: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", rate, sent, p50, p90, p99
		printf "windows of 100 ms with a request over %d ms: %d of %d\n", slowms, slowwin, allwin
		inwin = 0; during = 0
		for (g = 1; g <= ngc; g++) { rel = gct[g] - t0; if (rel >= 0 && rel * 10 < allwin) during++ }
		for (i = 1; i <= nw; i++) {
			note = ""
			for (g = 1; g <= ngc; g++) { rel = gct[g] - t0; if (rel >= w[i] - 0.1 && rel < w[i] + 0.1) note = sprintf("  collection at %.2f s, mark %s ms", rel, gcmark[g]) }
			printf "  %5.1f s: %3d requests, %3d slow, slowest %6.1f ms%s\n", w[i], wn[i], ws[i], wmax[i], note
		}
		printf "collections during the load: %d\n", during
	}' "$OUT/up.log" "$OUT/timeline.txt"
echo "logs: $OUT"
