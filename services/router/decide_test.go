package router

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// decidePolicy has two good models (g1, g2, g2 with the larger context
// window) and one model that breaks each eligibility rule.
const decidePolicy = `
version: d
default_route: base
vendors:
  a: {kind: openai, base_url: http://a, timeout: 30s}
  b: {kind: openai, base_url: http://b, timeout: 30s}
models:
  - {vendor: a, model: g1, residency: [us, eu], context_window: 50000, capabilities: [json], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: b, model: g2, residency: [us, eu], context_window: 100000, capabilities: [json], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: a, model: us-only, residency: [us], context_window: 100000, capabilities: [json], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: a, model: small, residency: [us, eu], context_window: 1000, capabilities: [json], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: a, model: text, residency: [us, eu], context_window: 100000, capabilities: [tools], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: b, model: flaky, residency: [us, eu], context_window: 100000, capabilities: [json], price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: b, model: pricey, residency: [us, eu], context_window: 100000, capabilities: [json], price: {input_per_mtok: 1000, output_per_mtok: 1000}}
  - {vendor: b, model: pf, residency: [us, eu], context_window: 100000, capabilities: [json, prefill], price: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  - {name: base, chain: [{vendor: a, model: g1}]}
tenants:
  euco: {residency: [eu]}
`

var (
	g1 = envelope.Target{Vendor: "a", Model: "g1"}
	g2 = envelope.Target{Vendor: "b", Model: "g2"}
)

// rule is one eligibility rule: the model that breaks it and how the
// request (and world) must look for it to apply.
type rule struct {
	name  string
	bad   envelope.Target
	apply func(w *envelope.Work, env *Env)
	// depth and deadline do not skip one model: they stop every move.
	stops bool
}

func holdOf(usd float64) json.RawMessage {
	b, _ := json.Marshal(budget.Reservation{ID: "k", Tenant: "t", EstimateUSD: usd, Day: "20261201", Month: "202612"})
	return b
}

var rules = []rule{
	{name: "request residency", bad: envelope.Target{Vendor: "a", Model: "us-only"}, apply: func(w *envelope.Work, _ *Env) {
		w.Request.Policy = &envelope.RequestPolicy{Residency: "eu"}
	}},
	{name: "tenant residency", bad: envelope.Target{Vendor: "a", Model: "us-only"}, apply: func(w *envelope.Work, _ *Env) {
		w.Request.Tenant = "euco"
	}},
	{name: "context window", bad: envelope.Target{Vendor: "a", Model: "small"}, apply: func(w *envelope.Work, _ *Env) {
		w.Class.TokenEstimate = 5000
	}},
	{name: "json capability", bad: envelope.Target{Vendor: "a", Model: "text"}, apply: func(w *envelope.Work, _ *Env) {
		w.Request.ResponseFormat = &envelope.ResponseFormat{Type: "json_object"}
	}},
	{name: "open circuit", bad: envelope.Target{Vendor: "b", Model: "flaky"}, apply: func(_ *envelope.Work, env *Env) {
		env.Open = func(t envelope.Target) bool { return t.Model == "flaky" }
	}},
	{name: "budget hold", bad: envelope.Target{Vendor: "b", Model: "pricey"}, apply: func(w *envelope.Work, _ *Env) {
		w.Budget = holdOf(0.01)
	}},
	{name: "max_cost_usd", bad: envelope.Target{Vendor: "b", Model: "pricey"}, apply: func(w *envelope.Work, _ *Env) {
		w.Request.Policy = &envelope.RequestPolicy{MaxCostUSD: 0.01}
	}},
	{name: "stakes depth", bad: envelope.Target{Vendor: "b", Model: "flaky"}, stops: true, apply: func(w *envelope.Work, _ *Env) {
		w.Request.Policy = &envelope.RequestPolicy{Stakes: "low"} // depth low: 1
	}},
	{name: "deadline", bad: envelope.Target{Vendor: "b", Model: "flaky"}, stops: true, apply: func(w *envelope.Work, env *Env) {
		w.Deadline = env.Now.Add(-time.Millisecond)
	}},
}

