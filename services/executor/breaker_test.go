package executor

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// fakeClock is a settable clock for the executor's time budget.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// honoursContext answers like a real HTTP client: not at all once its
// context is done.
func honoursContext(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return answer(ctx, r)
}

// A vendor call that fails because of our side (NATS slow or partitioned,
// the executor shutting down) says nothing about the vendor's health and
// must not open its circuit; a vendor that is silent past its own timeout
// or answers 5xx still does. Before, a partition that made the
// attempt-started publish take longer than the attempt's budget left the
// call no time at all: each such "timeout" counted, and five opened the
// vendor's circuit for every replica (TestClusterNodePartitioned then
// failed hundreds of requests nobody had sent to the vendor).
func TestOurSideFailuresDoNotOpenTheVendorCircuit(t *testing.T) {
	tests := []struct {
		name     string
		vendor   func(cancel context.CancelFunc) provider.Adapter
		stream   bool          // a streamed request whose deltas cannot be published
		emitSlow time.Duration // how long the attempt-started publish takes (test clock)
		timeout  time.Duration // the vendor's own timeout (0: a minute)
		left     time.Duration // the attempt's budget when the work arrives (0: 10 s)
		wantOpen bool
	}{
		// A slow attempt-started publish no longer eats the call's budget:
		// once the event is stored the budget runs from then
		// (TestLostStartedAckMakesNoSecondAttempt, TestSlowStartedPublishKeepsTheCallsBudget).
		{name: "work delivered with 100 ms of its budget left", left: 100 * time.Millisecond,
			vendor: func(context.CancelFunc) provider.Adapter {
				return adapterFunc(func(ctx context.Context, _ *provider.Request) (*provider.Response, error) {
					<-ctx.Done() // the vendor's usual 80-120 ms, on a loaded machine
					return nil, ctx.Err()
				})
			}},
		{name: "executor stops mid-call", vendor: func(cancel context.CancelFunc) provider.Adapter {
			return adapterFunc(func(ctx context.Context, _ *provider.Request) (*provider.Response, error) {
				cancel() // the shutdown grace ran out
				<-ctx.Done()
				return nil, ctx.Err()
			})
		}},
		{name: "deltas cannot be published", stream: true,
			vendor: func(context.CancelFunc) provider.Adapter { return &streamFunc{pieces: []string{"He", "llo"}} }},
		{name: "vendor silent past its own timeout", timeout: 50 * time.Millisecond, wantOpen: true,
			vendor: func(context.CancelFunc) provider.Adapter {
				return adapterFunc(func(ctx context.Context, _ *provider.Request) (*provider.Response, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				})
			}},
		{name: "vendor answers 5xx", wantOpen: true, vendor: func(context.CancelFunc) provider.Adapter {
			return adapterFunc(func(context.Context, *provider.Request) (*provider.Response, error) {
				return nil, &provider.Error{Class: provider.ClassServerError, HTTPStatus: 503, Retryable: true, Message: "down"}
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, js := testkit.JetStream(t)
			brs, err := breaker.New(context.Background(), js, breaker.Config{}, breaker.Deps{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = brs.Close() })
			clock := &fakeClock{now: time.Now()}
			for i := range breaker.DefaultFailureThreshold {
				ctx, cancel := context.WithCancel(context.Background())
				e := testExecutor(t, tt.vendor(cancel))
				e.d.Breakers, e.d.Now = brs, clock.Now
				if tt.timeout > 0 {
					e.cfg.DefaultTimeout = tt.timeout
				}
				if tt.stream {
					down, err := nats.Connect(nc.ConnectedUrl())
					if err != nil {
						t.Fatal(err)
					}
					down.Close() // NATS unreachable: a delta publish fails
					e.d.NC = down
				}
				w := work(clock.Now())
				w.Request.Stream = tt.stream
				w.AttemptDeadline = clock.Now().Add(10 * time.Second)
				if tt.left > 0 {
					// A consumer stalled after a partition (its pull
					// requests lost with the cut node) delivers late.
					w.AttemptDeadline = clock.Now().Add(tt.left)
				}
				emit := func(pipeline.Outbound) error { clock.Add(tt.emitSlow); return nil }
				if _, err := e.attempt(ctx, w, 1, nil, emit); err != nil {
					t.Fatal(err)
				}
				cancel()
				if w.Current.OK() {
					t.Fatalf("call %d answered; the case wants a failed call", i+1)
				}
			}
			key := BreakerKeys(envelope.Target{Vendor: "a", Model: "m"})[0]
			if open := brs.State(key) == breaker.StateOpen; open != tt.wantOpen {
				t.Fatalf("after %d failed calls circuit %s open = %v, want %v (%s)", breaker.DefaultFailureThreshold, key, open, tt.wantOpen, brs.Status(key).Reason)
			}
		})
	}
}

// The attempt-started publish waits no longer than the attempt's budget:
// once that is spent the vendor would get no time, so the work goes back
// (and comes again as stale, for the router to re-offer) instead of
// holding a slot for the publish timeout and then calling with nothing
// left. Before, a stream that never acknowledged (its leader cut off)
// held the attempt for the client's 5 s default.
func TestAttemptStartedPublishBoundedByTheBudget(t *testing.T) {
	nc, js := testkit.JetStream(t)
	// A stream leader that is cut off: the publish is received, never
	// acknowledged.
	sub, err := nc.Subscribe(natsx.SubjectAttempt, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	called := false
	e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
		called = true
		return answer(ctx, r)
	}))
	e.d.JS, e.pub = js, pipeline.Publisher{JS: js}
	w := work(time.Now())
	// The started event is retried under its id until the request's
	// deadline (its attempt budget then runs from the stored start), so
	// the request's deadline is what bounds the wait here.
	w.AttemptDeadline = time.Now().Add(300 * time.Millisecond)
	w.Deadline = w.AttemptDeadline
	data, _ := json.Marshal(w)
	d := &pipeline.Delivery{Msg: redelivered{data: data}, Meta: &jetstream.MsgMetadata{NumDelivered: 1}}
	began := time.Now()
	err = e.Handle(context.Background(), d)
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("the attempt-started publish held the attempt %v (request deadline 300 ms)", took)
	}
	if err == nil || called {
		t.Fatalf("Handle: %v, vendor called %v; want the publish's error and no call", err, called)
	}
}

