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
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// 300 requests over three routes: exactly 300 replies, 300 request rows,
// and attempt rows that match the attempts the replies report.
func TestThreeHundredRequestsOverThreeRoutes(t *testing.T) {
	e := start(t)
	routes := []string{"chat", "summarize", "extract"}
	var reqs []*envelope.Request
	for i := range 300 {
		route := routes[i%3]
		r := e.request(fmt.Sprintf("r%03d", i), route, fmt.Sprintf("request %d for %s", i, route))
		if route == "extract" {
			r.ResponseFormat = &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{Name: "x",
				Schema: json.RawMessage(`{"type":"object","required":["name","total"],"properties":{"name":{"type":"string"},"total":{"type":"number"}}}`)}}
		}
		reqs = append(reqs, r)
	}
	replies := e.submitAll(reqs, 90*time.Second)
	if len(replies) != 300 {
		t.Fatalf("replies for %d ids, want 300", len(replies))
	}
	attempts := 0
	for id, rs := range replies {
		if len(rs) != 1 {
			t.Fatalf("%s: %d replies, want exactly 1", id, len(rs))
		}
		r := rs[0]
		if r.Status != envelope.StatusOK {
			t.Fatalf("%s: status %s %+v", id, r.Status, r.Error)
		}
		if r.Usage.InputTokens == 0 || r.CostUSD <= 0 || r.Vendor == "" || len(r.Attempts) == 0 {
			t.Fatalf("%s: incomplete reply %+v", id, r)
		}
		attempts += len(r.Attempts)
	}
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE "+tenant, 300, 60*time.Second); got != 300 {
		t.Fatalf("requests rows = %d, want 300", got)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL WHERE "+tenant, uint64(attempts), 60*time.Second); got != uint64(attempts) {
		t.Fatalf("attempt rows = %d, want %d (attempts in replies)", got, attempts)
	}
	if got := e.count("SELECT uniqExact(route) FROM %s.requests FINAL WHERE " + tenant); got != 3 {
		t.Fatalf("routes in requests table = %d, want 3", got)
	}
}

// A vendor answering 503 for the whole run: every request is still
// answered through its fallback, marked fallback, and the fallback report
// counts the reasons. Once the shared breaker opens, requests skip the dead
// vendor altogether (reason circuit_open) instead of failing on it first.
func TestVendorOutageFallsBack(t *testing.T) {
	e := start(t, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Status: sim.Ptr(503)}}}}
	})
	var reqs []*envelope.Request
	for i := range 40 {
		reqs = append(reqs, e.request(fmt.Sprintf("o%02d", i), "chat", fmt.Sprintf("hello %d", i)))
	}
	replies := e.submitAll(reqs, 60*time.Second)
	reasons := map[string]int{}
	for id, rs := range replies {
		r := rs[0]
		if r.Status != envelope.StatusOK || !r.Fallback || r.Vendor != "anthropic" {
			t.Fatalf("%s: want ok via anthropic with fallback, got %s vendor=%s fallback=%v %+v", id, r.Status, r.Vendor, r.Fallback, r.Error)
		}
		switch {
		case len(r.Attempts) == 2 && r.Attempts[0].HTTPStatus == 503:
			// The simulator's 503 body says "overloaded"; a bare 503 is server_error.
			reasons[r.Attempts[0].ErrorClass]++
		case len(r.Attempts) == 1, len(r.Attempts) == 2 && r.Attempts[0].ErrorClass == "circuit_open":
			// skipped by the router, or refused by the executor's breaker check
			reasons["circuit_open"]++
		default:
			t.Fatalf("%s: attempts %+v", id, r.Attempts)
		}
	}
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE fallback = 1 AND "+tenant, 40, 60*time.Second); got != 40 {
		t.Fatalf("fallback rows = %d, want 40", got)
	}
	out := e.report("fallbacks")
	for reason, n := range reasons {
		if got := e.count(fmt.Sprintf("SELECT count() FROM %%s.requests FINAL WHERE fallback_reason = '%s' AND %s", reason, tenant)); got != uint64(n) {
			t.Fatalf("reason %s: %d rows, want %d", reason, got, n)
		}
		if !strings.Contains(out, fmt.Sprintf("%s=%d", reason, n)) {
			t.Fatalf("fallback report lacks %s=%d:\n%s", reason, n, out)
		}
	}
}