// transition is one kind of move the router makes.
type transition struct {
	name string
	// chain puts the rule's bad model where the move would go next.
	chain func(bad envelope.Target) []envelope.Target
	route policy.Route
	ev    Event
	state func(w *envelope.Work, env *Env)
	// want is the target the move reaches when bad is skipped; stopped is
	// the error code when the rule stops every move ("" : the move is not
	// stopped by depth; deadline always stops with deadline_exceeded).
	want    envelope.Target
	stopped string
	// same: the move stays on the current target (depth allows it).
	same bool
}

func fromFirst(bad envelope.Target) []envelope.Target { return []envelope.Target{g1, bad, g2} }

func atFirst(res *envelope.Result, q *envelope.Quality) func(w *envelope.Work, env *Env) {
	return func(w *envelope.Work, env *Env) {
		w.Step, w.StepAttempts, w.Current, w.Quality = 0, 1, res, q
		if !res.Skipped {
			w.Attempts = []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "g1", Outcome: envelope.OutcomeOK}}
		}
	}
}

var transitions = []transition{
	{name: "first target", ev: EvClassified, want: g1, stopped: "",
		chain: func(bad envelope.Target) []envelope.Target { return []envelope.Target{bad, g1, g2} },
		state: func(*envelope.Work, *Env) {}},
	{name: "hedge", ev: EvClassified, want: g2, stopped: "",
		route: policy.Route{Strategy: policy.StrategyHedged, Hedge: policy.Hedge{MaxRatio: 1}},
		chain: fromFirst, state: func(_ *envelope.Work, env *Env) { env.Hedge = true }},
	{name: "same-target retry", ev: EvVendorFailure, want: g2, same: true,
		route: policy.Route{Retry: policy.Retry{Attempts: 2}},
		chain: func(bad envelope.Target) []envelope.Target { return []envelope.Target{bad, g2} },
		state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassServerError), Retryable: true}, nil)},
	{name: "fallback", ev: EvVendorFailure, want: g2, stopped: envelope.CodeAllVendorsFailed, chain: fromFirst,
		state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassServerError), Retryable: true}, nil)},
	{name: "escalation", ev: EvQualityFail, want: g2, stopped: envelope.CodeQualityRejected, chain: fromFirst,
		route: policy.Route{OnQualityFail: policy.OnQualityEscalate},
		state: atFirst(&envelope.Result{Content: "draft"}, &envelope.Quality{Passed: false, Reason: "bad"})},
	{name: "cascade escalation", ev: EvQualityFail, want: g2, stopped: envelope.CodeQualityRejected, chain: fromFirst,
		route: policy.Route{Strategy: policy.StrategyCascade, OnQualityFail: policy.OnQualityEscalate},
		state: atFirst(&envelope.Result{Content: "draft"}, &envelope.Quality{Passed: false, Reason: "bad"})},
	{name: "spill on saturation", ev: EvSkipped, want: g2, stopped: envelope.CodeAllVendorsFailed, chain: fromFirst,
		state: atFirst(&envelope.Result{Skipped: true, ErrorClass: envelope.SkipSaturated, Retryable: true}, nil)},
	{name: "wait on saturation", ev: EvSkipped, want: g2, same: true,
		route: policy.Route{OnSaturated: policy.OnSaturatedWait},
		chain: func(bad envelope.Target) []envelope.Target { return []envelope.Target{bad, g2} },
		state: atFirst(&envelope.Result{Skipped: true, ErrorClass: envelope.SkipSaturated, Retryable: true, RetryAfterMS: 100}, nil)},
	{name: "past an open circuit", ev: EvSkipped, want: g2, stopped: envelope.CodeAllVendorsFailed, chain: fromFirst,
		state: atFirst(&envelope.Result{Skipped: true, ErrorClass: envelope.SkipCircuitOpen, Retryable: true}, nil)},
	{name: "context length", ev: EvVendorFailure, want: g2, stopped: envelope.CodeInvalidRequest, chain: fromFirst,
		state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassContextLength), HTTPStatus: 400}, nil)},
}

