package pipeline

import "testing"

func TestTraceID(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	tests := []struct{ in, want string }{
		{"00-" + id + "-0123456789abcdef-01", id},
		{"00-" + id + "-0123456789abcdef-00", id},
		{"", ""},
		{"00-" + id, ""},
		{"00-" + id + "-0123456789abcdef", ""},
		{"00-" + id + "-0123456789abcdef-01-extra", ""},
		{"00-" + id[:31] + "-0123456789abcdef-01", ""},
		{"00-" + id + "0-0123456789abcdef-01", ""},
		{"---", ""},
	}
	for _, tt := range tests {
		if got := TraceID(tt.in); got != tt.want {
			t.Errorf("TraceID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = TraceID("00-" + id + "-0123456789abcdef-01") }); n != 0 {
		t.Errorf("TraceID allocates %v times", n)
	}
}
