package natsx

import (
	"strings"
	"testing"
	"time"
)

// TestValidateAckWait: a stage's AckWait must let a redelivered message's
// re-publish fall inside the internal streams' dedupe window.
func TestValidateAckWait(t *testing.T) {
	window := DefaultTopology().DedupeWindow
	tests := []struct {
		wait time.Duration
		want string // "" → accepted
	}{
		{0, "must be at least 1s"},
		{999 * time.Millisecond, "must be at least 1s"},
		{time.Second, ""},
		{30 * time.Second, ""},
		{window / 2, ""},
		{window/2 + time.Second, "more than half the internal streams' dedupe window"},
		{window, "more than half"},
	}
	for _, tt := range tests {
		err := ValidateAckWait("SWITCHYARD_GATE_ACK_WAIT", tt.wait)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.wait, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "SWITCHYARD_GATE_ACK_WAIT: ")):
			t.Errorf("%s: error %v, want one naming the variable and saying %q", tt.wait, err, tt.want)
		}
	}
}

// TestInternalStreamsShareTheDedupeWindow: the streams whose publishers
// re-publish under the same id keep ids for DedupeWindow, no longer (the
// server holds them all in memory).
func TestInternalStreamsShareTheDedupeWindow(t *testing.T) {
	c := DefaultTopology()
	if c.DedupeWindow != 2*time.Minute {
		t.Errorf("DedupeWindow %s; docs/subjects.md and docs/performance.md say 2 min", c.DedupeWindow)
	}
	seen := map[string]time.Duration{}
	for _, sc := range c.Streams() {
		seen[sc.Name] = sc.Duplicates
	}
	for _, name := range []string{StreamPipeline, StreamReplies, StreamTelemetry} {
		if seen[name] != c.DedupeWindow {
			t.Errorf("%s keeps ids for %s, want %s", name, seen[name], c.DedupeWindow)
		}
	}
	if seen[StreamRequests] != RequestsDedupeWindow {
		t.Errorf("%s keeps ids for %s, want %s", StreamRequests, seen[StreamRequests], RequestsDedupeWindow)
	}
}
