package router

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// What the latency-aware and least-loaded strategies learn: each judged
// attempt's latency and verdict, and each vendor's in-flight calls.
//
// A router learns a judged attempt from the verdict it handles, at once,
// and shares what it learned with the other router replicas in batches on
// core NATS (natsx.SubjectObservedAttempts), because a verdict reaches only
// one of them. Before, the gate published every judged attempt's full
// event on core NATS: one message more per attempt through the server and
// back, and a second publish that made the gate's hand-off asynchronous.

// observation is one judged attempt, as shared between routers.
type observation struct {
	Vendor    string `json:"vendor"`
	Model     string `json:"model"`
	Outcome   string `json:"outcome"`
	LatencyMS int64  `json:"latency_ms"`
}

// observationBatch is what one router learned since its last batch.
type observationBatch struct {
	// Router tells a router its own batches apart (it learned them already).
	Router   string        `json:"router"`
	Attempts []observation `json:"attempts"`
}

const (
	// observeFlushEvery bounds how late another replica learns an attempt.
	observeFlushEvery = 100 * time.Millisecond
	// observeBatchMax flushes a batch early, so one stays a small message.
	observeBatchMax = 256
)

// sharer collects the observations not yet sent to the other routers.
type sharer struct {
	id      string
	mu      sync.Mutex
	pending []observation
	// due fires observeFlushEvery after the first pending observation (an
	// idle router wakes for nothing); full when pending reaches
	// observeBatchMax.
	due  *time.Timer
	full chan struct{}
}

func newSharer() *sharer {
	due := time.NewTimer(time.Hour)
	due.Stop()
	return &sharer{id: nuid.Next(), due: due, full: make(chan struct{}, 1)}
}

func (s *sharer) add(o observation) {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.due.Reset(observeFlushEvery)
	}
	s.pending = append(s.pending, o)
	full := len(s.pending) >= observeBatchMax
	s.mu.Unlock()
	if full {
		select {
		case s.full <- struct{}{}:
		default:
		}
	}
}

// take returns the pending observations as a batch (nil when none).
func (s *sharer) take() *observationBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	b := &observationBatch{Router: s.id, Attempts: s.pending}
	s.pending = make([]observation, 0, len(b.Attempts))
	return b
}

// apply feeds one judged attempt to the statistics: an accepted answer
// gives its latency and a pass, a rejected one a fail; a vendor error
// gives neither (the circuit breakers count those).
func (o *observed) apply(a observation, now time.Time) {
	switch a.Outcome {
	case envelope.OutcomeOK:
		o.addLatency(a.Vendor, a.Model, float64(a.LatencyMS), now)
		o.addVerdict(a.Vendor, a.Model, false, now)
	case envelope.OutcomeQualityFailed:
		o.addVerdict(a.Vendor, a.Model, true, now)
	}
}

// learn records the attempt a verdict judged (a vendor's answer, accepted
// or not, or its failure) and queues it for the other routers.
func (r *Router) learn(w *envelope.Work, ev Event) {
	if ev != EvPass && ev != EvQualityFail && ev != EvVendorFailure || len(w.Attempts) == 0 {
		return
	}
	a := &w.Attempts[len(w.Attempts)-1]
	o := observation{Vendor: a.Vendor, Model: a.Model, Outcome: a.Outcome, LatencyMS: a.LatencyMS}
	r.seen.apply(o, r.d.Now())
	if r.share != nil {
		r.share.add(o)
	}
}

// observe shares this router's observations and takes the other
// replicas', and polls each vendor's in-flight calls from its executors'
// consumer every second.
func (r *Router) observe(ctx context.Context) error {
	if r.d.NC == nil {
		return nil
	}
	r.share = newSharer()
	sub, err := r.d.NC.Subscribe(natsx.SubjectObservedAttempts, func(m *nats.Msg) {
		var b observationBatch
		if envelope.UnmarshalInternal(m.Data, &b) != nil || b.Router == r.share.id {
			return
		}
		now := r.d.Now()
		for _, a := range b.Attempts {
			r.seen.apply(a, now)
		}
	})
	if err != nil {
		return fmt.Errorf("router: observe attempts: %w", err)
	}
	go func() {
		defer func() { _ = sub.Unsubscribe() }()
		defer r.share.due.Stop()
		poll := time.NewTicker(time.Second)
		defer poll.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.share.due.C:
				r.shareObservations()
			case <-r.share.full:
				r.shareObservations()
			case <-poll.C:
				r.pollInFlight(ctx)
			}
		}
	}()
	return nil
}

// shareObservations publishes the pending batch. Core NATS, no stream: an
// observation lost to a disconnect only delays what a replica learns.
func (r *Router) shareObservations() {
	b := r.share.take()
	if b == nil {
		return
	}
	data, err := envelope.MarshalInternal(b)
	if err != nil {
		return
	}
	if err := r.d.NC.Publish(natsx.SubjectObservedAttempts, data); err != nil {
		r.d.Log.Debug().Err(err).Int("attempts", len(b.Attempts)).Msg("observations not shared")
	}
}

func (r *Router) pollInFlight(ctx context.Context) {
	for name := range r.d.Policy.Current().Vendors {
		c, err := r.d.JS.Consumer(ctx, natsx.StreamPipeline, "exec-"+name)
		if err != nil {
			continue
		}
		if info, err := c.Info(ctx); err == nil {
			r.seen.setInFlight(name, info.NumAckPending)
		}
	}
}
