package router

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// verdictWork is the work a verdict brings back: its last attempt judged.
func verdictWork(outcome string, latency int64, quality *envelope.Quality, res *envelope.Result) *envelope.Work {
	return &envelope.Work{Key: "k", Current: res, Quality: quality,
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "g1", Outcome: outcome, LatencyMS: latency}}}
}

// A router learns each judged attempt from the verdict it handles: an
// accepted answer gives the model's latency and a pass, a rejected one a
// fail; a vendor error, a skipped target or a stage failure gives neither.
func TestVerdictsFeedTheObservedStatistics(t *testing.T) {
	ok := &envelope.Result{Content: "hi", FinishReason: "stop"}
	tests := []struct {
		name         string
		w            *envelope.Work
		wantLatency  bool
		wantEscalate float64
		wantVerdicts bool
	}{
		{"accepted", verdictWork(envelope.OutcomeOK, 40, &envelope.Quality{Passed: true}, ok), true, 0, true},
		{"rejected", verdictWork(envelope.OutcomeQualityFailed, 40, &envelope.Quality{Passed: false, Reason: "bad"}, ok), false, 1, true},
		{"vendor error", verdictWork(envelope.OutcomeError, 40, nil, &envelope.Result{ErrorClass: "server_error"}), false, 0, false},
		{"skipped", verdictWork(envelope.OutcomeOK, 40, nil, &envelope.Result{Skipped: true}), false, 0, false},
		{"stage failure", func() *envelope.Work {
			w := verdictWork(envelope.OutcomeOK, 40, nil, ok)
			w.Failed = &envelope.StageFailure{Stage: "gate"}
			return w
		}(), false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRouter(t)
			ev, err := eventOf(tt.w)
			if err != nil {
				t.Fatal(err)
			}
			for range minSamples {
				r.learn(tt.w, ev)
			}
			ms, hasLatency := r.seen.LatencyMS("a", "g1")
			rate, hasVerdicts := r.seen.EscalationRate("a", "g1")
			if hasLatency != tt.wantLatency || tt.wantLatency && ms != 40 {
				t.Fatalf("latency %v %v, want known=%v (40 ms)", ms, hasLatency, tt.wantLatency)
			}
			if hasVerdicts != tt.wantVerdicts || hasVerdicts && rate != tt.wantEscalate {
				t.Fatalf("escalation rate %v %v, want known=%v (%v)", rate, hasVerdicts, tt.wantVerdicts, tt.wantEscalate)
			}
		})
	}
}

// What one router replica learns from its verdicts reaches the others
// through the server in batches (llm.observed.attempts), once each: a
// replica does not count its own batch a second time.
func TestReplicasShareWhatTheyLearn(t *testing.T) {
	nc, js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	replica := func() *Router {
		r := testRouter(t)
		r.d.NC, r.d.JS = nc, js
		if err := r.observe(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	handling, other := replica(), replica()
	w := verdictWork(envelope.OutcomeOK, 25, &envelope.Quality{Passed: true}, &envelope.Result{Content: "hi", FinishReason: "stop"})
	for range minSamples {
		handling.learn(w, EvPass)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ms, ok := other.seen.LatencyMS("a", "g1"); ok && ms == 25 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica never learned the latency (samples %+v)", other.seen.latency)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let a few more flush periods pass: no batch comes back to its sender.
	time.Sleep(3 * observeFlushEvery)
	for name, r := range map[string]*Router{"handling": handling, "other": other} {
		r.seen.mu.RLock()
		n := r.seen.latency["a/g1"].samples
		r.seen.mu.RUnlock()
		if n != minSamples {
			t.Fatalf("%s replica counted %d samples, want %d", name, n, minSamples)
		}
	}
}

// A full batch goes out before the flush period, and stays one message.
func TestAFullBatchIsSharedAtOnce(t *testing.T) {
	nc, _ := testkit.JetStream(t)
	sub, err := nc.SubscribeSync(natsx.SubjectObservedAttempts)
	if err != nil {
		t.Fatal(err)
	}
	r := testRouter(t)
	r.d.NC = nc
	s := newSharer()
	r.share = s
	for range observeBatchMax {
		s.add(observation{Vendor: "a", Model: "g1", Outcome: envelope.OutcomeOK, LatencyMS: 1})
	}
	select {
	case <-s.full:
	default:
		t.Fatal("a full batch did not ask to be sent")
	}
	r.shareObservations()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var b observationBatch
	if err := envelope.UnmarshalInternal(m.Data, &b); err != nil || b.Router != s.id || len(b.Attempts) != observeBatchMax {
		t.Fatalf("batch: %d attempts from %q (%v)", len(b.Attempts), b.Router, err)
	}
	if s.take() != nil {
		t.Fatal("the shared observations are still pending")
	}
}
