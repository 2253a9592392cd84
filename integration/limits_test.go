package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// Three executor replicas of one vendor with a 600 requests/minute limit,
// under three times that offered load for 30 s: the vendor never sees more
// than the limit in a minute, and the surplus spills to the next vendor
// with fallback reason saturated.
func TestVendorRPMHoldsAcrossReplicas(t *testing.T) {
	const rpm, perSecond, seconds = 600, 30, 30 // 30/s = 1800/min = 3 × 600
	e := start(t, func(c *app.Config) {
		c.ExecutorReplicas = 3
		v := c.Policy.Vendors["openai"]
		v.RPM = rpm
		c.Policy.Vendors["openai"] = v
	})
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n := perSecond * seconds
	began := time.Now()
	for i := range n {
		if wait := time.Until(began.Add(time.Duration(i) * time.Second / perSecond)); wait > 0 {
			time.Sleep(wait)
		}
		if err := e.client.Publish(ctx, e.request(fmt.Sprintf("q%03d", i), "chat", fmt.Sprintf("limit %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := col.Wait(ctx, n); err != nil {
		t.Fatal(err)
	}
	byVendor, saturated := map[string]int{}, 0
	for id, rs := range col.All() {
		r := rs[0]
		if len(rs) != 1 || r.Status != "ok" {
			t.Fatalf("%s: %d replies, %+v", id, len(rs), r.Error)
		}
		byVendor[r.Vendor]++
		// A saturated target is skipped, not attempted: the spilled request
		// shows only the fallback's attempt.
		if r.Fallback && len(r.Attempts) == 1 && r.Attempts[0].Vendor == "anthropic" {
			saturated++
		}
	}
	calls := e.sys.Sim.Calls().Model("openai", "gpt-4o-mini")
	t.Logf("%d requests in %s: %v; openai calls %d (peak %d in a calendar minute), %d spilled as saturated",
		n, time.Since(began).Round(time.Second), byVendor, calls.Calls, calls.PeakPerMinute, saturated)
	if calls.Calls > rpm || calls.PeakPerMinute > rpm {
		t.Fatalf("openai saw %d calls (peak %d/min); the limit is %d/min", calls.Calls, calls.PeakPerMinute, rpm)
	}
	if calls.Calls < rpm*9/10 {
		t.Fatalf("openai saw only %d calls; the limiter should let about %d through", calls.Calls, rpm)
	}
	if saturated != n-int(calls.Calls) || byVendor["anthropic"] != saturated {
		t.Fatalf("spill: %d saturated, %v by vendor, %d openai calls", saturated, byVendor, calls.Calls)
	}
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE fallback_reason = 'saturated' AND "+tenant, uint64(saturated), 30*time.Second); got != uint64(saturated) {
		t.Fatalf("saturated rows = %d, want %d", got, saturated)
	}
}

// A route set to wait (not spill) keeps requests over the vendor's limit
// until the sliding window frees a slot, then calls the same vendor.
func TestSaturatedRouteWaitsForASlot(t *testing.T) {
	const rpm = 3
	e := start(t, func(c *app.Config) {
		v := c.Policy.Vendors["openai"]
		v.RPM = rpm
		c.Policy.Vendors["openai"] = v
		c.Policy.Routes = append(c.Policy.Routes, policy.Route{Name: "patient", OnSaturated: policy.OnSaturatedWait,
			Chain: []policy.Target{{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}}})
		if err := c.Policy.Validate(); err != nil {
			panic(err)
		}
	})
	var reqs []*envelope.Request
	for i := range rpm + 2 {
		r := e.request(fmt.Sprintf("w%d", i), "patient", fmt.Sprintf("wait %d", i))
		r.TimeoutMS = 120_000
		reqs = append(reqs, r)
	}
	began := time.Now()
	replies := e.submitAll(reqs, 100*time.Second)
	for id, rs := range replies {
		if r := rs[0]; r.Status != envelope.StatusOK || r.Vendor != "openai" || r.Fallback {
			t.Fatalf("%s: want openai without fallback, got %s %s fallback=%v %+v", id, r.Status, r.Vendor, r.Fallback, r.Error)
		}
	}
	t.Logf("%d requests over a %d rpm limit answered in %s, all by openai", rpm+2, rpm, time.Since(began).Round(time.Second))
	if elapsed := time.Since(began); elapsed < 50*time.Second {
		t.Fatalf("answered in %s: the requests over the limit should have waited for the window", elapsed)
	}
	if n := e.simCalls("anthropic", "claude-haiku-4-5"); n != 0 {
		t.Fatalf("anthropic called %d times; a waiting route does not spill", n)
	}
}
