package executor

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

type fixedPolicy struct{ p *policy.Policy }

func (f fixedPolicy) Current() *policy.Policy { return f.p }

// adapterFunc is a one-function fake vendor.
type adapterFunc func(ctx context.Context, req *provider.Request) (*provider.Response, error)

func (f adapterFunc) Complete(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return f(ctx, req)
}

func testExecutor(t *testing.T, a provider.Adapter) *Executor {
	t.Helper()
	p, err := policy.Parse([]byte(`
default_route: r
vendors: {a: {kind: openai, base_url: http://a}}
models: [{vendor: a, model: m, price: {input_per_mtok: 1, output_per_mtok: 2}}]
routes: [{name: r, chain: [{vendor: a, model: m}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	counter := func(name string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name}, labels)
	}
	return &Executor{cfg: Config{Vendor: "a", DefaultTimeout: time.Minute}, d: Deps{Log: zerolog.Nop(), Policy: fixedPolicy{p}, Adapter: a, Now: time.Now},
		calls: counter("c", "vendor", "model", "class"), cost: counter("u", "vendor", "model"), skipped: counter("s", "vendor", "model", "reason"),
		toGate:  &pipeline.DirectHandOff{Subject: natsx.SubjectGateJudge, Paths: counter("h", "path")},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "l"}, []string{"vendor", "model"})}
}

func work(now time.Time) *envelope.Work {
	return &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t", Messages: []envelope.Message{{Role: "user", Content: "hi"}}},
		Route: "r", Chain: []envelope.Target{{Vendor: "a", Model: "m"}}, ReceivedAt: now, Deadline: now.Add(30 * time.Second), Dispatch: 1}
}

func answer(context.Context, *provider.Request) (*provider.Response, error) {
	return &provider.Response{Content: "hello", FinishReason: "stop", Usage: envelope.Usage{InputTokens: 10, OutputTokens: 5}, HTTPStatus: 200}, nil
}

// The executor announces the attempt before the call (outcome started,
// same attempt id as the result) and hands the result to the gate; a call
// repeated after a redelivery has an attempt id of its own.
func TestAttemptStartedThenResult(t *testing.T) {
	for _, tt := range []struct {
		delivery int
		id       string
	}{{1, "k#1"}, {3, "k#1@3"}} {
		e := testExecutor(t, adapterFunc(answer))
		var started []pipeline.Outbound
		emit := func(o pipeline.Outbound) error { started = append(started, o); return nil }
		w := work(time.Now())
		outs, err := e.attempt(context.Background(), w, tt.delivery, nil, emit)
		if err != nil || len(outs) != 1 || outs[0].Subject != natsx.SubjectResults || outs[0].MsgID != "k:out:0:1" {
			t.Fatalf("delivery %d: %+v, %v", tt.delivery, outs, err)
		}
		var ev envelope.AttemptEvent
		if len(started) != 1 || json.Unmarshal(started[0].Data, &ev) != nil || ev.Outcome != envelope.OutcomeStarted || ev.AttemptID != tt.id || started[0].MsgID != tt.id+":started" {
			t.Fatalf("delivery %d: started event %+v", tt.delivery, started)
		}
		var res envelope.Work
		_ = json.Unmarshal(outs[0].Data, &res)
		if res.Current.AttemptID != tt.id || len(res.Attempts) != 1 || res.Attempts[0].Outcome != envelope.OutcomeOK || res.Current.CostUSD != 20e-6 {
			t.Fatalf("delivery %d: result %+v %+v", tt.delivery, res.Current, res.Attempts)
		}
	}
}

// A vendor that never answers is cut at the attempt deadline the router
// set, and the failure is a retryable timeout.
func TestAttemptDeadlineBoundsTheCall(t *testing.T) {
	e := testExecutor(t, adapterFunc(func(ctx context.Context, _ *provider.Request) (*provider.Response, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	// The vendor's own timeout is short too: a budget of 150 ms is then a
	// fair one, not work starved in a queue (skipped as stale).
	e.cfg.DefaultTimeout = 250 * time.Millisecond
	w := work(time.Now())
	w.AttemptDeadline = time.Now().Add(150 * time.Millisecond)
	began := time.Now()
	outs, err := e.attempt(context.Background(), w, 1, nil, func(pipeline.Outbound) error { return nil })
	if err != nil || len(outs) != 1 {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("the call ran %v past its 150 ms budget", took)
	}
	if res := w.Current; res.ErrorClass != string(provider.ClassTimeout) || !res.Retryable || len(w.Attempts) != 1 {
		t.Fatalf("want a retryable timeout attempt, got %+v", res)
	}
}

// A target that must not be called is skipped: no vendor call, no started
// event, no attempt; the skip goes straight to the router.
func TestSkipsGoToTheRouter(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(w *envelope.Work, now time.Time)
		reason string
	}{
		{"request deadline passed", func(w *envelope.Work, now time.Time) { w.Deadline = now.Add(-time.Second) }, envelope.SkipDeadline},
		{"attempt deadline passed in the queue", func(w *envelope.Work, now time.Time) { w.AttemptDeadline = now.Add(-time.Second) }, envelope.SkipStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
				called = true
				return answer(ctx, r)
			}))
			now := time.Now()
			w := work(now)
			tt.mutate(w, now)
			emitted := 0
			outs, err := e.attempt(context.Background(), w, 1, nil, func(pipeline.Outbound) error { emitted++; return nil })
			if err != nil || len(outs) != 1 || outs[0].Subject != natsx.SubjectVerdicts || outs[0].MsgID != "k:out:0:1" {
				t.Fatalf("%+v, %v", outs, err)
			}
			if called || emitted != 0 || len(w.Attempts) != 0 || !w.Current.Skipped || w.Current.ErrorClass != tt.reason {
				t.Fatalf("called %v, started events %d, attempts %d, result %+v", called, emitted, len(w.Attempts), w.Current)
			}
		})
	}
}

// A vendor that sends its headers and part of the body, then stalls, is cut
// at the attempt deadline too (a real adapter over loopback).
func TestAttemptDeadlineCutsAStallMidBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"par`))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	a, err := adapters.New("openai", adapters.Config{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	e := testExecutor(t, a)
	e.cfg.DefaultTimeout = 500 * time.Millisecond // 300 ms is then a fair budget
	w := work(time.Now())
	w.AttemptDeadline = time.Now().Add(300 * time.Millisecond)
	began := time.Now()
	if _, err := e.attempt(context.Background(), w, 1, nil, func(pipeline.Outbound) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("a stalled body held the attempt for %v (budget 300 ms)", took)
	}
	if w.Current.ErrorClass != string(provider.ClassTimeout) || !w.Current.Retryable {
		t.Fatalf("want a retryable timeout, got %+v", w.Current)
	}
}

// redelivered is a delivery of work that the server delivers again (its
// first executor's ack was lost, e.g. with a NATS node). A fake message is
// enough: the test is about the executor's decision, JetStream is real.
type redelivered struct {
	jetstream.Msg
	data []byte
}

func (m redelivered) Data() []byte                     { return m.data }
func (m redelivered) Headers() nats.Header             { return nats.Header{} }
func (m redelivered) Subject() string                  { return natsx.ExecSubject("a") }
func (m redelivered) InProgress() error                { return nil }
func (m redelivered) Ack() error                       { return nil }
func (m redelivered) NakWithDelay(time.Duration) error { return nil }

// Work redelivered after its request was answered (the reply of this run,
// by its id, is in LLM_REPLIES) does not call the vendor again. Before, a
// NATS node killed with the executor's ack in flight had the vendor called
// twice for an answered request. A reply of another run (a replay) or none
// still gets the call.
func TestRedeliveredWorkOfAnAnsweredRequestCallsNoVendor(t *testing.T) {
	for _, tt := range []struct {
		name      string
		replyID   string // Nats-Msg-Id of the stored reply; "" none
		delivery  uint64
		wantCalls int
	}{
		{"answered, redelivered", "k:reply", 2, 0},
		{"answered by another run", "replay-1:reply", 2, 1},
		{"not answered, redelivered", "", 2, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, js := testkit.JetStream(t)
			testkit.WithTopology(t, js)
			ctx := context.Background()
			calls := 0
			e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
				calls++
				return answer(ctx, r)
			}))
			e.d.JS, e.pub = js, pipeline.Publisher{JS: js}
			w := work(time.Now())
			if tt.replyID != "" {
				store, _ := natsx.ReplyPublishSubject(w.Request.ReplySubject())
				m := &nats.Msg{Subject: store, Data: []byte(`{}`), Header: nats.Header{}}
				m.Header.Set(natsx.HeaderMsgID, tt.replyID)
				if _, err := js.PublishMsg(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			data, _ := json.Marshal(w)
			d := &pipeline.Delivery{Msg: redelivered{data: data}, Meta: &jetstream.MsgMetadata{NumDelivered: tt.delivery}}
			if err := e.Handle(ctx, d); err != nil {
				t.Fatal(err)
			}
			if calls != tt.wantCalls {
				t.Fatalf("vendor called %d times, want %d", calls, tt.wantCalls)
			}
		})
	}
}