func decideEnv(t *testing.T, tr transition, chain []envelope.Target) (*envelope.Work, Env) {
	t.Helper()
	p, err := policy.Parse([]byte(decidePolicy))
	if err != nil {
		t.Fatal(err)
	}
	route := tr.route
	route.Name = "t"
	route.Depth = map[string]int{"low": 1}
	for _, c := range chain {
		route.Chain = append(route.Chain, policy.Target{Vendor: c.Vendor, Model: c.Model})
	}
	p.Routes = append(p.Routes, route)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t", Messages: []envelope.Message{{Role: "user", Content: "hi"}}},
		Class: envelope.Classification{TokenEstimate: 100}, Route: "t", ReceivedAt: now, Deadline: now.Add(30 * time.Second), Chain: chain}
	env := Env{Policy: p, Now: now, Rand: func(n int) int { return 0 }}
	return w, env
}

// Every eligibility rule holds on every kind of transition: the move goes
// past the model that breaks the rule (or, for stakes depth and the
// deadline, is not made at all).
func TestDecideEligibilityOnEveryTransition(t *testing.T) {
	for _, tr := range transitions {
		for _, ru := range rules {
			t.Run(tr.name+"/"+ru.name, func(t *testing.T) {
				w, env := decideEnv(t, tr, tr.chain(ru.bad))
				tr.state(w, &env)
				ru.apply(w, &env)
				before, _ := json.Marshal(w)
				a := decide(w, tr.ev, env)
				if after, _ := json.Marshal(w); string(after) != string(before) {
					t.Fatal("decide changed its input")
				}
				switch {
				case ru.name == "deadline":
					if a.Kind != Fail || a.Code != envelope.CodeDeadlineExceeded {
						t.Fatalf("want deadline_exceeded, got %+v", a)
					}
					return
				case ru.stops && tr.stopped != "":
					if a.Kind != Fail || a.Code != tr.stopped {
						t.Fatalf("want %s (depth 1 allows no move), got kind %d %s %s", tr.stopped, a.Kind, a.Code, a.Message)
					}
					return
				case ru.stops:
					// Depth 1 keeps the first target: no hedge, but a retry
					// or a wait on it.
					if a.Kind != Dispatch || len(a.Work) != 1 || a.Work[0].Step != 0 {
						t.Fatalf("want one dispatch to the first target, got %+v", a)
					}
					if tr.same && !a.Work[0].NotBefore.After(env.Now) {
						t.Fatalf("want a delayed dispatch to the same target, got %+v", a.Work[0])
					}
					return
				}
				if a.Kind != Dispatch {
					t.Fatalf("want a dispatch, got kind %d %s: %s", a.Kind, a.Code, a.Message)
				}
				last := a.Work[len(a.Work)-1]
				for _, x := range a.Work {
					if x.Target() == ru.bad {
						t.Fatalf("dispatched to %v, which breaks %s", ru.bad, ru.name)
					}
					if x.AttemptDeadline.IsZero() || x.AttemptDeadline.After(x.Deadline) {
						t.Fatalf("attempt deadline %v not within the request's %v", x.AttemptDeadline, x.Deadline)
					}
				}
				if last.Target() != tr.want {
					t.Fatalf("dispatched to %v, want %v", last.Target(), tr.want)
				}
			})
		}
	}
}

// Without the rule, each move goes where it normally goes (so the table
// above really tests the rules).
func TestDecideTransitionsWithoutRules(t *testing.T) {
	flaky := envelope.Target{Vendor: "b", Model: "flaky"}
	want := map[string]envelope.Target{
		"first target": flaky, "hedge": flaky, "same-target retry": flaky, "fallback": flaky, "escalation": flaky,
		"cascade escalation": flaky, "spill on saturation": flaky, "wait on saturation": flaky, "past an open circuit": flaky, "context length": flaky,
	}
	for _, tr := range transitions {
		t.Run(tr.name, func(t *testing.T) {
			w, env := decideEnv(t, tr, tr.chain(flaky))
			tr.state(w, &env)
			a := decide(w, tr.ev, env)
			if a.Kind != Dispatch {
				t.Fatalf("want a dispatch, got %+v", a)
			}
			got := a.Work[0].Target()
			if tr.name == "hedge" {
				got = a.Work[1].Target()
				if len(a.Work) != 2 || !a.Work[1].NotBefore.Equal(env.Now) || a.Work[1].AttemptBase != hedgeAttemptBase {
					t.Fatalf("hedge: want two branches, got %+v", a.Work)
				}
			}
			if got != want[tr.name] {
				t.Fatalf("went to %v, want %v", got, want[tr.name])
			}
			switch tr.name {
			case "same-target retry", "wait on saturation":
				if !a.Work[0].NotBefore.After(env.Now) {
					t.Fatalf("%s: want a delayed dispatch, got not_before %v", tr.name, a.Work[0].NotBefore)
				}
			case "cascade escalation":
				msgs := a.Work[0].Request.Messages
				if len(msgs) != 3 || msgs[1].Content != "draft" || !a.Work[0].Escalated {
					t.Fatalf("cascade: want the draft passed on, got %+v", msgs)
				}
			}
		})
	}
}

