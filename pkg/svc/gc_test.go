package svc

import (
	"math"
	"runtime/debug"
	"testing"
)

// The settings apply only where the user did not set Go's own variables.
func TestGCApplyLeavesGoVariablesAlone(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	tests := []struct {
		name        string
		env         map[string]string
		wantPercent int
		wantLimit   int64
	}{
		{"nothing set", nil, 400, 512 << 20},
		{"GOGC set", map[string]string{"GOGC": "50"}, 100, 512 << 20},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, 400, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			GC{Percent: 400, MemoryLimitMiB: 512}.Apply(func(k string) string { return tt.env[k] })
			if got := debug.SetGCPercent(100); got != tt.wantPercent {
				t.Errorf("GC percent %d, want %d", got, tt.wantPercent)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("memory limit %d, want %d", got, tt.wantLimit)
			}
		})
	}
	if err := (GC{Percent: 0, MemoryLimitMiB: -1}).Validate(); err == nil {
		t.Error("GC{0, -1} validated")
	}
}
