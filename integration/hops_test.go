package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// streamTraffic is what the pipeline's streams have taken in so far: every
// message stored (a stream's last sequence; duplicates dropped by message id
// get none) and every message removed from a work queue (an ack).
// Anchors (natsx.KeepAnchor) are left out: a new one is a write and the
// old one it replaces a removal.
type streamTraffic struct{ writes, removed, anchors map[string]uint64 }

func (e *env) streamTraffic() streamTraffic {
	e.t.Helper()
	ctx := context.Background()
	tr := streamTraffic{writes: map[string]uint64{}, removed: map[string]uint64{}, anchors: map[string]uint64{}}
	for _, name := range []string{natsx.StreamRequests, natsx.StreamPipeline, natsx.StreamReplies, natsx.StreamTelemetry} {
		s, err := e.sys.JS.Stream(ctx, name)
		if err != nil {
			e.t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		tr.writes[name] = info.State.LastSeq
		tr.anchors[name] = anchorSeq(ctx, s)
		if name != natsx.StreamReplies { // kept for an hour, never acked away
			tr.removed[name] = info.State.LastSeq - info.State.Msgs
		}
	}
	return tr
}

func (tr streamTraffic) since(before streamTraffic) (writes, acks map[string]uint64, totalWrites, totalAcks uint64) {
	writes, acks = map[string]uint64{}, map[string]uint64{}
	for k, v := range tr.writes {
		writes[k] = v - before.writes[k] - anchorWrites(before.anchors[k], tr.anchors[k])
		totalWrites += writes[k]
	}
	for k, v := range tr.removed {
		acks[k] = v - before.removed[k]
		if before.anchors[k] != 0 { // the new anchor removed the old one
			acks[k] -= anchorWrites(before.anchors[k], tr.anchors[k])
		}
		totalAcks += acks[k]
	}
	return writes, acks, totalWrites, totalAcks
}

// A request answered by its first vendor call costs 5 stream writes
// (llm.requests, llm.exec, the started attempt row, the request event
// carrying its finished attempt rows, the reply) and 4 acks (intake,
// executor, the ledger's two telemetry messages): the intake hands the
// classified work to a router directly (llm.router.route), the executor
// its result to a gate (llm.gate.judge) and the gate its verdict to a
// router (llm.router.verdict), each reader handling it at once and
// answering. With the direct hand-offs turned off, the work is written to
// llm.classified, llm.results and llm.verdicts and acked from there: 8
// writes and 7 acks. (The gate used to store the finished attempt row as a
// message of its own: 9 writes and 8 acks.) The rows in ClickHouse are the
// same either way: one finished row per call, one request row, no row
// left as started. With the router's request events in batches (the
// default), the request events of requests finishing together share a
// write and an ack: between one and n messages for n requests.
func TestStreamWritesPerRequest(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		direct, batched      bool
		wantWrites, wantAcks float64 // one request event per message
	}{
		{name: "direct hand-offs", direct: true, wantWrites: 5, wantAcks: 4},
		{name: "direct hand-offs, request events in batches", direct: true, batched: true, wantWrites: 5, wantAcks: 4},
		{name: "llm.classified, llm.results and llm.verdicts", direct: false, wantWrites: 8, wantAcks: 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			streamWritesPerRequest(t, tt.direct, tt.batched, tt.wantWrites, tt.wantAcks)
		})
	}
}

func streamWritesPerRequest(t *testing.T, direct, batched bool, wantWrites, wantAcks float64) {
	e := start(t, func(c *app.Config) {
		c.Intake.DirectRouter, c.Executor.DirectGate, c.Gate.DirectRouter = direct, direct, direct
		c.Router.BatchRequestEvents = batched
	})
	const n = 20
	var reqs []*envelope.Request
	for i := range n {
		reqs = append(reqs, e.request(fmt.Sprintf("w%02d", i), "chat", fmt.Sprintf("hello %d", i)))
	}
	// Warm-up: the first request creates the ledger's tables and consumers.
	e.submitAll([]*envelope.Request{e.request("warm", "chat", "warm up")}, 30*time.Second)
	e.settled(30 * time.Second)
	e.telemetryDrained(30 * time.Second)
	before := e.streamTraffic()
	replies := e.submitAll(reqs, 60*time.Second)
	e.settled(30 * time.Second)
	e.telemetryDrained(30 * time.Second)
	writes, acks, totalWrites, totalAcks := e.streamTraffic().since(before)
	t.Logf("per %d requests: writes %v, acks %v", n, writes, acks)
	attempts := 0
	for id, rs := range replies {
		if len(rs) != 1 || rs[0].Status != envelope.StatusOK || len(rs[0].Attempts) != 1 {
			t.Fatalf("%s: want one answer after one call, got %d replies %+v", id, len(rs), rs[0])
		}
		attempts += len(rs[0].Attempts)
	}
	if batched {
		// n started rows, and the n request events in 1..n messages.
		events := writes[natsx.StreamTelemetry] - n
		if events < 1 || events > n || acks[natsx.StreamTelemetry] != writes[natsx.StreamTelemetry] {
			t.Fatalf("LLM_TELEMETRY: %d writes and %d acks for %d started rows and %d request events, want the events in 1 to %d messages, each acked",
				writes[natsx.StreamTelemetry], acks[natsx.StreamTelemetry], n, n, n)
		}
		t.Logf("%d request events in %d messages", n, events)
		totalWrites += n - events // counted below as one message per event
		totalAcks += n - events
	}
	if got := float64(totalWrites) / n; got != wantWrites {
		t.Fatalf("stream writes per request = %.2f, want %.0f (%v)", got, wantWrites, writes)
	}
	if got := float64(totalAcks) / n; got != wantAcks {
		t.Fatalf("acks per request = %.2f, want %.0f (%v)", got, wantAcks, acks)
	}
	tenant := fmt.Sprintf(" WHERE tenant = '%s' AND request_id != 'warm'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+tenant, n, 30*time.Second); got != n {
		t.Fatalf("request rows = %d, want %d", got, n)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+tenant+" AND outcome = 'ok' AND cost_usd > 0 AND latency_ms >= 0", uint64(attempts), 30*time.Second); got != uint64(attempts) {
		t.Fatalf("finished attempt rows = %d, want %d", got, attempts)
	}
	if got := e.count("SELECT count() FROM %s.attempts FINAL" + tenant); got != uint64(attempts) {
		t.Fatalf("attempt rows = %d, want %d (no started row left, no extra row)", got, attempts)
	}
}