func TestDecideOutcomes(t *testing.T) {
	base := transition{chain: fromFirst}
	tests := []struct {
		name  string
		route policy.Route
		ev    Event
		state func(w *envelope.Work, env *Env)
		kind  Kind
		code  string
		check func(t *testing.T, a Action)
	}{
		{name: "pass finishes", ev: EvPass, kind: Finish, state: atFirst(&envelope.Result{Content: "ok"}, &envelope.Quality{Passed: true})},
		{name: "truncated pass finishes degraded", ev: EvPass, kind: Finish,
			state: func(w *envelope.Work, env *Env) {
				atFirst(&envelope.Result{Content: "ok"}, &envelope.Quality{Passed: true})(w, env)
				w.Degraded = true
			},
			check: func(t *testing.T, a Action) {
				if !a.Degraded {
					t.Fatal("not degraded")
				}
			}},
		{name: "quality fail on a degrade route", route: policy.Route{OnQualityFail: policy.OnQualityDegrade}, ev: EvQualityFail, kind: Finish,
			state: atFirst(&envelope.Result{Content: "x"}, &envelope.Quality{Reason: "r"}),
			check: func(t *testing.T, a Action) {
				if !a.Degraded {
					t.Fatal("not degraded")
				}
			}},
		{name: "quality fail on a reject route", route: policy.Route{OnQualityFail: policy.OnQualityReject}, ev: EvQualityFail, kind: Fail, code: envelope.CodeQualityRejected,
			state: atFirst(&envelope.Result{Content: "x"}, &envelope.Quality{Reason: "r"})},
		{name: "terminal vendor failure", ev: EvVendorFailure, kind: Fail, code: envelope.CodeInvalidRequest,
			state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassInvalidRequest), HTTPStatus: 400}, nil),
			check: func(t *testing.T, a Action) {
				if a.DeadLetter {
					t.Fatal("a client error is not dead-lettered")
				}
			}},
		{name: "auth failure dead-letters", ev: EvVendorFailure, kind: Fail, code: envelope.CodeInternal,
			state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassAuth), HTTPStatus: 401}, nil),
			check: func(t *testing.T, a Action) {
				if !a.DeadLetter {
					t.Fatal("not dead-lettered")
				}
			}},
		{name: "content refusal replies policy_blocked with the vendor's reason", ev: EvVendorFailure, kind: Fail, code: envelope.CodePolicyBlocked,
			state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassContentRefused), HTTPStatus: 451, ErrorMessage: "blocked: violence"}, nil),
			check: func(t *testing.T, a Action) {
				if a.DeadLetter || a.Retryable || !strings.Contains(a.Message, "blocked: violence") {
					t.Fatalf("refusal: %+v", a)
				}
			}},
		{name: "context length without a larger model", ev: EvVendorFailure, kind: Fail, code: envelope.CodeInvalidRequest,
			state: func(w *envelope.Work, env *Env) {
				w.Chain = []envelope.Target{g2, g1} // g1's window is smaller
				atFirst(&envelope.Result{ErrorClass: string(provider.ClassContextLength), HTTPStatus: 400}, nil)(w, env)
			}},
		{name: "retry-after beyond the deadline falls over", route: policy.Route{Retry: policy.Retry{Attempts: 3}}, ev: EvVendorFailure, kind: Dispatch,
			state: func(w *envelope.Work, env *Env) {
				atFirst(&envelope.Result{ErrorClass: string(provider.ClassRateLimited), Retryable: true, RetryAfterMS: 9000}, nil)(w, env)
				w.Deadline = env.Now.Add(5 * time.Second)
			},
			check: func(t *testing.T, a Action) {
				if a.Work[0].Step != 1 || !a.Work[0].NotBefore.IsZero() {
					t.Fatalf("want an immediate fallback, got step %d not before %v", a.Work[0].Step, a.Work[0].NotBefore)
				}
			}},
		{name: "retry honours retry-after", route: policy.Route{Retry: policy.Retry{Attempts: 3}}, ev: EvVendorFailure, kind: Dispatch,
			state: atFirst(&envelope.Result{ErrorClass: string(provider.ClassRateLimited), Retryable: true, RetryAfterMS: 3000}, nil),
			check: func(t *testing.T, a Action) {
				if w := a.Work[0]; w.Step != 0 || w.NotBefore.Sub(w.ReceivedAt) < 3*time.Second || w.StepAttempts != 2 {
					t.Fatalf("want a retry on step 0 after 3 s, got step %d after %v", w.Step, w.NotBefore.Sub(w.ReceivedAt))
				}
			}},
		{name: "stage failure replies internal", ev: EvStageFailure, kind: Fail, code: envelope.CodeInternal,
			state: func(w *envelope.Work, env *Env) {
				w.Failed = &envelope.StageFailure{Stage: "gate", Reason: "panic", Message: "gate could not process the request"}
			},
			check: func(t *testing.T, a Action) {
				if a.DeadLetter || !strings.Contains(a.Message, "gate") {
					t.Fatalf("the stage dead-lettered it already: %+v", a)
				}
			}},
		{name: "hedge branch failure", ev: EvVendorFailure, kind: BranchFailed,
			state: func(w *envelope.Work, env *Env) {
				atFirst(&envelope.Result{ErrorClass: string(provider.ClassServerError), Retryable: true}, nil)(w, env)
				w.Hedged = true
			}},
		{name: "hedge branch skipped after the other won", ev: EvSkipped, kind: Nothing,
			state: func(w *envelope.Work, env *Env) {
				atFirst(&envelope.Result{Skipped: true, ErrorClass: envelope.SkipHedgeWon}, nil)(w, env)
				w.Hedged = true
			}},
		{name: "skipped for the deadline", ev: EvSkipped, kind: Fail, code: envelope.CodeDeadlineExceeded,
			state: atFirst(&envelope.Result{Skipped: true, ErrorClass: envelope.SkipDeadline}, nil)},
		{name: "budget refusal", ev: EvClassified, kind: Fail, code: envelope.CodeBudgetExceeded,
			state: func(w *envelope.Work, env *Env) {
				env.Refused = &Refusal{Code: envelope.CodeBudgetExceeded, Message: "over"}
			}},
		{name: "unknown route", ev: EvClassified, kind: Fail, code: envelope.CodeUnknownRoute,
			state: func(w *envelope.Work, env *Env) { w.Route = "nope" }},
		{name: "every target's circuit open", ev: EvClassified, kind: Fail, code: envelope.CodeAllVendorsFailed,
			state: func(w *envelope.Work, env *Env) { env.Open = func(envelope.Target) bool { return true } }},
		{name: "no model may serve it", ev: EvClassified, kind: Fail, code: envelope.CodePolicyBlocked,
			state: func(w *envelope.Work, env *Env) { w.Request.Policy = &envelope.RequestPolicy{Residency: "mars"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := base
			tr.route = tt.route
			w, env := decideEnv(t, tr, fromFirst(g2))
			tt.state(w, &env)
			a := decide(w, tt.ev, env)
			if a.Kind != tt.kind || a.Code != tt.code {
				t.Fatalf("got kind %d code %q (%s), want kind %d code %q", a.Kind, a.Code, a.Message, tt.kind, tt.code)
			}
			if tt.check != nil {
				tt.check(t, a)
			}
		})
	}
}

