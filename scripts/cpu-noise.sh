#!/usr/bin/env bash
# Measures what the machine does to plain CPU work, with no Switchyard in it:
# a loop of fixed chunks of work (SHA-256 of 4 KiB, 40 times) pinned to one
# CPU, each chunk timed. A chunk that takes more than 3× the median is slow;
# slow chunks less than 50 ms apart form one episode. docs/performance.md
# ("The 500 req/s tail over time") uses it: on this machine the episodes come
# about every 1.5 s, last about 100 ms and slow the chunks 3-14×, which is
# what sets p99 of a process that uses most of its core.
#
#   scripts/cpu-noise.sh [cpu] [seconds] [gap]
#
# cpu: the CPU to pin to (1, the one the harness gives its target); seconds:
# how long (20); gap: "idle" sleeps 2 ms after each chunk, like a lightly
# loaded server, "busy" (the default) runs back to back.
# Prints the median and p99 chunk time, every episode (start, length, slow
# chunks) and the share of the time in episodes. Needs only Go.
set -euo pipefail
CPU=${1:-1}
SECONDS_TO_RUN=${2:-20}
GAP=${3:-busy}
case $GAP in busy | idle) ;; *)
	echo "cpu-noise: gap must be busy or idle, not $GAP" >&2
	exit 2
	;;
esac
command -v taskset >/dev/null || { echo "cpu-noise: taskset (util-linux) is required" >&2; exit 2; }
WORK=$(mktemp -d /tmp/cpu-noise.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/go.mod" <<'EOF'
module cpunoise

go 1.22
EOF
cat >"$WORK/main.go" <<'EOF'
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"
)

type episode struct {
	from, to time.Duration
	chunks   int
}

func main() {
	seconds, err := strconv.Atoi(os.Args[1])
	if err != nil || seconds <= 0 {
		fmt.Fprintln(os.Stderr, "cpu-noise: seconds must be a positive number")
		os.Exit(2)
	}
	idle := os.Args[2] == "idle"
	run := time.Duration(seconds) * time.Second
	buf := make([]byte, 4096)
	var took, at []time.Duration
	start := time.Now()
	for time.Since(start) < run {
		t := time.Now()
		for i := 0; i < 40; i++ {
			sum := sha256.Sum256(buf)
			buf[0] = sum[0]
		}
		took = append(took, time.Since(t))
		at = append(at, t.Sub(start))
		if idle {
			time.Sleep(2 * time.Millisecond)
		}
	}
	sorted := append([]time.Duration(nil), took...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	fmt.Printf("chunks %d, median %v, p99 %v, max %v\n", len(sorted), median, sorted[len(sorted)*99/100], sorted[len(sorted)-1])
	var eps []episode
	for i, d := range took {
		if d <= 3*median {
			continue
		}
		if n := len(eps); n > 0 && at[i]-eps[n-1].to < 50*time.Millisecond {
			eps[n-1].to, eps[n-1].chunks = at[i]+d, eps[n-1].chunks+1
			continue
		}
		eps = append(eps, episode{at[i], at[i] + d, 1})
	}
	var in time.Duration
	for _, e := range eps {
		in += e.to - e.from
		fmt.Printf("episode at %7.3f s: %6.1f ms, %d slow chunks\n", e.from.Seconds(), float64(e.to-e.from)/1e6, e.chunks)
	}
	fmt.Printf("%d episodes, %.1f%% of the time\n", len(eps), 100*in.Seconds()/run.Seconds())
}
EOF
(cd "$WORK" && GOWORK=off GOFLAGS= go build -o cpunoise .)
echo "cpu-noise: CPU $CPU, $SECONDS_TO_RUN s, $GAP"
taskset -c "$CPU" "$WORK/cpunoise" "$SECONDS_TO_RUN" "$GAP"
