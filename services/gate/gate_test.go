package gate

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

type fixedPolicy struct{ p *policy.Policy }

func (f fixedPolicy) Current() *policy.Policy { return f.p }

func testGate() *Gate {
	p, err := policy.Parse([]byte(`
default_route: chat
vendors: {a: {kind: openai, base_url: http://a}}
models: [{vendor: a, model: m}]
routes: [{name: chat, chain: [{vendor: a, model: m}]}, {name: polite, toxicity: true, chain: [{vendor: a, model: m}]}]
`))
	if err != nil {
		panic(err)
	}
	return &Gate{d: Deps{Log: zerolog.Nop(), Now: time.Now, Policy: fixedPolicy{p}},
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "v"}, []string{"verdict"})}
}

// The gate only judges: for every result it returns the work with its
// verdict for the router (the attempt's outcome in it, which the router
// sends to the ledger) and the finished attempt's event for the router's
// observer on core NATS, and nothing else (no stream write of the attempt
// row, no reply, no escalation, no cache write).
func TestJudgeReturnsAttemptAndVerdict(t *testing.T) {
	started := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		res       envelope.Result
		format    *envelope.ResponseFormat
		outcome   string
		passed    *bool // nil: no verdict (a vendor failure)
		degraded  bool
		attemptID string
		cacheHit  bool
		route     string
	}{
		{name: "vendor failure", res: envelope.Result{ErrorClass: "server_error", HTTPStatus: 503, Retryable: true}, outcome: envelope.OutcomeError, attemptID: "k#1"},
		{name: "passing answer", res: envelope.Result{Content: "hello", FinishReason: "stop", Usage: envelope.Usage{InputTokens: 100, CachedTokens: 80}},
			outcome: envelope.OutcomeOK, passed: ptr(true), attemptID: "k#1", cacheHit: true},
		{name: "truncated answer", res: envelope.Result{Content: "hel", FinishReason: "length"}, outcome: envelope.OutcomeOK, passed: ptr(true), degraded: true, attemptID: "k#1"},
		{name: "invalid JSON", res: envelope.Result{Content: "nope", FinishReason: "stop"}, format: &envelope.ResponseFormat{Type: "json_object"},
			outcome: envelope.OutcomeQualityFailed, passed: ptr(false), attemptID: "k#1"},
		{name: "content filter", res: envelope.Result{Content: "partial", FinishReason: "content_filter"}, outcome: envelope.OutcomeQualityFailed, passed: ptr(false), attemptID: "k#1"},
		{name: "refusal", res: envelope.Result{Content: "I'm sorry, but I can't help with that.", FinishReason: "stop"}, outcome: envelope.OutcomeQualityFailed, passed: ptr(false), attemptID: "k#1"},
		{name: "abusive answer on a toxicity route", res: envelope.Result{Content: "What an idiot question.", FinishReason: "stop"}, route: "polite",
			outcome: envelope.OutcomeQualityFailed, passed: ptr(false), attemptID: "k#1"},
		{name: "abusive answer elsewhere", res: envelope.Result{Content: "What an idiot question.", FinishReason: "stop"},
			outcome: envelope.OutcomeOK, passed: ptr(true), attemptID: "k#1"},
		{name: "repeated call after a redelivery keeps its own id", res: envelope.Result{Content: "hello", FinishReason: "stop", AttemptID: "k#1@2"},
			outcome: envelope.OutcomeOK, passed: ptr(true), attemptID: "k#1@2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.res
			res.StartedAt = started
			route := tt.route
			if route == "" {
				route = "chat"
			}
			w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t", ResponseFormat: tt.format}, Route: route,
				Chain: []envelope.Target{{Vendor: "a", Model: "m"}}, Current: &res,
				Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "m", Outcome: map[bool]string{true: envelope.OutcomeOK, false: envelope.OutcomeError}[res.ErrorClass == ""], ErrorClass: res.ErrorClass, Usage: res.Usage}}}
			outs, err := testGate().judge(w)
			if err != nil || len(outs) != 1 {
				t.Fatalf("got %d messages, %v (want the verdict alone)", len(outs), err)
			}
			if outs[0].Subject != natsx.SubjectVerdicts || outs[0].MsgID != "k:verdict:"+tt.attemptID || outs[0].Core {
				t.Fatalf("subject/id: %s %s core %v", outs[0].Subject, outs[0].MsgID, outs[0].Core)
			}
			var v envelope.Work
			if err := json.Unmarshal(outs[0].Data, &v); err != nil {
				t.Fatal(err)
			}
			// The row the router sends the ledger is built from the verdict.
			rows := pipeline.FinishedAttemptEvents(&v)
			if ev := rows[len(rows)-1]; ev.Outcome != tt.outcome || ev.AttemptID != tt.attemptID || ev.CacheHit != tt.cacheHit {
				t.Fatalf("the attempt's row from the verdict: %+v", ev)
			}
			if got := v.Attempts[len(v.Attempts)-1].Outcome; got != tt.outcome {
				t.Fatalf("the attempt's outcome in the verdict = %q, want %q (the ledger's row is built from it)", got, tt.outcome)
			}
			switch {
			case tt.passed == nil && v.Quality != nil:
				t.Fatalf("a vendor failure got a verdict: %+v", v.Quality)
			case tt.passed != nil && (v.Quality == nil || v.Quality.Passed != *tt.passed || v.Degraded != tt.degraded):
				t.Fatalf("verdict %+v degraded %v, want passed %v degraded %v", v.Quality, v.Degraded, *tt.passed, tt.degraded)
			case tt.passed != nil && !*tt.passed && v.Quality.Reason == "":
				t.Fatal("a failed verdict needs a reason")
			}
		})
	}
}

func TestJudgeRefusesMalformedWork(t *testing.T) {
	_, err := testGate().judge(&envelope.Work{Key: "k", Request: envelope.Request{ID: "k"}})
	var te *pipeline.TerminalError
	if !errors.As(err, &te) || te.Reason != "malformed_work" {
		t.Fatalf("want a terminal malformed_work error, got %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
