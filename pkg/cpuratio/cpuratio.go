// Package cpuratio measures, in one run, the process CPU of a piece of code
// against a baseline doing the same work: the regression checks of issue 9
// (docs/performance.md) bound that ratio instead of a time, so a busy
// machine, which slows both sides alike, does not fail them.
package cpuratio

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time this process has used (user + system): unlike
// wall time, it does not grow while other processes hold the CPU.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Compare runs baseline and current in turn, rounds times each, and returns
// the least CPU each used in one run and their ratio (current / baseline).
// Interleaving and keeping the best of each side means a burst of other
// work in this process (a GC of the other side's garbage) hits both alike.
func Compare(rounds int, baseline, current func()) (base, cur time.Duration, ratio float64) {
	measure := func(f func()) time.Duration {
		start := ProcessCPU()
		f()
		return ProcessCPU() - start
	}
	for range max(rounds, 1) {
		if d := measure(baseline); base == 0 || d < base {
			base = d
		}
		if d := measure(current); cur == 0 || d < cur {
			cur = d
		}
	}
	if base > 0 {
		ratio = float64(cur) / float64(base)
	}
	return base, cur, ratio
}