// The budget refusal of a tenant that downgrades moves it to the cheaper
// route, once.
func TestDecideBudgetDowngrade(t *testing.T) {
	w, env := decideEnv(t, transition{}, []envelope.Target{g1, g2})
	env.Policy.Tenants = map[string]policy.Tenant{"t": {OnExceeded: policy.OnExceededDowngrade, DowngradeRoute: "base"}}
	env.Refused = &Refusal{Code: envelope.CodeBudgetExceeded, Message: "over"}
	a := decide(w, EvClassified, env)
	if a.Kind != Downgrade || a.Route != "base" {
		t.Fatalf("want a downgrade to base, got %+v", a)
	}
	w.Route = "base"
	if a := decide(w, EvClassified, env); a.Kind != Fail || a.Code != envelope.CodeBudgetExceeded {
		t.Fatalf("refused on the downgrade route too: want budget_exceeded, got %+v", a)
	}
}

// A request that names a catalog model goes to that model only, whatever
// the route's chain; a model outside the catalog is refused, and a pinned
// model that breaks an eligibility rule is not replaced by another one.
func TestDecidePinnedModel(t *testing.T) {
	pricey := envelope.Target{Vendor: "b", Model: "pricey"}
	tests := []struct {
		name     string
		model    string
		apply    func(w *envelope.Work)
		want     envelope.Target
		wantCode string
	}{
		{name: "model outside the chain", model: "b/g2", want: g2},
		{name: "model of the chain", model: "a/g1", want: g1},
		{name: "not in the catalog", model: "a/nope", wantCode: envelope.CodeInvalidRequest},
		{name: "no vendor", model: "g1", wantCode: envelope.CodeInvalidRequest},
		{name: "ineligible: no fallback to another model", model: "b/pricey", wantCode: envelope.CodePolicyBlocked,
			apply: func(w *envelope.Work) { w.Request.Policy = &envelope.RequestPolicy{MaxCostUSD: 0.01} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, env := decideEnv(t, transition{}, []envelope.Target{g1, pricey})
			w.Request.Model = tt.model
			if tt.apply != nil {
				tt.apply(w)
			}
			a := decide(w, EvClassified, env)
			if tt.wantCode != "" {
				if a.Kind != Fail || a.Code != tt.wantCode {
					t.Fatalf("want %s, got %+v", tt.wantCode, a)
				}
				return
			}
			if a.Kind != Dispatch || len(a.Work) != 1 {
				t.Fatalf("want one dispatch, got %+v", a)
			}
			if got := a.Work[0]; got.Target() != tt.want || len(got.Chain) != 1 {
				t.Fatalf("dispatched to %+v with chain %+v, want %+v alone", got.Target(), got.Chain, tt.want)
			}
		})
	}
}

