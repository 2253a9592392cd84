package integration

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

func withHedgedRoutes(ratio float64) option {
	return func(c *app.Config) {
		chain := []policy.Target{{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}}
		c.Policy.Routes = append(c.Policy.Routes,
			policy.Route{Name: "plain", Chain: chain},
			policy.Route{Name: "hedged", Strategy: policy.StrategyHedged, Chain: chain,
				Hedge: policy.Hedge{After: policy.Duration{Duration: 50 * time.Millisecond}, MaxRatio: ratio}},
		)
		if err := c.Policy.Validate(); err != nil {
			panic(err)
		}
		// A slow primary, a fast second vendor.
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{
			// 1.5 s against a hedge that answers after ~60 ms: the hedge wins
			// even when a loaded machine adds hundreds of ms to it.
			"openai":    {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 1500}}},
			"anthropic": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 10}}},
		}}
	}
}

// quantile is the q-quantile of the latencies of the replies whose id
// starts with prefix.
func quantile(rs map[string][]*envelope.Reply, prefix string, q float64) int64 {
	var ls []int64
	for id, r := range rs {
		if id[:len(prefix)] == prefix {
			ls = append(ls, r[0].LatencyMS)
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return ls[int(float64(len(ls))*q)]
}

func p99(rs map[string][]*envelope.Reply, prefix string) int64 { return quantile(rs, prefix, 0.99) }

// With a slow primary, hedging cuts p99 latency; the first good answer
// wins, exactly one reply is sent, and both calls are billed.
func TestHedgingCutsTailLatency(t *testing.T) {
	e := start(t, withHedgedRoutes(1.0))
	var reqs []*envelope.Request
	for i := range 20 {
		reqs = append(reqs, e.request(fmt.Sprintf("p%02d", i), "plain", fmt.Sprintf("plain %d", i)))
		reqs = append(reqs, e.request(fmt.Sprintf("h%02d", i), "hedged", fmt.Sprintf("hedged %d", i)))
	}
	replies := e.submitAll(reqs, 60*time.Second)
	e.settled(60 * time.Second) // the slow losers have finished: no second reply may follow
	for id, rs := range replies {
		if len(rs) != 1 || rs[0].Status != envelope.StatusOK {
			t.Fatalf("%s: %d replies, %+v", id, len(rs), rs[0].Error)
		}
	}
	for subject, n := range e.repliesStored() {
		if n != 1 {
			t.Fatalf("%s: %d stored replies, want 1", subject, n)
		}
	}
	// Of 20 requests the p99 is the slowest one, which one hiccup of a
	// loaded machine decides: the tail is judged at p90 (the 18th), and
	// the slowest hedged request must still beat the slowest plain one.
	plain, hedged := p99(replies, "p"), p99(replies, "h")
	plain50, hedged90 := quantile(replies, "p", 0.5), quantile(replies, "h", 0.9)
	t.Logf("latency: plain p50 %d ms p99 %d ms, hedged p90 %d ms p99 %d ms", plain50, plain, hedged90, hedged)
	if hedged90 >= plain50/2 || hedged >= plain {
		t.Fatalf("hedging should cut the tail (plain p50 %d ms p99 %d ms, hedged p90 %d ms p99 %d ms)", plain50, plain, hedged90, hedged)
	}
	where := fmt.Sprintf(" WHERE tenant = '%s' AND route = 'hedged'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+where+" AND hedged = 1", 40, 30*time.Second); got != 40 {
		t.Fatalf("hedged attempt rows = %d, want 40 (both branches of 20 requests recorded)", got)
	}
	// The slow primaries lost and were cut short mid-call, not waited for.
	if got := e.count("SELECT count() FROM %s.attempts FINAL" + where + " AND vendor = 'openai' AND outcome = 'error'"); got != 20 {
		t.Fatalf("cancelled primary attempts = %d, want 20", got)
	}
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+where, 20, 30*time.Second); got != 20 {
		t.Fatalf("hedged request rows = %d, want 20", got)
	}
}

// The hedging budget caps the share of a tenant's requests that hedge.
func TestHedgingBudget(t *testing.T) {
	e := start(t, withHedgedRoutes(0.25))
	var reqs []*envelope.Request
	for i := range 40 {
		reqs = append(reqs, e.request(fmt.Sprintf("b%02d", i), "hedged", fmt.Sprintf("budget %d", i)))
	}
	e.submitAll(reqs, 60*time.Second)
	hedges := e.sys.Sim.Calls().Model("anthropic", "claude-haiku-4-5").Calls
	t.Logf("%d of 40 requests hedged (max ratio 0.25)", hedges)
	if hedges > 10 || hedges == 0 {
		t.Fatalf("hedges = %d, want 1..10", hedges)
	}
}