// steppingClock advances by step at every reading: time passing in the
// steps before the call (the breaker and limiter buckets answering slowly
// while a NATS node is cut off).
type steppingClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *steppingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

// Work whose attempt deadline passes while the executor asks the breaker
// and limiter is skipped stale before anything is announced: no started
// event, no call with no time left (which the ledger would show as an
// attempt no vendor saw).
func TestWorkGoneStaleBeforeTheCallIsSkipped(t *testing.T) {
	called := false
	e := testExecutor(t, adapterFunc(func(ctx context.Context, r *provider.Request) (*provider.Response, error) {
		called = true
		return honoursContext(ctx, r)
	}))
	start := time.Now()
	clock := &steppingClock{now: start, step: 6 * time.Second}
	e.d.Now = clock.Now
	w := work(start)
	w.Deadline = start.Add(time.Minute)
	w.AttemptDeadline = start.Add(10 * time.Second) // fresh at the first reading (6 s), gone at the next (12 s)
	emitted := 0
	outs, err := e.attempt(context.Background(), w, 1, nil, func(pipeline.Outbound) error { emitted++; return nil })
	if err != nil || len(outs) != 1 || outs[0].Subject != natsx.SubjectVerdicts {
		t.Fatalf("%+v, %v", outs, err)
	}
	if called || emitted != 0 || len(w.Attempts) != 0 || !w.Current.Skipped || w.Current.ErrorClass != envelope.SkipStale {
		t.Fatalf("called %v, started events %d, attempts %d, result %+v", called, emitted, len(w.Attempts), w.Current)
	}
}

// An attempt-started publish that took longer than the attempt's budget
// (a NATS node cut off) still leaves the vendor its whole budget: the call
// is made and answered, and nothing counts against the vendor.
func TestSlowStartedPublishKeepsTheCallsBudget(t *testing.T) {
	_, js := testkit.JetStream(t)
	brs, err := breaker.New(context.Background(), js, breaker.Config{}, breaker.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = brs.Close() })
	clock := &fakeClock{now: time.Now()}
	e := testExecutor(t, adapterFunc(honoursContext))
	e.d.Breakers, e.d.Now = brs, clock.Now
	w := work(clock.Now())
	budget := clock.Now().Add(10 * time.Second)
	w.AttemptDeadline = budget
	emit := func(pipeline.Outbound) error { clock.Add(11 * time.Second); return nil }
	if _, err := e.attempt(context.Background(), w, 1, nil, emit); err != nil {
		t.Fatal(err)
	}
	if !w.Current.OK() {
		t.Fatalf("call after a slow started publish: %+v, want answered", w.Current)
	}
	if !w.AttemptDeadline.Equal(budget) {
		t.Fatalf("attempt deadline %v after the call, want it restored to %v", w.AttemptDeadline, budget)
	}
	key := BreakerKeys(envelope.Target{Vendor: "a", Model: "m"})[0]
	if st := brs.State(key); st == breaker.StateOpen {
		t.Fatalf("circuit %s open after an answered call", key)
	}
}
