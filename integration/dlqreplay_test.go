package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// deadLetters waits for n dead letters of the request id on a stage.
func (e *env) deadLetters(ctx context.Context, stage, id string, n int) []dlq.Entry {
	e.t.Helper()
	var mine []dlq.Entry
	waitFor(e.t, 15*time.Second, func() bool {
		all, err := dlq.List(ctx, e.sys.JS, dlq.Filter{Stage: stage, Tenant: e.tenant})
		mine = mine[:0]
		for _, x := range all {
			if x.RequestID == id {
				mine = append(mine, x)
			}
		}
		return err == nil && len(mine) == n
	})
	return mine
}

// A work envelope the executor, the gate or the router dead-letters is
// answered (internal) by the router. Replaying its dead letter must not answer the
// client a second time: the replay is refused as already answered, in the
// dry run too, and the dead letter stays listed.
func TestWorkDeadLetterReplayDoesNotReplyTwice(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	tests := []struct {
		stage, subject string
		chain          envelope.Target
	}{
		// An envelope for anthropic on openai's queue: wrong_vendor.
		{natsx.StageExecutor, natsx.ExecSubject("openai"), envelope.Target{Vendor: "anthropic", Model: "claude-haiku-4-5"}},
		// A result without an attempt: malformed_work.
		{natsx.StageGate, natsx.SubjectResults, envelope.Target{Vendor: "openai", Model: "gpt-4o-mini"}},
		// A verdict without a result: bad_verdict, the router's own.
		{natsx.StageRouter, natsx.SubjectVerdicts, envelope.Target{Vendor: "openai", Model: "gpt-4o-mini"}},
	}
	for _, tt := range tests {
		t.Run(tt.stage, func(t *testing.T) {
			id := "replay-" + tt.stage
			now := time.Now()
			w := envelope.Work{Key: e.tenant + "." + id, Request: *e.request(id, "chat", "poison"), Route: "chat",
				Chain: []envelope.Target{tt.chain}, ReceivedAt: now, Deadline: now.Add(30 * time.Second)}
			data, _ := json.Marshal(&w)
			if _, err := e.sys.JS.Publish(ctx, tt.subject, data); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 15*time.Second, func() bool { return len(col.All()[id]) == 1 })
			entries := e.deadLetters(ctx, tt.stage, id, 1)
			res := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{})
			e.settled(30 * time.Second)
			if n := len(col.All()[id]); n != 1 {
				t.Fatalf("client got %d replies, want 1 (replay: replayed %v, %q)", n, res.Replayed, res.Skipped)
			}
			dry := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{DryRun: true})
			for _, r := range []dlq.Result{res, dry} {
				if r.Replayed || !strings.Contains(r.Skipped, "already answered") {
					t.Fatalf("replay of an answered request: replayed %v, %q", r.Replayed, r.Skipped)
				}
			}
			if n := e.repliesStored()[envelope.DefaultReplySubject(e.tenant, id)]; n != 1 {
				t.Fatalf("stored replies = %d, want 1", n)
			}
			if _, err := dlq.Get(ctx, e.sys.JS, entries[0].Seq); err != nil {
				t.Fatalf("the refused dead letter must stay listed: %v", err)
			}
		})
	}
}

// withSlowOpenAI answers every openai call after 2 s.
func withSlowOpenAI(c *app.Config) {
	c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 2000}}},
	}}
}

