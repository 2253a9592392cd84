package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// 50 concurrent requests against a daily budget that fits 10 estimates:
// at most 10 are served, the rest get budget_exceeded, and the ledger's
// total stays within the budget. The budget arrives by `policy apply`.
func TestBudgetHoldsUnderConcurrency(t *testing.T) {
	// Slow answers keep all 50 in flight together, so every reservation is
	// made before any is settled with its (lower) real cost. 300 ms was
	// not enough on a loaded 2-core machine: publishing and reserving 50
	// took longer, early answers settled and freed budget (20 served).
	e := start(t, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Defaults: sim.Behavior{Latency: &sim.Latency{BaseMS: 2000}}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var reqs []*envelope.Request
	for i := range 50 {
		r := e.request(fmt.Sprintf("u%02d", i), "chat", "Same size prompt for every request")
		r.MaxTokens = 100
		reqs = append(reqs, r)
	}
	// The estimate the router will reserve for each of these requests.
	pol := e.sys.Policy
	route, _ := pol.Route("chat")
	w := &envelope.Work{Request: *reqs[0], Class: envelope.Classification{TokenEstimate: len(reqs[0].Messages[0].Content)/4 + 4 + 100}}
	estimate := budget.EstimateUSD(pol, route, w)
	limit := estimate * 10.5

	// Apply the same policy plus the tenant's budget.
	pol.Tenants = map[string]policy.Tenant{e.tenant: {Budget: policy.Budget{USDPerDay: limit}}}
	src, err := policy.Marshal(pol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sys.Policies.Apply(ctx, src, "tester", "budget for "+e.tenant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool {
		tn, ok := e.sys.Policies.Current().Tenant(e.tenant)
		return ok && tn.Budget.USDPerDay == limit
	})

	replies := e.submitAll(reqs, 60*time.Second)
	served, refused := 0, 0
	for id, rs := range replies {
		switch r := rs[0]; {
		case r.Status == envelope.StatusOK:
			served++
		case r.Error != nil && r.Error.Code == envelope.CodeBudgetExceeded:
			refused++
		default:
			t.Fatalf("%s: %+v", id, r.Error)
		}
	}
	t.Logf("estimate $%.6f, budget $%.6f: %d served, %d budget_exceeded", estimate, limit, served, refused)
	if served != 10 || refused != 40 {
		t.Fatalf("%d served, %d refused; want 10 and 40", served, refused)
	}
	var total float64
	q := fmt.Sprintf("SELECT sum(cost_usd) FROM %s.attempts FINAL WHERE tenant = '%s'", e.db, e.tenant)
	e.eventually("SELECT count() FROM %s.requests FINAL WHERE tenant = '"+e.tenant+"'", 50, 30*time.Second)
	if err := e.ch.QueryRow(ctx, q).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total > limit {
		t.Fatalf("ledger total $%.6f exceeds the budget $%.6f", total, limit)
	}
}
