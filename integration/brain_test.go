package integration

// Regression tests of issue 11 §1 (every routing decision is the router's)
// and the accounting items of §3 that live in the router, gate and
// executor. Each failed on the code before the redesign.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// withRoute adds a route to the test's policy.
func withRoute(r policy.Route) option {
	return func(c *app.Config) {
		c.Policy.Routes = append(c.Policy.Routes, r)
		if err := c.Policy.Validate(); err != nil {
			panic(err)
		}
	}
}

func withScenario(sc sim.Scenario) option {
	return func(c *app.Config) { c.Scenario = &sc }
}

// withBudget applies the running policy plus a daily budget for the test's
// tenant, and waits until the stages see it.
func (e *env) withBudget(usdPerDay float64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pol := e.sys.Policy
	pol.Tenants = map[string]policy.Tenant{e.tenant: {Budget: policy.Budget{USDPerDay: usdPerDay}}}
	src, err := policy.Marshal(pol)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.sys.Policies.Apply(ctx, src, "tester", "budget for "+e.tenant); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, 2*time.Second, func() bool {
		tn, ok := e.sys.Policies.Current().Tenant(e.tenant)
		return ok && tn.Budget.USDPerDay == usdPerDay
	})
}

// escalating is a route whose failing drafts escalate: a cheap model, a
// us-only model, then an EU-capable one.
var escalating = policy.Route{Name: "escalating", Strategy: policy.StrategyFallback, OnQualityFail: policy.OnQualityEscalate, Chain: []policy.Target{
	{Vendor: "gemini", Model: "gemini-2.5-flash"},
	{Vendor: "openrouter", Model: "meta-llama/llama-3.3-70b-instruct"}, // residency us only
	{Vendor: "openai", Model: "gpt-4o"},
}}

// Every draft of gemini is invalid JSON, so every request escalates.
var badDrafts = sim.Scenario{Vendors: map[string]sim.VendorScenario{"gemini": {Behavior: sim.Behavior{InvalidJSONRate: sim.Ptr(1.0)}}}}

func jsonRequest(e *env, id, route string) *envelope.Request {
	r := e.request(id, route, "Return the order as a JSON object "+id)
	r.ResponseFormat = &envelope.ResponseFormat{Type: "json_object"}
	return r
}

// An eu request whose draft fails the gate on an escalating route never
// reaches the us-only model that follows in the chain (the gate used to
// send escalations straight to the next executor, past the router's
// eligibility rules).
func TestEscalationKeepsResidency(t *testing.T) {
	e := start(t, withRoute(escalating), withScenario(badDrafts))
	eu := jsonRequest(e, "eu1", "escalating")
	eu.Policy = &envelope.RequestPolicy{Residency: "eu"}
	any := jsonRequest(e, "any1", "escalating")
	replies := e.submitAll([]*envelope.Request{eu, any}, 30*time.Second)

	got := replies["eu1"][0]
	if got.Status != envelope.StatusOK || got.Vendor != "openai" || got.Model != "gpt-4o" {
		t.Fatalf("eu request: want an answer from openai/gpt-4o, got %s/%s %+v", got.Vendor, got.Model, got.Error)
	}
	for _, a := range got.Attempts {
		if a.Vendor == "openrouter" {
			t.Fatalf("eu request reached the us-only model: %+v", got.Attempts)
		}
	}
	// Without residency the escalation does go to the next model: the
	// route really escalates through the us-only one.
	if other := replies["any1"][0]; other.Status != envelope.StatusOK || other.Vendor != "openrouter" {
		t.Fatalf("request without residency: want openrouter, got %s %+v", other.Vendor, other.Error)
	}
	if n := e.simCalls("openrouter", "meta-llama/llama-3.3-70b-instruct"); n != 1 {
		t.Fatalf("openrouter calls = %d, want 1 (the request without residency only)", n)
	}
}