// Every judged attempt is shared between the router replicas as it
// happens, on core NATS (llm.observed.attempts, in batches), with its
// vendor, model and outcome; and a request that fails on every vendor and
// is dead-lettered still gets one finished attempt row per call in the
// ledger.
func TestFinishedAttemptsObservedAndStoredOnFailure(t *testing.T) {
	e := start(t, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{
			"openai":    {Behavior: sim.Behavior{Status: sim.Ptr(503)}},
			"anthropic": {Behavior: sim.Behavior{Status: sim.Ptr(503)}},
			"gemini":    {Behavior: sim.Behavior{Status: sim.Ptr(503)}},
		}}
	})
	seen, err := e.sys.NC.SubscribeSync(natsx.SubjectObservedAttempts)
	if err != nil {
		t.Fatal(err)
	}
	defer seen.Unsubscribe()
	got := e.submitAll([]*envelope.Request{e.request("f1", "chat", "refused everywhere")}, 30*time.Second)["f1"][0]
	if got.Status != envelope.StatusError || got.Error.Code != envelope.CodeAllVendorsFailed || len(got.Attempts) == 0 {
		t.Fatalf("want all_vendors_failed after at least one call, got %+v", got)
	}
	want := map[string]int{} // vendor/model -> failed calls
	for _, a := range got.Attempts {
		want[a.Vendor+"/"+a.Model]++
	}
	observed := map[string]int{}
	allSeen := func() bool {
		for k, n := range want {
			if observed[k] < n {
				return false
			}
		}
		return true
	}
	for !allSeen() {
		m, err := seen.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("failed calls observed %v, want %v: %v", observed, want, err)
		}
		var b struct {
			Router   string `json:"router"`
			Attempts []struct {
				Vendor, Model, Outcome string
			} `json:"attempts"`
		}
		if err := json.Unmarshal(m.Data, &b); err != nil || b.Router == "" {
			t.Fatalf("observed %s (%v)", m.Data, err)
		}
		for _, a := range b.Attempts {
			if a.Outcome == envelope.OutcomeError {
				observed[a.Vendor+"/"+a.Model]++
			}
		}
	}
	where := fmt.Sprintf(" WHERE tenant = '%s' AND request_id = 'f1'", e.tenant)
	if n := e.eventually("SELECT count() FROM %s.attempts FINAL"+where+" AND outcome = 'error'", uint64(len(got.Attempts)), 30*time.Second); n != uint64(len(got.Attempts)) {
		t.Fatalf("finished attempt rows of the failed request = %d, want %d", n, len(got.Attempts))
	}
	if n := e.eventually("SELECT count() FROM %s.requests FINAL"+where+" AND status = 'error'", 1, 30*time.Second); n != 1 {
		t.Fatalf("request rows = %d, want 1", n)
	}
}

// telemetryDrained waits until the ledger has stored and acked every
// telemetry message.
func (e *env) telemetryDrained(wait time.Duration) {
	e.t.Helper()
	waitFor(e.t, wait, func() bool {
		return workQueueEmpty(context.Background(), e.sys.JS, natsx.StreamTelemetry)
	})
}

// OpenRouter reports what it charged (usage.cost): the attempt row stores
// that cost (cost_source vendor), the figure the reply and the budget use,
// with the call's reasoning and other token counts.
func TestVendorReportedCostReachesTheLedger(t *testing.T) {
	e := start(t, withRoute(policy.Route{Name: "or", Chain: []policy.Target{{Vendor: "openrouter", Model: "meta-llama/llama-3.3-70b-instruct"}}}))
	got := e.submitAll([]*envelope.Request{e.request("or1", "or", "what does it cost")}, 30*time.Second)["or1"][0]
	if got.Status != envelope.StatusOK || len(got.Attempts) != 1 || got.CostUSD <= 0 {
		t.Fatalf("want one answered call with a cost, got %+v", got)
	}
	where := fmt.Sprintf(" WHERE tenant = '%s' AND request_id = 'or1' AND outcome = 'ok' AND cost_source = 'vendor'", e.tenant)
	if n := e.eventually("SELECT count() FROM %s.attempts FINAL"+where, 1, 30*time.Second); n != 1 {
		t.Fatalf("attempt rows priced by the vendor = %d, want 1", n)
	}
	var cost float64
	if err := e.ch.QueryRow(context.Background(), fmt.Sprintf("SELECT cost_usd FROM %s.attempts FINAL", e.db)+where).Scan(&cost); err != nil {
		t.Fatal(err)
	}
	if math.Abs(cost-got.CostUSD) > 1e-12 {
		t.Fatalf("ledger cost %.12f, reply cost %.12f", cost, got.CostUSD)
	}
}