// The time budget leaves room for the rest of the chain: each attempt gets
// a share of the time left (at least 2 s unless less is left), never more
// than the vendor's timeout.
func TestAttemptDeadline(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration
		step     int
		want     time.Duration
	}{
		{"three targets share 30 s", 30 * time.Second, 0, 10 * time.Second},
		{"the last target gets the rest, up to the vendor timeout", 60 * time.Second, 2, 30 * time.Second},
		{"two left share 9 s", 9 * time.Second, 1, 4500 * time.Millisecond},
		{"a floor of 2 s", 3 * time.Second, 0, 2 * time.Second},
		{"never past the deadline", 1 * time.Second, 0, 1 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, env := decideEnv(t, transition{}, []envelope.Target{g1, g2, {Vendor: "b", Model: "flaky"}})
			w.Deadline = env.Now.Add(tt.deadline)
			if got := attemptDeadline(w, tt.step, env.Now, env).Sub(env.Now); got != tt.want {
				t.Fatalf("attempt timeout %v, want %v", got, tt.want)
			}
		})
	}
}

// Work that went stale in a queue never reached the vendor: it spills to a
// later target when there is one; the last target is offered again for as
// long as the request's deadline allows (a NATS partition plus its backlog
// may outlast several attempt budgets: three re-offers failed hundreds of
// requests nobody had called in TestClusterNodePartitioned), and only a
// request without a deadline is bounded by a count. A passed deadline ends
// it as deadline_exceeded; an open circuit on the last target fails it.
func TestDecideStaleAttempt(t *testing.T) {
	stale := &envelope.Result{Skipped: true, ErrorClass: envelope.SkipStale, Retryable: true}
	tests := []struct {
		name     string
		chain    []envelope.Target
		step     int
		before   int           // stale dispatches already made
		deadline time.Duration // from now; 0: the request has none
		open     bool          // the last target's circuit is open
		wait     bool          // the route waits for a slot instead of spilling
		kind     Kind
		code     string
		want     envelope.Target
	}{
		{name: "spills to a later target", chain: []envelope.Target{g1, g2}, deadline: 30 * time.Second, kind: Dispatch, want: g2},
		{name: "last target offered again", chain: []envelope.Target{g1}, deadline: 30 * time.Second, kind: Dispatch, want: g1},
		{name: "last target after a spill", chain: []envelope.Target{g1, g2}, step: 1, before: 1, deadline: 30 * time.Second, kind: Dispatch, want: g2},
		{name: "again and again while the deadline allows", chain: []envelope.Target{g1}, before: maxStaleDispatches + 5, deadline: 30 * time.Second, kind: Dispatch, want: g1},
		{name: "deadline passed", chain: []envelope.Target{g1}, before: 2, deadline: -time.Second, kind: Fail, code: envelope.CodeDeadlineExceeded},
		{name: "no deadline: bounded", chain: []envelope.Target{g1}, before: maxStaleDispatches, kind: Fail, code: envelope.CodeAllVendorsFailed},
		{name: "no deadline: offered again below the bound", chain: []envelope.Target{g1}, before: maxStaleDispatches - 1, kind: Dispatch, want: g1},
		{name: "circuit open", chain: []envelope.Target{g1}, deadline: 30 * time.Second, open: true, kind: Fail, code: envelope.CodeAllVendorsFailed},
		{name: "a waiting route keeps its target", chain: []envelope.Target{g1, g2}, deadline: 30 * time.Second, wait: true, kind: Dispatch, want: g1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := transition{}
			if tt.wait {
				tr.route.OnSaturated = policy.OnSaturatedWait
			}
			w, env := decideEnv(t, tr, tt.chain)
			w.Step, w.StepAttempts, w.Current, w.StaleDispatches = tt.step, 1, stale, tt.before
			w.Deadline = time.Time{}
			if tt.deadline != 0 {
				w.Deadline = env.Now.Add(tt.deadline)
			}
			if tt.open {
				env.Open = func(envelope.Target) bool { return true }
			}
			a := decide(w, EvSkipped, env)
			if a.Kind != tt.kind {
				t.Fatalf("got kind %d (%s %s), want %d", a.Kind, a.Decision, a.Message, tt.kind)
			}
			if tt.kind == Fail {
				if a.Code != tt.code {
					t.Fatalf("code %q, want %q", a.Code, tt.code)
				}
				return
			}
			got := a.Work[0]
			if got.Target() != tt.want {
				t.Fatalf("dispatched to %v, want %v", got.Target(), tt.want)
			}
			if !got.AttemptDeadline.After(env.Now) {
				t.Fatalf("attempt deadline %v is not fresh", got.AttemptDeadline)
			}
			if got.StepAttempts != 1 {
				t.Fatalf("step attempts %d: a re-offer of work never called must not use up a retry", got.StepAttempts)
			}
		})
	}
}

