package router

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A router message handled again (its ack was lost, or the router crashed
// after counting) is not counted again against the tenant's hedging ratio,
// and gets the decision its first delivery got, on the same router replica
// or on another one.
func TestHedgeRatioCountsARedeliveredRequestOnce(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tracker, err := hedge.New(ctx, js, "")
	if err != nil {
		t.Fatal(err)
	}
	hedgedRouter := func() *Router {
		r := testRouter(t)
		p := *r.d.Policy.Current()
		p.Routes = append([]policy.Route(nil), p.Routes...)
		p.Routes = append(p.Routes, policy.Route{Name: "h", Strategy: policy.StrategyHedged,
			Hedge: policy.Hedge{After: policy.Duration{Duration: time.Millisecond}, MaxRatio: 0.5},
			Chain: []policy.Target{{Vendor: "a", Model: "g1"}, {Vendor: "b", Model: "g2"}}})
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		r.d.Policy, r.d.Hedges = fixedPolicy{&p}, tracker
		return r
	}
	first, other := hedgedRouter(), hedgedRouter()
	now := time.Now()
	work := func(id string) *envelope.Work {
		return &envelope.Work{Key: "t." + id, Request: envelope.Request{ID: id, Tenant: "t", Route: "h", Messages: []envelope.Message{{Role: "user", Content: "hi"}}},
			ReceivedAt: now, Deadline: now.Add(30 * time.Second)}
	}
	// With max_ratio 0.5 the first request runs plain, the second is
	// hedged, and so on: every redelivery must leave that rhythm alone.
	steps := []struct {
		name   string
		r      *Router
		id     string
		hedged bool
	}{
		{"r1", first, "r1", false},
		{"r2", first, "r2", true},
		{"r2 redelivered", first, "r2", true},
		{"r2 redelivered to another replica", other, "r2", true},
		{"r1 redelivered", first, "r1", false},
		{"r1 redelivered to another replica", other, "r1", false},
		{"r3", first, "r3", false},
		{"r4", first, "r4", true},
	}
	for _, s := range steps {
		outs, err := s.r.handle(ctx, work(s.id), EvClassified, now)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := len(outs) == 2; got != s.hedged {
			t.Fatalf("%s: hedged = %v (%d dispatches), want %v", s.name, got, len(outs), s.hedged)
		}
	}
}