// A vendor 400 is terminal: one attempt, an invalid_request reply, and the
// simulator proves no fallback target was called.
func TestVendor400IsTerminal(t *testing.T) {
	e := start(t)
	r := e.request("bad400", "chat", "please fail [[sim:status=400]]")
	replies := e.submitAll([]*envelope.Request{r}, 30*time.Second)
	got := replies["bad400"][0]
	if got.Status != envelope.StatusError || got.Error == nil || got.Error.Code != envelope.CodeInvalidRequest {
		t.Fatalf("want invalid_request, got %+v", got)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].HTTPStatus != 400 {
		t.Fatalf("want one attempt with 400, got %+v", got.Attempts)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 1 {
		t.Fatalf("openai calls = %d, want 1", n)
	}
	for _, v := range []struct{ vendor, model string }{{"anthropic", "claude-haiku-4-5"}, {"gemini", "gemini-2.5-flash"}} {
		if n := e.simCalls(v.vendor, v.model); n != 0 {
			t.Fatalf("fallback %s called %d times after a terminal 400", v.vendor, n)
		}
	}
}

// The same id published twice: one reply, one requests row, one vendor call.
func TestDuplicateIDProcessedOnce(t *testing.T) {
	e := start(t)
	r := e.request("dup1", "chat", "only once")
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		if err := e.client.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := col.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	tenant := fmt.Sprintf("tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE "+tenant, 1, 30*time.Second); got != 1 {
		t.Fatalf("requests rows = %d, want 1", got)
	}
	e.settled(30 * time.Second)
	if n := len(col.All()["dup1"]); n != 1 {
		t.Fatalf("replies = %d, want 1", n)
	}
	if n := e.repliesStored()[envelope.DefaultReplySubject(e.tenant, "dup1")]; n != 1 {
		t.Fatalf("stored replies = %d, want 1", n)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 1 {
		t.Fatalf("vendor calls = %d, want 1", n)
	}
}

// An invalid envelope gets an error reply naming the field and a dead
// letter; replaying it with a correcting patch and -reanswer succeeds.
func TestInvalidEnvelopeDeadLetteredAndReplayed(t *testing.T) {
	e := start(t)
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := fmt.Sprintf(`{"id":"inv1","tenant":"%s","route":"chat","colour":"red","messages":[{"role":"user","content":"hi"}]}`, e.tenant)
	if err := e.client.PublishRaw(ctx, "inv1", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	if err := col.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	first := col.All()["inv1"][0]
	if first.Status != envelope.StatusError || first.Error.Code != envelope.CodeInvalidRequest || !strings.Contains(first.Error.Message, "colour") {
		t.Fatalf("want invalid_request naming the field, got %+v", first.Error)
	}
	entries, err := dlq.List(ctx, e.sys.JS, dlq.Filter{Stage: "intake", Tenant: e.tenant})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Reason != envelope.CodeInvalidRequest || entries[0].RequestID != "inv1" {
		t.Fatalf("dead letters = %+v", entries)
	}
	// The client was told its request is invalid: only a corrected
	// request, with -reanswer, gets a second (final) reply.
	for _, o := range []dlq.ReplayOptions{{}, {Reanswer: true}, {Patch: json.RawMessage(`{"colour":null}`)}} {
		if res := dlq.Replay(ctx, e.sys.JS, &entries[0], o); res.Replayed || !strings.Contains(res.Skipped, "already answered: invalid_request (final)") {
			t.Fatalf("replay %+v of a refused request: replayed %v, skipped %q", o, res.Replayed, res.Skipped)
		}
	}
	res := dlq.Replay(ctx, e.sys.JS, &entries[0], dlq.ReplayOptions{Patch: json.RawMessage(`{"colour":null}`), Reanswer: true})
	if !res.Replayed || res.Error != "" || !res.Reanswer {
		t.Fatalf("replay: %+v", res)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(col.All()["inv1"]) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	rs := col.All()["inv1"]
	if len(rs) != 2 || rs[1].Status != envelope.StatusOK {
		t.Fatalf("replayed request: replies %+v", rs)
	}
	left, err := dlq.List(ctx, e.sys.JS, dlq.Filter{Stage: "intake", Tenant: e.tenant})
	if err != nil || len(left) != 0 {
		t.Fatalf("dead letter still listed after replay: %v %+v", err, left)
	}
}

// The client's W3C trace context travels through every stage and the trace
// id is stored with the request and its attempts.
func TestTraceContextReachesTheLedger(t *testing.T) {
	e := start(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, _ := json.Marshal(e.request("tr1", "chat", "traced"))
	m := &nats.Msg{Subject: "llm.requests", Data: data, Header: nats.Header{}}
	m.Header.Set("Nats-Msg-Id", "tr1")
	m.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := e.sys.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := col.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	where := fmt.Sprintf(" WHERE trace_id = '%s' AND tenant = '%s'", traceID, e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL"+where, 1, 30*time.Second); got != 1 {
		t.Fatalf("requests rows with the trace id = %d", got)
	}
	if got := e.eventually("SELECT count() FROM %s.attempts FINAL"+where, 1, 30*time.Second); got != 1 {
		t.Fatalf("attempt rows with the trace id = %d", got)
	}
}
