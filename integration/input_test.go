package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// publishRaw publishes bytes to llm.requests with the given Nats-Msg-Id.
func (e *env) publishRaw(ctx context.Context, msgID string, data []byte) {
	e.t.Helper()
	if err := e.client.PublishRaw(ctx, msgID, data); err != nil {
		e.t.Fatalf("publish %s: %v", msgID, err)
	}
}

// intakeDrained reports whether the intake has nothing pending or unacked.
func (e *env) intakeDrained(ctx context.Context) bool {
	c, err := e.sys.JS.Consumer(ctx, natsx.StreamRequests, "intake")
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// A request near NATS's 1 MiB message limit gets payload_too_large and a
// dead letter that fits the DLQ (truncated, saying so), instead of no reply
// and redelivery for ever.
func TestRequestNearNATSLimitGetsPayloadTooLarge(t *testing.T) {
	e := start(t)
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 1 MiB less 200 bytes: the request fits in a NATS message, a dead
	// letter of it with its headers does not.
	const size = 1<<20 - 200
	head := fmt.Sprintf(`{"id":"big1","tenant":"%s","route":"chat","messages":[{"role":"user","content":"`, e.tenant)
	tail := `"}]}`
	data := []byte(head + strings.Repeat("a", size-len(head)-len(tail)) + tail)
	e.publishRaw(ctx, e.tenant+".big1", data)
	if err := col.Wait(ctx, 1); err != nil {
		t.Fatalf("no reply to a %d-byte request: %v", size, err)
	}
	r := col.All()["big1"][0]
	if r.Status != envelope.StatusError || r.Error.Code != envelope.CodePayloadTooLarge || !strings.Contains(r.Error.Message, fmt.Sprintf("%d bytes", size)) {
		t.Fatalf("reply %+v", r.Error)
	}
	var entries []dlq.Entry
	waitFor(t, 10*time.Second, func() bool {
		entries, err = dlq.List(ctx, e.sys.JS, dlq.Filter{Stage: natsx.StageIntake, Tenant: e.tenant})
		return err == nil && len(entries) == 1
	})
	if got := entries[0]; got.Reason != envelope.CodePayloadTooLarge || got.Truncated() != size || len(got.Data) >= size || got.RequestID != "big1" {
		t.Fatalf("dead letter: reason %s, truncated %d, %d bytes kept", got.Reason, got.Truncated(), len(got.Data))
	}
	waitFor(t, 10*time.Second, func() bool { return e.intakeDrained(ctx) })
}

// Request ids are unique per tenant: two tenants using the same id within
// the dedupe window both get processed and replied, even when their
// clients set Nats-Msg-Id to the bare id; the same tenant+id twice is
// processed and replied once.
func TestTenantsShareRequestIDs(t *testing.T) {
	e := start(t)
	other := e.tenant + "b"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cols := map[string]interface {
		Wait(context.Context, int) error
		All() map[string][]*envelope.Reply
	}{}
	for _, tenant := range []string{e.tenant, other} {
		col, err := e.client.Collect(tenant)
		if err != nil {
			t.Fatal(err)
		}
		defer col.Close()
		cols[tenant] = col
	}
	body := func(tenant, prompt string) []byte {
		req := e.request("r1", "chat", prompt)
		req.Tenant = tenant
		b, _ := json.Marshal(req)
		return b
	}
	// A client that sets Nats-Msg-Id = id, as the README once said.
	first := time.Now()
	e.publishRaw(ctx, "r1", body(e.tenant, "first tenant"))
	if err := cols[e.tenant].Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The stream itself still drops the same Nats-Msg-Id within its own
	// window (the server's minimum, 100 ms); past it, only tenant+id counts.
	time.Sleep(time.Until(first.Add(natsx.RequestsDedupeWindow + 50*time.Millisecond)))
	e.publishRaw(ctx, "r1", body(other, "second tenant"))
	if err := cols[other].Wait(ctx, 1); err != nil {
		t.Fatalf("the second tenant's r1 was dropped: %v", err)
	}
	for _, tenant := range []string{e.tenant, other} {
		if r := cols[tenant].All()["r1"][0]; r.Status != envelope.StatusOK || r.Tenant != tenant {
			t.Fatalf("%s: reply %+v", tenant, r)
		}
	}
	// The same tenant+id again, under any message id: dropped.
	e.publishRaw(ctx, e.tenant+".r1", body(e.tenant, "first tenant again"))
	e.publishRaw(ctx, "another-msg-id", body(e.tenant, "first tenant again"))
	waitFor(t, 10*time.Second, func() bool { return e.intakeDrained(ctx) })
	// A sentinel through the whole pipeline: once it is answered, a
	// duplicate that had been let through would have been answered too.
	sentinel, _ := json.Marshal(e.request("r2", "chat", "sentinel"))
	e.publishRaw(ctx, e.tenant+".r2", sentinel)
	if err := cols[e.tenant].Wait(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := len(cols[e.tenant].All()["r1"]); n != 1 {
		t.Fatalf("same tenant+id: %d replies, want 1", n)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 3 {
		t.Fatalf("vendor calls = %d, want 3 (r1 of each tenant, r2)", n)
	}
	// Telemetry of the two tenants' r1 does not dedupe either: both
	// attempts reach the ledger.
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL WHERE request_id = 'r1'", 2, 15*time.Second); got != 2 {
		t.Fatalf("attempt rows for r1 = %d, want 2 (one per tenant)", got)
	}
}

// A ledger dead letter is telemetry: `dlq replay` sends it back to
// llm.telemetry.*, where the ledger stores it (today it went to
// llm.requests, was refused by the intake and lost).
func TestLedgerDeadLetterReplayedAsTelemetry(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := "led" + randomSuffix()
	// A request event the ledger refuses: no timestamp.
	bad := fmt.Sprintf(`{"request_id":%q,"tenant":%q,"status":"ok","route":"chat"}`, id, e.tenant)
	m := &nats.Msg{Subject: natsx.SubjectRequest, Data: []byte(bad), Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, id+":request")
	if _, err := e.sys.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	var entries []dlq.Entry
	waitFor(t, 15*time.Second, func() bool {
		var err error
		entries, err = dlq.List(ctx, e.sys.JS, dlq.Filter{Stage: natsx.StageLedger})
		return err == nil && len(entries) == 1
	})
	now := time.Now().UTC().Format(time.RFC3339Nano)
	patch := json.RawMessage(fmt.Sprintf(`{"ts":%q,"finished_at":%q}`, now, now))
	res := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{Patch: patch})
	if !res.Replayed || res.Kind != dlq.KindTelemetry || res.Subject != natsx.SubjectRequest {
		t.Fatalf("replay %+v", res)
	}
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE request_id = '"+id+"'", 1, 15*time.Second); got != 1 {
		t.Fatalf("replayed request event: %d rows, want 1", got)
	}
	// Replaying the same dead letter again changes nothing: it is gone.
	if _, err := dlq.Get(ctx, e.sys.JS, entries[0].Seq); err == nil {
		t.Fatal("dead letter still listed after the replay")
	}
}

