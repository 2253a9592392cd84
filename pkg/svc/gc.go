package svc

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// GC tunes the Go garbage collector of a process. Allocation and GC were
// about a fifth of `up`'s CPU under load with Go's default (GOGC=100):
// the heap is small and churns fast (a few KB of JSON and message objects
// per request), so the collector ran very often. GOGC and GOMEMLIMIT, when
// set, win over these settings.
type GC struct {
	// Percent is GOGC when GOGC is not set: the heap may grow this many
	// percent over the live heap before a collection. With one core each
	// collection's 25-50 ms of marking delays the requests that arrive
	// meanwhile, so how often it runs sets the tail (docs/performance.md,
	// "The collector's cycles": 1000 against 400 lowered `up`'s p99 in
	// every pair at 500 req/s and saturated with the ledger off, and used
	// 7-20% more memory at the peak, under MemoryLimitMiB).
	Percent int `envconfig:"GC_PERCENT" default:"1000"`
	// MemoryLimitMiB is GOMEMLIMIT when GOMEMLIMIT is not set: past it the
	// collector runs as often as it must, whatever Percent says (0: none).
	MemoryLimitMiB int64 `envconfig:"GC_MEMORY_LIMIT_MIB" default:"512"`
}

// Validate reports every problem at once.
func (g GC) Validate() error {
	var errs []error
	if g.Percent < -1 || g.Percent == 0 {
		errs = append(errs, fmt.Errorf("SWITCHYARD_GC_PERCENT: %d is not a percentage above 0 (or -1: no collection by growth)", g.Percent))
	}
	if g.MemoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("SWITCHYARD_GC_MEMORY_LIMIT_MIB: %d is negative", g.MemoryLimitMiB))
	}
	return errors.Join(errs...)
}

// Apply sets the collector's target and memory limit of this process,
// each only when its Go variable (GOGC, GOMEMLIMIT) is not set in getenv.
// It returns what it set, for the start-up log line.
func (g GC) Apply(getenv func(string) string) (percent int, limitMiB int64) {
	percent, limitMiB = -2, -1 // -2, -1: left to Go
	if getenv("GOGC") == "" {
		debug.SetGCPercent(g.Percent)
		percent = g.Percent
	}
	if getenv("GOMEMLIMIT") == "" && g.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(g.MemoryLimitMiB << 20)
		limitMiB = g.MemoryLimitMiB
	}
	return percent, limitMiB
}