// A dead letter replayed while its request is still in flight (a stage
// dead-lettered it and the router has not answered yet) is not replayed:
// the client gets one reply, the vendor one call.
func TestReplayWhileOriginalInFlight(t *testing.T) {
	e := start(t, withSlowOpenAI)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	const id = "inflight1"
	req := e.request(id, "chat", "slow")
	if err := e.client.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}
	// The dead letter a stage writes for it before the router answers.
	now := time.Now()
	w := envelope.Work{Key: e.tenant + "." + id, Request: *req, Route: "chat",
		Chain: []envelope.Target{{Vendor: "openai", Model: "gpt-4o-mini"}}, ReceivedAt: now, Deadline: now.Add(30 * time.Second)}
	data, _ := json.Marshal(&w)
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, natsx.StageExecutor)
	hdr.Set(natsx.HeaderReason, "max_deliveries")
	hdr.Set(natsx.HeaderOrigSubject, natsx.ExecSubject("openai"))
	hdr.Set(natsx.HeaderFailedAt, now.UTC().Format(time.RFC3339Nano))
	hdr.Set(natsx.HeaderRequestID, id)
	hdr.Set(natsx.HeaderTenant, e.tenant)
	if _, err := e.sys.JS.PublishMsg(ctx, &nats.Msg{Subject: natsx.DLQSubject(natsx.StageExecutor), Data: data, Header: hdr}); err != nil {
		t.Fatal(err)
	}
	entries := e.deadLetters(ctx, natsx.StageExecutor, id, 1)
	res := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{})
	if res.Replayed || !strings.Contains(res.Skipped, "not answered yet") {
		t.Fatalf("replay of a request in flight: replayed %v, %q", res.Replayed, res.Skipped)
	}
	waitFor(t, 20*time.Second, func() bool { return len(col.All()[id]) == 1 })
	for _, o := range []dlq.ReplayOptions{{}, {Reanswer: true}} {
		res = dlq.Replay(ctx, e.sys.JS, &entries[0], o)
		if res.Replayed || !strings.Contains(res.Skipped, "already answered: ok") {
			t.Fatalf("replay (reanswer %v) of a request answered ok: replayed %v, %q", o.Reanswer, res.Replayed, res.Skipped)
		}
	}
	e.settled(30 * time.Second)
	if rs := col.All()[id]; len(rs) != 1 || rs[0].Status != envelope.StatusOK {
		t.Fatalf("client got %d replies (%+v), want one ok", len(rs), rs)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 1 {
		t.Fatalf("vendor calls = %d, want 1", n)
	}
}

// withFragileRoute adds a route whose only target is openai, and fails
// every openai call with 503 (retryable) until the test heals it.
func withFragileRoute(c *app.Config) {
	c.Policy.Routes = append(c.Policy.Routes, policy.Route{Name: "fragile", Chain: []policy.Target{{Vendor: "openai", Model: "gpt-4o-mini"}}})
	if err := c.Policy.Validate(); err != nil {
		panic(err)
	}
	status := 503
	c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Status: &status}}}}
}

// A request answered with a retryable error (all_vendors_failed) is
// re-answered only when the operator asks (-reanswer): the client then gets
// exactly one more, final reply, marked as a replay's by its message id, and
// the ledger keeps one request row. Two dead letters of the request do not
// re-answer it twice.
func TestReanswerRetryableFailureOnce(t *testing.T) {
	e := start(t, withFragileRoute)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	const id = "fragile1"
	if err := e.client.Publish(ctx, e.request(id, "fragile", "hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return len(col.All()[id]) == 1 })
	if r := col.All()[id][0]; r.Error == nil || r.Error.Code != envelope.CodeAllVendorsFailed || !r.Error.Retryable {
		t.Fatalf("first reply: %+v", r)
	}
	entries := e.deadLetters(ctx, natsx.StageRouter, id, 1)
	// A second dead letter of the same request (as a stage's and the
	// router's both are).
	twin := nats.Header{}
	for k, v := range entries[0].Header {
		twin[k] = v
	}
	twin.Set(natsx.HeaderMsgID, "twin")
	if _, err := e.sys.JS.PublishMsg(ctx, &nats.Msg{Subject: entries[0].Subject, Data: entries[0].Data, Header: twin}); err != nil {
		t.Fatal(err)
	}
	entries = e.deadLetters(ctx, natsx.StageRouter, id, 2)

	tests := []struct {
		name     string
		entry    int
		o        dlq.ReplayOptions
		replayed bool
		skipped  string
	}{
		{"without -reanswer", 0, dlq.ReplayOptions{}, false, "already answered: all_vendors_failed (retryable)"},
		{"dry run", 0, dlq.ReplayOptions{Reanswer: true, DryRun: true}, false, ""},
		{"reanswer", 0, dlq.ReplayOptions{Reanswer: true}, true, ""},
		{"the twin", 1, dlq.ReplayOptions{Reanswer: true}, false, "already replayed: dead letter"},
	}
	// Healed, but slow: the re-answer is still in flight when the twin is
	// replayed, so the twin meets the replay's claim. (Answered quickly,
	// the twin met the ok reply first and was refused as "already
	// answered: ok", which the last replay below checks.)
	healthy, slow := 0, &sim.Latency{BaseMS: 1500}
	for _, tt := range tests {
		if tt.replayed {
			if err := e.sys.Sim.SetScenario(sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Status: &healthy, Latency: slow}}}}); err != nil {
				t.Fatal(err)
			}
		}
		res := dlq.Replay(ctx, e.sys.JS, &entries[tt.entry], tt.o)
		if res.Replayed != tt.replayed || !strings.HasPrefix(res.Skipped, tt.skipped) || res.Error != "" {
			t.Fatalf("%s: replayed %v, skipped %q, error %q", tt.name, res.Replayed, res.Skipped, res.Error)
		}
		if tt.skipped == "" && !res.Reanswer {
			t.Fatalf("%s: not reported as a second reply", tt.name)
		}
	}
	waitFor(t, 30*time.Second, func() bool { return len(col.All()[id]) == 2 })
	e.settled(30 * time.Second)
	if rs := col.All()[id]; len(rs) != 2 || rs[1].Status != envelope.StatusOK {
		t.Fatalf("want the error, then one ok reply; got %d replies", len(rs))
	}
	subject := envelope.DefaultReplySubject(e.tenant, id)
	if n := e.repliesStored()[subject]; n != 2 {
		t.Fatalf("stored replies = %d, want 2", n)
	}
	s, err := e.sys.JS.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil || !strings.Contains(last.Header.Get(natsx.HeaderMsgID), ":replay:") {
		t.Fatalf("the second reply is not marked as a replay's: %v %v", err, last.Header)
	}
	// Answered ok now: nothing re-answers it again.
	if res := dlq.Replay(ctx, e.sys.JS, &entries[1], dlq.ReplayOptions{Reanswer: true}); res.Replayed || res.Skipped != "already answered: ok" {
		t.Fatalf("twin after the ok reply: replayed %v, skipped %q", res.Replayed, res.Skipped)
	}
	where := " WHERE request_id = '" + id + "' AND tenant = '" + e.tenant + "'"
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+where+" AND status = 'ok'", 1, 30*time.Second); got != 1 {
		t.Fatalf("ok request rows = %d, want 1", got)
	}
	if got := e.count("SELECT count() FROM %s.requests FINAL" + where); got != 1 {
		t.Fatalf("request rows = %d, want 1", got)
	}
}

