package router

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

type fixedPolicy struct{ p *policy.Policy }

func (f fixedPolicy) Current() *policy.Policy { return f.p }

// testRouter is a router without JetStream, budgets, cache or hedging.
func testRouter(t *testing.T) *Router {
	t.Helper()
	p, err := policy.Parse([]byte(decidePolicy))
	if err != nil {
		t.Fatal(err)
	}
	p.Routes = append(p.Routes, policy.Route{Name: "t", OnQualityFail: policy.OnQualityEscalate, Chain: []policy.Target{{Vendor: "a", Model: "g1"}, {Vendor: "b", Model: "g2"}}})
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return &Router{d: Deps{Log: zerolog.Nop(), Policy: fixedPolicy{p}, Now: time.Now}, seen: newObserved(), hedging: hedge.NewBudget(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "d"}, []string{"decision"})}
}

// The router's handler returns what it publishes: a classified request
// becomes one dispatch to its first target's executors; a failed draft an
// escalation; a passing answer the request telemetry and the reply.
func TestHandleReturnsWhatItPublishes(t *testing.T) {
	r := testRouter(t)
	now := time.Now()
	w := &envelope.Work{Key: "k1", Request: envelope.Request{ID: "k1", Tenant: "t", Route: "t", Messages: []envelope.Message{{Role: "user", Content: "hi"}}},
		ReceivedAt: now, Deadline: now.Add(30 * time.Second), TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}
	outs, err := r.handle(context.Background(), w, EvClassified, now)
	if err != nil || len(outs) != 1 || outs[0].Subject != natsx.ExecSubject("a") || outs[0].MsgID != "k1:exec:0:1" {
		t.Fatalf("classified: got %+v, %v", outs, err)
	}
	var sent envelope.Work
	if err := json.Unmarshal(outs[0].Data, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Route != "t" || len(sent.Chain) != 2 || sent.AttemptDeadline.IsZero() || outs[0].Header.Get(natsx.HeaderTraceParent) == "" {
		t.Fatalf("dispatched envelope: %+v", sent)
	}

	// The gate rejected the draft: escalate to the second target.
	sent.Attempts = []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "g1", Outcome: envelope.OutcomeQualityFailed}}
	sent.Current = &envelope.Result{Content: "draft"}
	sent.Quality = &envelope.Quality{Reason: "bad"}
	outs, err = r.handle(context.Background(), &sent, EvQualityFail, now)
	if err != nil || len(outs) != 1 || outs[0].Subject != natsx.ExecSubject("b") || outs[0].MsgID != "k1:exec:0:2" {
		t.Fatalf("escalation: got %+v, %v", outs, err)
	}
	var esc envelope.Work
	_ = json.Unmarshal(outs[0].Data, &esc)

	// The second answer passes: telemetry, then the reply.
	esc.Attempts = append(esc.Attempts, envelope.AttemptResult{Attempt: 2, Vendor: "b", Model: "g2", Outcome: envelope.OutcomeOK, CostUSD: 0.5})
	esc.Current = &envelope.Result{Content: "answer", FinishReason: "stop"}
	esc.Quality = &envelope.Quality{Passed: true}
	outs, err = r.handle(context.Background(), &esc, EvPass, now)
	if err != nil || len(outs) != 2 || outs[0].Subject != natsx.SubjectRequest || outs[1].Subject != "llm.store.replies.t.k1" {
		t.Fatalf("finish: got %+v, %v", outs, err)
	}
	var reply envelope.Reply
	_ = json.Unmarshal(outs[1].Data, &reply)
	if reply.Status != envelope.StatusOK || reply.Content != "answer" || reply.Vendor != "b" || !reply.Fallback || len(reply.Attempts) != 2 || reply.CostUSD != 0.5 {
		t.Fatalf("reply: %+v", reply)
	}
}

// A request naming a route the policy lacks is refused by the router (intake
// no longer resolves routes): unknown_route, with a dead letter.
func TestHandleUnknownRoute(t *testing.T) {
	r := testRouter(t)
	now := time.Now()
	w := &envelope.Work{Key: "k2", Request: envelope.Request{ID: "k2", Tenant: "t", Route: "nope"}, ReceivedAt: now, Deadline: now.Add(time.Minute)}
	outs, err := r.handle(context.Background(), w, EvClassified, now)
	if err != nil || len(outs) != 3 || outs[0].Subject != natsx.DLQSubject(natsx.StageRouter) {
		t.Fatalf("got %+v, %v", outs, err)
	}
	var reply envelope.Reply
	_ = json.Unmarshal(outs[2].Data, &reply)
	if reply.Error == nil || reply.Error.Code != envelope.CodeUnknownRoute {
		t.Fatalf("reply: %+v", reply)
	}
}
