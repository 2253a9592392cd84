package pipeline

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// headerMsg is the few jetstream.Msg methods the middleware uses.
type headerMsg struct {
	jetstream.Msg
	hdr nats.Header
}

func (m *headerMsg) Headers() nats.Header                      { return m.hdr }
func (m *headerMsg) Data() []byte                              { return []byte(`{}`) }
func (m *headerMsg) Subject() string                           { return "llm.results" }
func (m *headerMsg) Metadata() (*jetstream.MsgMetadata, error) { return nil, errors.New("none") }
func (m *headerMsg) TermWithReason(string) error               { return nil }
func (m *headerMsg) NakWithDelay(time.Duration) error          { return nil }

// The stage middleware's own lines (here: a dead letter) carry the request
// id, tenant and trace id of the work message they are about.
func TestRequestStageLogsRequestFields(t *testing.T) {
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "req-1", Tenant: "acme"}, TraceParent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}
	o, err := WorkOut("llm.results", "id", w)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	h := RequestStage(zerolog.New(&buf), func(context.Context, *Delivery) error {
		return Terminal("boom", errors.New("poison"))
	}, func(context.Context, *Delivery, string, error) error { return nil }, 5, time.Second, true)
	if err := h(context.Background(), &Delivery{Msg: &headerMsg{hdr: o.Header}}); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, want := range []string{`"request_id":"req-1"`, `"tenant":"acme"`, `"trace_id":"0123456789abcdef0123456789abcdef"`, "dead-lettered"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %s", line, want)
		}
	}
}

// FinishOuts sends a request's finished attempt rows inside its request
// event (ids and start from the executor's Calls, so each row replaces its
// started row), one stream message for the request and all its calls; a
// hedged branch sends its rows as attempt events of their own, since a
// second branch's request event would be dropped as a duplicate.
func TestFinishOutsCarryTheAttemptRows(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	work := func(hedged bool) *envelope.Work {
		return &envelope.Work{Key: "acme.r1", Request: envelope.Request{ID: "r1", Tenant: "acme", ReplyTo: "llm.replies.acme.r1"},
			Route: "chat", ReceivedAt: start, Hedged: hedged,
			Attempts: []envelope.AttemptResult{
				{Attempt: 1, Vendor: "openai", Model: "gpt-4o-mini", Outcome: envelope.OutcomeError, ErrorClass: "server_error", HTTPStatus: 503, LatencyMS: 40},
				{Attempt: 2, Vendor: "anthropic", Model: "claude-haiku-4-5", Outcome: envelope.OutcomeOK, LatencyMS: 90, Usage: envelope.Usage{InputTokens: 10, OutputTokens: 5}},
			},
			Calls:   []envelope.Call{{AttemptID: "acme.r1#1@2", StartedAt: start.Add(time.Second)}, {AttemptID: "acme.r1#2", StartedAt: start.Add(2 * time.Second)}},
			Current: &envelope.Result{AttemptID: "acme.r1#2", StartedAt: start.Add(2 * time.Second)},
		}
	}
	wantIDs := []string{"acme.r1#1@2", "acme.r1#2"}
	tests := []struct {
		name         string
		hedged       bool
		wantSubjects []string
	}{
		{"one request event with the rows", false, []string{"llm.telemetry.request", "llm.store.replies.acme.r1"}},
		{"hedged: the rows apart", true, []string{"llm.telemetry.attempt", "llm.telemetry.attempt", "llm.telemetry.request", "llm.store.replies.acme.r1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := work(tt.hedged)
			r := ReplyFor(w, start.Add(3*time.Second))
			r.Status = envelope.StatusOK
			outs, err := FinishOuts(w, r, start.Add(3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var subjects []string
			var rows []envelope.AttemptEvent
			var ev envelope.RequestEvent
			for _, o := range outs {
				subjects = append(subjects, o.Subject)
				switch o.Subject {
				case "llm.telemetry.attempt":
					var a envelope.AttemptEvent
					if err := envelope.UnmarshalInternal(o.Data, &a); err != nil || o.MsgID != a.AttemptID {
						t.Fatalf("attempt event %s id %s: %v", o.Data, o.MsgID, err)
					}
					rows = append(rows, a)
				case "llm.telemetry.request":
					if err := envelope.UnmarshalInternal(o.Data, &ev); err != nil || o.MsgID != "acme.r1:request" {
						t.Fatalf("request event id %s: %v", o.MsgID, err)
					}
					rows = append(rows, ev.AttemptEvents...)
				}
			}
			if strings.Join(subjects, " ") != strings.Join(tt.wantSubjects, " ") {
				t.Fatalf("subjects %v, want %v", subjects, tt.wantSubjects)
			}
			if tt.hedged != (len(ev.AttemptEvents) == 0) {
				t.Fatalf("request event carries %d rows (hedged %v)", len(ev.AttemptEvents), tt.hedged)
			}
			if len(rows) != 2 || ev.Attempts != 2 {
				t.Fatalf("%d rows, request event counts %d attempts; want 2 and 2", len(rows), ev.Attempts)
			}
			for i, a := range rows {
				c := w.Calls[i]
				if a.AttemptID != wantIDs[i] || !a.TS.Equal(c.StartedAt) || a.RequestID != "r1" || a.Tenant != "acme" ||
					a.Vendor != w.Attempts[i].Vendor || a.Outcome != w.Attempts[i].Outcome || a.LatencyMS != w.Attempts[i].LatencyMS || a.Hedged != tt.hedged {
					t.Fatalf("row %d: %+v", i, a)
				}
			}
		})
	}
}

// An attempt row carries every count of the call's usage: reasoning tokens
// and the vendor-reported cost (OpenRouter's usage.cost), which the ledger
// stores as the attempt's cost (cost_source vendor). Both were dropped
// when the row was built, so the ledger priced such calls from its catalog
// and stored reasoning_tokens 0.
func TestAttemptRowsCarryTheWholeUsage(t *testing.T) {
	u := envelope.Usage{InputTokens: 100, OutputTokens: 50, CachedTokens: 20, CacheWriteTokens: 5, ReasoningTokens: 30, VendorCostUSD: 0.0042, VendorCostReported: true}
	w := &envelope.Work{Key: "acme.r1", Request: envelope.Request{ID: "r1", Tenant: "acme"},
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "openrouter", Model: "m", Outcome: envelope.OutcomeOK, Usage: u}},
		Calls:    []envelope.Call{{AttemptID: "acme.r1#1", StartedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}}}
	tests := []struct {
		name string
		ev   *envelope.AttemptEvent
	}{
		{"AttemptEventFor", AttemptEventFor(w, &w.Attempts[0], &envelope.Result{AttemptID: "acme.r1#1"})},
		{"FinishedAttemptEvents", &FinishedAttemptEvents(w)[0]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ev.Usage(); got != u {
				t.Fatalf("row usage %+v, want %+v", got, u)
			}
		})
	}
}

// The lazy request logger is built once, on the first line, and carries
// the request's identity like RequestLogger's.
func TestLazyRequestLoggerBuildsOnceWithTheRequestFields(t *testing.T) {
	var buf bytes.Buffer
	w := &envelope.Work{Request: envelope.Request{ID: "r1", Tenant: "acme"}, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
	log := LazyRequestLogger(zerolog.New(&buf), w)
	first := log()
	if second := log(); second != first {
		t.Fatal("the logger was built twice")
	}
	first.Warn().Msg("x")
	for _, want := range []string{`"request_id":"r1"`, `"tenant":"acme"`, `"trace_id":"0af7651916cd43dd8448eb211c80319c"`} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("line %s lacks %s", buf.String(), want)
		}
	}
}
