package testkit

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventually(t *testing.T) {
	for _, tc := range []struct {
		name    string
		within  time.Duration
		holdsAt int // poll on which cond first holds; 0: never
		want    string
	}{
		{name: "holds at once", within: 10 * time.Second, holdsAt: 1},
		{name: "holds later", within: 10 * time.Second, holdsAt: 5},
		{name: "never holds", within: 50 * time.Millisecond, want: "timed out after 50ms waiting for the thing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &fatalRecorder{TB: t}
			polls := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				Eventually(rec, tc.within, "the thing", func() bool { polls++; return polls == tc.holdsAt })
			}()
			<-done
			if rec.msg != tc.want {
				t.Errorf("failure %q, want %q", rec.msg, tc.want)
			}
			if tc.holdsAt > 0 && polls != tc.holdsAt {
				t.Errorf("polled %d times after cond held at poll %d", polls, tc.holdsAt)
			}
		})
	}
}
