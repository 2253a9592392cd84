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
		release, aerr := l.admit(ctx, rec, "r", now.Add(time.Second))
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
	if _, aerr := l.admit(ctx, &apikey.Record{ID: "k2", Limits: apikey.Limits{RPM: 1}}, "r", now.Add(time.Second)); aerr != nil {
		t.Fatalf("another key: %+v", aerr)
	}
}

// Max in flight holds across replicas (two keyLimits on one NATS): a slot
// is taken until released, released once only, and the slot of a request
// whose replica never released it (it died) frees at its deadline.
func TestMaxInFlightAcrossReplicas(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, b := newKeyLimits(js, clock), newKeyLimits(js, clock)
	rec := &apikey.Record{ID: "k", Limits: apikey.Limits{MaxInFlight: 2}}
	deadline := now.Add(30 * time.Second)
	ra, aerr := a.admit(ctx, rec, "r1", deadline)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if _, aerr := b.admit(ctx, rec, "r2", deadline); aerr != nil { // never released: its replica "dies"
		t.Fatal(aerr)
	}
	for name, l := range map[string]*keyLimits{"a": a, "b": b} {
		if _, aerr := l.admit(ctx, rec, "r3", deadline); aerr == nil || aerr.Status != 429 || aerr.Code != "concurrency_limit_exceeded" || aerr.RetryAfter != 1 {
			t.Fatalf("a third in flight on replica %s: %+v", name, aerr)
		}
	}
	ra()
	ra() // a second release must not free a second slot
	rb, aerr := b.admit(ctx, rec, "r4", deadline)
	if aerr != nil {
		t.Fatalf("after a release: %+v", aerr)
	}
	if _, aerr := a.admit(ctx, rec, "r5", deadline); aerr == nil {
		t.Fatal("a double release freed two slots")
	}
	// r2's replica never releases: its slot frees once its deadline (plus
	// the margin) has passed.
	rb()
	now = deadline.Add(inFlightMargin + time.Millisecond)
	r6, aerr := a.admit(ctx, rec, "r6", now.Add(30*time.Second))
	if aerr != nil {
		t.Fatalf("after r2's deadline: %+v", aerr)
	}
	r7, aerr := b.admit(ctx, rec, "r7", now.Add(30*time.Second))
	if aerr != nil {
		t.Fatalf("after r2's deadline, the second slot: %+v", aerr)
	}
	r6()
	r7()
	// Another key has its own slots.
	if _, aerr := a.admit(ctx, &apikey.Record{ID: "other", Limits: apikey.Limits{MaxInFlight: 1}}, "x", deadline); aerr != nil {
		t.Fatalf("another key: %+v", aerr)
	}
}