// A refused request is not taken for a duplicate: the corrected envelope
// with the same id (and Nats-Msg-Id), published once the stream's own
// 100 ms window has passed, is processed and gets its own reply.
func TestCorrectedRequestReusesRefusedID(t *testing.T) {
	e := start(t)
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := fmt.Sprintf(`{"id":"fix1","tenant":"%s","route":"chat","colour":"red","messages":[{"role":"user","content":"hi"}]}`, e.tenant)
	// The same bad envelope sent again is refused again, live: LLM_REPLIES
	// delivers only what it stores, and a refusal under the first one's
	// message id would be dropped as its duplicate (no answer at all).
	for i := range 2 {
		sent := time.Now()
		e.publishRaw(ctx, e.tenant+".fix1", []byte(bad))
		waitFor(t, 20*time.Second, func() bool { return len(col.All()["fix1"]) == i+1 })
		time.Sleep(time.Until(sent.Add(natsx.RequestsDedupeWindow + 50*time.Millisecond)))
	}
	good, _ := json.Marshal(e.request("fix1", "chat", "hi"))
	e.publishRaw(ctx, e.tenant+".fix1", good)
	waitFor(t, 20*time.Second, func() bool { return len(col.All()["fix1"]) == 3 })
	rs := col.All()["fix1"]
	for _, r := range rs[:2] {
		if r.Error == nil || r.Error.Code != envelope.CodeInvalidRequest {
			t.Fatalf("refusals: %+v, %+v", rs[0].Error, rs[1].Error)
		}
	}
	if rs[2].Status != envelope.StatusOK {
		t.Fatalf("then %+v", rs[2])
	}
}