// A streamed request's failures: before any delta it fails over like any
// request; after deltas it never ends as a success with a silent restart,
// only continued on a prefill-capable target or ended stream_interrupted.
func TestDecideStream(t *testing.T) {
	pf := envelope.Target{Vendor: "b", Model: "pf"}
	cut := &envelope.Result{ErrorClass: "stream_cut", Retryable: true, Deltas: 3, Partial: "Once upon"}
	tests := []struct {
		name     string
		chain    []envelope.Target
		ev       Event
		res      *envelope.Result
		q        *envelope.Quality
		seq      int
		kind     Kind
		code     string
		want     envelope.Target
		wantSeq  int
		wantText string
	}{
		{name: "stall before the first delta fails over", chain: []envelope.Target{g1, g2}, ev: EvVendorFailure,
			res: &envelope.Result{ErrorClass: "stream_stalled", Retryable: true}, kind: Dispatch, want: g2},
		{name: "cut after deltas without a prefill target", chain: []envelope.Target{g1, g2}, ev: EvVendorFailure,
			res: cut, kind: Fail, code: envelope.CodeStreamInterrupted, wantSeq: 3, wantText: "Once upon"},
		{name: "cut after deltas continues on a prefill target", chain: []envelope.Target{g1, g2, pf}, ev: EvVendorFailure,
			res: cut, kind: Dispatch, want: pf, wantSeq: 3, wantText: "Once upon"},
		{name: "malformed chunk after deltas", chain: []envelope.Target{g1, pf}, ev: EvVendorFailure,
			res: &envelope.Result{ErrorClass: string(provider.ClassBadResponse), Retryable: true, Deltas: 1, Partial: "x"}, kind: Dispatch, want: pf, wantSeq: 1, wantText: "x"},
		{name: "a fallback's prefill rejection moves on", chain: []envelope.Target{g1, pf, g2, pf}, ev: EvVendorFailure, seq: 2,
			res: &envelope.Result{ErrorClass: "prefill_unsupported"}, kind: Dispatch, want: pf, wantSeq: 2},
		{name: "a fallback's prefill rejection is never the final error", chain: []envelope.Target{g1, g2}, ev: EvVendorFailure, seq: 2,
			res: &envelope.Result{ErrorClass: "prefill_unsupported"}, kind: Fail, code: envelope.CodeStreamInterrupted, wantSeq: 2},
		{name: "a client's prefill refused falls over", chain: []envelope.Target{g1, g2}, ev: EvVendorFailure,
			res: &envelope.Result{ErrorClass: "prefill_unsupported"}, kind: Dispatch, want: g2},
		{name: "refusal is a policy error", chain: []envelope.Target{g1, g2}, ev: EvVendorFailure,
			res: &envelope.Result{ErrorClass: string(provider.ClassContentRefused), ErrorMessage: "violence"}, kind: Fail, code: envelope.CodePolicyBlocked},
		{name: "streamed answer failing quality is not escalated", chain: []envelope.Target{g1, g2}, ev: EvQualityFail,
			res: &envelope.Result{Content: "x", Deltas: 1}, q: &envelope.Quality{Reason: "r"}, kind: Fail, code: envelope.CodeQualityRejected},
		{name: "skipped continuation needs prefill", chain: []envelope.Target{g1, g2}, ev: EvSkipped, seq: 2,
			res: &envelope.Result{Skipped: true, ErrorClass: envelope.SkipCircuitOpen}, kind: Fail, code: envelope.CodeStreamInterrupted, wantSeq: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, env := decideEnv(t, transition{}, tt.chain)
			w.Request.Stream = true
			atFirst(tt.res, tt.q)(w, &env)
			if tt.seq > 0 {
				w.Step = 1 // a continuation on the second target
				w.StreamSeq, w.StreamText = tt.seq, "ab"
				tt.wantText = "ab"
			}
			a := decide(w, tt.ev, env)
			if a.Kind != tt.kind || a.Code != tt.code {
				t.Fatalf("got kind %d code %q (%s), want kind %d code %q", a.Kind, a.Code, a.Message, tt.kind, tt.code)
			}
			got := a.Work[0]
			if tt.kind == Dispatch && got.Target() != tt.want {
				t.Fatalf("dispatched to %v, want %v", got.Target(), tt.want)
			}
			if got.StreamSeq != tt.wantSeq || got.StreamText != tt.wantText {
				t.Fatalf("stream state %d %q, want %d %q", got.StreamSeq, got.StreamText, tt.wantSeq, tt.wantText)
			}
			if tt.code == envelope.CodePolicyBlocked && !strings.Contains(a.Message, "violence") {
				t.Fatalf("refusal reason lost: %s", a.Message)
			}
		})
	}
}

// A streamed request on a hedged route runs as one branch.
func TestDecideStreamNotHedged(t *testing.T) {
	w, env := decideEnv(t, transition{route: policy.Route{Strategy: policy.StrategyHedged, Hedge: policy.Hedge{MaxRatio: 1}}}, []envelope.Target{g1, g2})
	w.Request.Stream, env.Hedge = true, true
	if a := decide(w, EvClassified, env); a.Kind != Dispatch || len(a.Work) != 1 || a.Work[0].Hedged {
		t.Fatalf("streamed request hedged: %+v", a)
	}
}