// An escalation skips a model whose circuit is open: no call, and no
// attempt in the reply or the ledger for it.
func TestEscalationSkipsOpenCircuit(t *testing.T) {
	e := start(t, withRoute(escalating), withScenario(badDrafts), func(c *app.Config) {
		c.Breaker.FailureThreshold = 1
		c.Breaker.OpenFor = time.Minute
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.sys.Breakers.Allow(ctx, "openrouter")
	if err != nil || !p.Allowed() {
		t.Fatalf("allow: %v", err)
	}
	if err := e.sys.Breakers.Record(ctx, p, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() bool { return e.sys.Breakers.Status("openrouter").State.String() == "open" })

	got := e.submitAll([]*envelope.Request{jsonRequest(e, "c1", "escalating")}, 30*time.Second)["c1"][0]
	if got.Status != envelope.StatusOK || got.Vendor != "openai" {
		t.Fatalf("want openai's answer after the open circuit was skipped, got %s %+v", got.Vendor, got.Error)
	}
	if len(got.Attempts) != 2 || got.Attempts[0].Outcome != envelope.OutcomeQualityFailed || got.Attempts[1].Vendor != "openai" {
		t.Fatalf("attempts: want the failed draft then openai, got %+v", got.Attempts)
	}
	if n := e.simCalls("openrouter", "meta-llama/llama-3.3-70b-instruct"); n != 0 {
		t.Fatalf("openrouter calls = %d, want 0", n)
	}
	where := fmt.Sprintf(" WHERE tenant = '%s'", e.tenant)
	e.eventually("SELECT count() FROM %s.requests FINAL"+where, 1, 30*time.Second)
	if n := e.eventually("SELECT count() FROM %s.attempts FINAL"+where+" AND outcome != 'started'", 2, 10*time.Second); n != 2 {
		t.Fatalf("attempt rows = %d, want 2 (the skipped target is no attempt)", n)
	}
}

// A draft judged after the request's deadline is not escalated: the reply
// is deadline_exceeded and no further target is dispatched (the gate used
// to hand it to the next executor, which recorded a timeout attempt).
func TestEscalationPastDeadline(t *testing.T) {
	e := start(t, withRoute(escalating))
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	now := time.Now()
	req := jsonRequest(e, "late1", "escalating")
	w := envelope.Work{
		Key: "late1", Request: *req, Route: "escalating", Strategy: policy.StrategyFallback,
		ReceivedAt: now.Add(-2 * time.Second), Deadline: now.Add(-time.Second),
		Chain: []envelope.Target{{Vendor: "gemini", Model: "gemini-2.5-flash"}, {Vendor: "openai", Model: "gpt-4o"}}, StepAttempts: 1,
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "gemini", Model: "gemini-2.5-flash", Outcome: envelope.OutcomeOK}},
		Current:  &envelope.Result{Content: "this is not JSON", FinishReason: "stop", StartedAt: now.Add(-1500 * time.Millisecond)},
	}
	data, err := json.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.sys.JS.Publish(ctx, natsx.SubjectResults, data); err != nil {
		t.Fatal(err)
	}
	if err := col.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	got := col.All()["late1"][0]
	if got.Error == nil || got.Error.Code != envelope.CodeDeadlineExceeded {
		t.Fatalf("want deadline_exceeded, got %+v", got)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].Outcome != envelope.OutcomeQualityFailed {
		t.Fatalf("want only the failed draft, got %+v", got.Attempts)
	}
	if n := e.simCalls("openai", "gpt-4o"); n != 0 {
		t.Fatalf("openai calls = %d, want 0", n)
	}
}

// A primary that accepts the connection and never answers is failed over
// within the request's deadline: the router gives each attempt a share of
// the time left, so the fallback answers (it used to wait out the whole
// deadline on the silent vendor and reply deadline_exceeded).
func TestSilentPrimaryFailsOver(t *testing.T) {
	e := start(t, withScenario(sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 120_000}}},
	}}))
	r := e.request("s1", "chat", "Hello, anyone there?")
	r.TimeoutMS = 9000
	got := e.submitAll([]*envelope.Request{r}, 30*time.Second)["s1"][0]
	if got.Status != envelope.StatusOK || got.Vendor != "anthropic" {
		t.Fatalf("want the fallback's answer, got %s %+v", got.Vendor, got.Error)
	}
	if got.LatencyMS >= 9000 || len(got.Attempts) != 2 || got.Attempts[0].ErrorClass != "timeout" {
		t.Fatalf("latency %d ms, attempts %+v: want a timed-out primary and an answer within 9 s", got.LatencyMS, got.Attempts)
	}
	t.Logf("silent primary cut after %d ms; answered in %d ms", got.Attempts[0].LatencyMS, got.LatencyMS)
}

