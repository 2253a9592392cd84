package edge

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// The rpm window slides: a key that used its limit at the end of one
// minute is still refused just after the boundary (a fixed window would
// let a second full burst through), and admitted again once enough of the
// previous minute has slid out; retry-after says when.
func TestRPMSlidingWindow(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx := context.Background()
	minute := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	now := minute.Add(50 * time.Second)
	l := newKeyLimits(js, func() time.Time { return now })
	rec := &apikey.Record{ID: "k1", Limits: apikey.Limits{RPM: 3}}
	steps := []struct {
		at         time.Duration // after the minute started
		admitted   bool
		retryAfter int
	}{
		{50 * time.Second, true, 0},
		{51 * time.Second, true, 0},
		{52 * time.Second, true, 0},
		{53 * time.Second, false, 7},  // the current minute is full: until it ends
		{61 * time.Second, false, 19}, // 3×59/60 + 1 > 3: until a third of the last minute slid out (at +80 s)
		{90 * time.Second, true, 0},   // 3×1/2 + 0 + 1 ≤ 3
		{90 * time.Second, false, 10}, // 1.5 + 1 + 1 > 3: until 2/3 of the last minute slid out (at +100 s)
	}
	for i, s := range steps {
		now = minute.Add(s.at)
		release, aerr := l.admit(ctx, rec)
		if s.admitted != (aerr == nil) {
			t.Fatalf("step %d at +%s: admitted %v, want %v (%+v)", i, s.at, aerr == nil, s.admitted, aerr)
		}
		if aerr != nil {
			if aerr.Status != 429 || aerr.Code != "rate_limit_exceeded" || aerr.RetryAfter != s.retryAfter {
				t.Fatalf("step %d: %+v, want 429 with retry-after %d", i, aerr, s.retryAfter)
			}
			continue
		}
		release()
	}
	// Another key has its own window.
	if _, aerr := l.admit(ctx, &apikey.Record{ID: "k2", Limits: apikey.Limits{RPM: 1}}); aerr != nil {
		t.Fatalf("another key: %+v", aerr)
	}
}

// Max in flight: the slot is taken until released, released once only.
func TestMaxInFlight(t *testing.T) {
	_, js := testkit.JetStream(t)
	l := newKeyLimits(js, time.Now)
	rec := &apikey.Record{ID: "k", Limits: apikey.Limits{MaxInFlight: 1}}
	r1, aerr := l.admit(context.Background(), rec)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if _, aerr := l.admit(context.Background(), rec); aerr == nil || aerr.Status != 429 || aerr.RetryAfter != 1 {
		t.Fatalf("second in flight: %+v", aerr)
	}
	r1()
	r1() // a second release must not free a slot twice
	r2, aerr := l.admit(context.Background(), rec)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if _, aerr := l.admit(context.Background(), rec); aerr == nil {
		t.Fatal("a double release freed two slots")
	}
	r2()
}