// Work whose attempt budget was eaten in our queues (a backlog, a consumer
// stalled after a partition) is not called to time out on our account: it
// goes back as stale for a fresh budget, unless the request's deadline is
// what binds (a re-offer could not give it more time).
func TestStarvedWorkIsSkippedNotCalled(t *testing.T) {
	tests := []struct {
		name      string
		left      time.Duration // attempt budget when the work arrives
		deadline  time.Duration // request deadline from now
		wantStale bool
	}{
		{name: "budget eaten, deadline far", left: 300 * time.Millisecond, deadline: time.Minute, wantStale: true},
		{name: "fresh floor budget", left: 1900 * time.Millisecond, deadline: time.Minute},
		{name: "the request's deadline binds", left: 300 * time.Millisecond, deadline: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
				called = true
				return answer(ctx, r)
			}))
			e.cfg.DefaultTimeout = 10 * time.Second
			now := time.Now()
			w := work(now)
			w.AttemptDeadline, w.Deadline = now.Add(tt.left), now.Add(tt.deadline)
			if _, err := e.attempt(context.Background(), w, 1, nil, func(pipeline.Outbound) error { return nil }); err != nil {
				t.Fatal(err)
			}
			stale := w.Current.Skipped && w.Current.ErrorClass == envelope.SkipStale
			if stale != tt.wantStale || called == tt.wantStale {
				t.Fatalf("stale %v, vendor called %v (%+v); want stale %v", stale, called, w.Current, tt.wantStale)
			}
		})
	}
}