// A vendor whose calls hang longer than 5 s opens its circuit: the breaker
// records timed-out calls (their outcome used to be lost because the
// context that recorded it expired during the call).
func TestHungVendorOpensCircuit(t *testing.T) {
	e := start(t, withScenario(sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 120_000}}},
	}}), func(c *app.Config) {
		c.Breaker.FailureThreshold = 2
		c.Breaker.OpenFor = time.Minute
		v := c.Policy.Vendors["openai"]
		v.Timeout = policy.Duration{Duration: 6 * time.Second}
		c.Policy.Vendors["openai"] = v
	})
	var first []*envelope.Request
	for i := range 2 {
		r := e.request(fmt.Sprintf("h%d", i), "chat", fmt.Sprintf("hung %d", i))
		r.TimeoutMS = 40_000
		first = append(first, r)
	}
	for id, rs := range e.submitAll(first, 60*time.Second) {
		if rs[0].Status != envelope.StatusOK || rs[0].Attempts[0].ErrorClass != "timeout" {
			t.Fatalf("%s: want a timed-out primary and the fallback's answer, got %+v", id, rs[0])
		}
	}
	waitFor(t, 5*time.Second, func() bool { return e.sys.Breakers.Status("openai").State.String() == "open" })
	next := e.request("h2", "chat", "after the circuit opened")
	if got := e.submitAll([]*envelope.Request{next}, 30*time.Second)["h2"][0]; got.Status != envelope.StatusOK || len(got.Attempts) != 1 {
		t.Fatalf("after the circuit opened: want one attempt on the fallback, got %+v", got)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 2 {
		t.Fatalf("openai calls = %d, want 2 (none once its circuit is open)", n)
	}
}

// A target skipped for rpm saturation is not a vendor failure: no attempt
// in the reply, no attempt row with an error, nothing in the executor's
// call metrics, only the skipped counter.
func TestSkippedTargetIsNotAnAttempt(t *testing.T) {
	e := start(t, func(c *app.Config) {
		v := c.Policy.Vendors["openai"]
		v.RPM = 1
		c.Policy.Vendors["openai"] = v
	})
	var reqs []*envelope.Request
	for i := range 5 {
		reqs = append(reqs, e.request(fmt.Sprintf("k%d", i), "chat", fmt.Sprintf("skip %d", i)))
	}
	spilled := 0
	for id, rs := range e.submitAll(reqs, 30*time.Second) {
		r := rs[0]
		if r.Status != envelope.StatusOK {
			t.Fatalf("%s: %+v", id, r.Error)
		}
		for _, a := range r.Attempts {
			if a.Outcome != envelope.OutcomeOK {
				t.Fatalf("%s: a skipped target shows as an attempt: %+v", id, r.Attempts)
			}
		}
		if r.Vendor == "anthropic" && r.Fallback {
			spilled++
		}
	}
	if spilled != 4 {
		t.Fatalf("spilled = %d, want 4 (rpm 1)", spilled)
	}
	where := fmt.Sprintf(" WHERE tenant = '%s'", e.tenant)
	e.eventually("SELECT count() FROM %s.requests FINAL"+where, 5, 30*time.Second)
	if n := e.eventually("SELECT count() FROM %s.attempts FINAL"+where+" AND outcome != 'started'", 5, 10*time.Second); n != 5 {
		t.Fatalf("attempt rows = %d, want 5 (one call per request)", n)
	}
	if n := e.count("SELECT count() FROM %s.attempts FINAL" + where + " AND outcome = 'error'"); n != 0 {
		t.Fatalf("error attempt rows = %d, want 0", n)
	}
	if n := e.eventually("SELECT count() FROM %s.requests FINAL"+where+" AND fallback_reason = 'saturated'", 4, 10*time.Second); n != 4 {
		t.Fatalf("requests with fallback_reason saturated = %d, want 4", n)
	}
	mfs, err := e.sys.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetName() {
			case "switchyard_executor_calls_total":
				if labels["class"] != "ok" {
					t.Fatalf("vendor call metric counts a skip: %v = %v", labels, m.GetCounter().GetValue())
				}
			case "switchyard_executor_skipped_total":
				if labels["reason"] == "saturated" {
					skipped += m.GetCounter().GetValue()
				}
			}
		}
	}
	if skipped != 4 {
		t.Fatalf("skipped{reason=saturated} = %v, want 4", skipped)
	}
}