// A ledger dead letter replayed for an attempt the ledger stored already
// (a redelivery got through meanwhile) charges it once: the attempts table
// collapses rows with the same request and attempt id, and every cost
// query reads it FINAL.
func TestLedgerReplayChargesOnce(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := "charge" + randomSuffix()
	ev := envelope.AttemptEvent{RequestID: id, AttemptID: id + "#1", Attempt: 1, TS: time.Now().UTC(), Tenant: e.tenant, Route: "chat",
		Vendor: "openai", Model: "gpt-4o-mini", Outcome: envelope.OutcomeOK, InputTokens: 1000, OutputTokens: 500}
	data, _ := json.Marshal(&ev)
	m := &nats.Msg{Subject: natsx.SubjectAttempt, Data: data, Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, ev.AttemptID)
	if _, err := e.sys.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	where := " WHERE request_id = '" + id + "'"
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+where, 1, 30*time.Second); got != 1 {
		t.Fatalf("attempt rows = %d, want 1", got)
	}
	const nanoUSD = "SELECT toUInt64(round(sum(cost_usd) * 1e9)) FROM %s.attempts FINAL"
	charged := e.count(nanoUSD + where)
	if charged == 0 {
		t.Fatal("the attempt was not priced")
	}
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, natsx.StageLedger)
	hdr.Set(natsx.HeaderReason, "invalid_event")
	hdr.Set(natsx.HeaderOrigSubject, natsx.SubjectAttempt)
	hdr.Set(natsx.HeaderRequestID, id)
	hdr.Set(natsx.HeaderTenant, e.tenant)
	hdr.Set(natsx.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := e.sys.JS.PublishMsg(ctx, &nats.Msg{Subject: natsx.DLQSubject(natsx.StageLedger), Data: data, Header: hdr}); err != nil {
		t.Fatal(err)
	}
	entries := e.deadLetters(ctx, natsx.StageLedger, id, 1)
	if res := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{}); !res.Replayed || res.Kind != dlq.KindTelemetry {
		t.Fatalf("replay: replayed %v, kind %s, skipped %q, error %q", res.Replayed, res.Kind, res.Skipped, res.Error)
	}
	// The ledger acks only what ClickHouse accepted: an empty work queue
	// means the replayed copy was stored.
	waitFor(t, 30*time.Second, func() bool { return workQueueEmpty(ctx, e.sys.JS, natsx.StreamTelemetry) })
	t.Logf("attempt rows stored: %d (before the table collapses them)", e.count("SELECT count() FROM %s.attempts"+where))
	if got := e.count("SELECT count() FROM %s.attempts FINAL" + where); got != 1 {
		t.Fatalf("attempt rows after the replay = %d, want 1", got)
	}
	if got := e.count(nanoUSD + where); got != charged {
		t.Fatalf("charged %d nano-USD after the replay, %d before", got, charged)
	}
}