// Both branches of a hedged request are charged to the tenant's budget: a
// losing branch's cost (here a primary whose answer the gate rejects while
// the second branch answers) is settled with the winner's. Only the
// winner's cost used to reach the budget.
func TestHedgeLoserCostReachesBudget(t *testing.T) {
	chain := []policy.Target{{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}}
	e := start(t, withRoute(policy.Route{Name: "hedged", Strategy: policy.StrategyHedged, Chain: chain,
		Hedge: policy.Hedge{After: policy.Duration{Duration: 20 * time.Millisecond}, MaxRatio: 1}}),
		withScenario(sim.Scenario{Vendors: map[string]sim.VendorScenario{
			"openai":    {Behavior: sim.Behavior{InvalidJSONRate: sim.Ptr(1.0)}},
			"anthropic": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 150}}},
		}}))
	e.withBudget(100)
	var reqs []*envelope.Request
	for i := range 4 {
		reqs = append(reqs, jsonRequest(e, fmt.Sprintf("g%d", i), "hedged"))
	}
	replied := 0.0
	for id, rs := range e.submitAll(reqs, 30*time.Second) {
		if rs[0].Status != envelope.StatusOK || rs[0].Vendor != "anthropic" {
			t.Fatalf("%s: want the hedge branch's answer, got %s %+v", id, rs[0].Vendor, rs[0].Error)
		}
		replied += rs[0].CostUSD
	}
	where := fmt.Sprintf(" WHERE tenant = '%s'", e.tenant)
	e.eventually("SELECT count() FROM %s.attempts FINAL"+where+" AND outcome != 'started'", 8, 30*time.Second)
	var ledger float64
	if err := e.ch.QueryRow(context.Background(), fmt.Sprintf("SELECT sum(cost_usd) FROM %s.attempts FINAL", e.db)+where).Scan(&ledger); err != nil {
		t.Fatal(err)
	}
	if ledger <= replied {
		t.Fatalf("ledger cost %.9f should exceed the winners' %.9f: the losing branches were billed", ledger, replied)
	}
	var spent float64
	waitFor(t, 10*time.Second, func() bool {
		u, err := e.sys.Budgets.Usage(context.Background(), e.tenant)
		spent = u.Day.SpentUSD
		return err == nil && u.Day.Outstanding == 0 && math.Abs(spent-ledger) < 1e-8
	})
	t.Logf("winners $%.9f, both branches $%.9f, budget spent $%.9f", replied, ledger, spent)
}

// A request the executor or the gate dead-letters still gets a reply, and
// its budget reservation is released: the stage hands the failure to the
// router, which replies and settles (the stages used to reply themselves
// without settling, so the hold stayed until it lapsed).
func TestStageDeadLetterSettlesBudget(t *testing.T) {
	e := start(t)
	e.withBudget(100)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tenant, _ := e.sys.Policies.Current().Tenant(e.tenant)
	tests := []struct {
		stage, subject string
		work           func(w *envelope.Work)
	}{
		// An envelope for anthropic on openai's queue: wrong_vendor.
		{"executor", natsx.ExecSubject("openai"), func(w *envelope.Work) {
			w.Chain = []envelope.Target{{Vendor: "anthropic", Model: "claude-haiku-4-5"}}
		}},
		// A result without an attempt: malformed_work.
		{"gate", natsx.SubjectResults, func(w *envelope.Work) {
			w.Chain = []envelope.Target{{Vendor: "openai", Model: "gpt-4o-mini"}}
		}},
	}
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	for i, tt := range tests {
		t.Run(tt.stage, func(t *testing.T) {
			id := "dead-" + tt.stage
			res, err := e.sys.Budgets.Reserve(ctx, e.tenant, tenant.Budget, 0.01, id)
			if err != nil {
				t.Fatal(err)
			}
			hold, _ := json.Marshal(res)
			now := time.Now()
			w := envelope.Work{Key: id, Request: *e.request(id, "chat", "poison"), Route: "chat", ReceivedAt: now, Deadline: now.Add(30 * time.Second), Budget: hold}
			tt.work(&w)
			data, _ := json.Marshal(&w)
			if _, err := e.sys.JS.Publish(ctx, tt.subject, data); err != nil {
				t.Fatal(err)
			}
			if err := col.Wait(ctx, i+1); err != nil {
				t.Fatal(err)
			}
			got := col.All()[id][0]
			if got.Error == nil || got.Error.Code != envelope.CodeInternal || !strings.Contains(got.Error.Message, tt.stage) {
				t.Fatalf("want an internal error naming the %s, got %+v", tt.stage, got)
			}
			waitFor(t, 5*time.Second, func() bool {
				u, err := e.sys.Budgets.Usage(ctx, e.tenant)
				return err == nil && u.Day.Outstanding == 0 && u.Day.ReservedUSD == 0
			})
		})
	}
}

// Intake no longer resolves routes; a request naming an unknown route is
// still refused with unknown_route (by the router) and dead-lettered.
func TestUnknownRouteStillRefused(t *testing.T) {
	e := start(t)
	got := e.submitAll([]*envelope.Request{e.request("u1", "no-such-route", "hello")}, 30*time.Second)["u1"][0]
	if got.Error == nil || got.Error.Code != envelope.CodeUnknownRoute || len(got.Attempts) != 0 {
		t.Fatalf("want unknown_route with no attempt, got %+v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.sys.JS.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(natsx.DLQSubject(natsx.StageRouter)))
		return err == nil && info.State.Subjects[natsx.DLQSubject(natsx.StageRouter)] == 1
	})
}
