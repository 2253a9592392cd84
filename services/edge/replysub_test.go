package edge

import (
	"context"
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// submit allocates little per request. Before, the reply subscription
// (SubscribeSync) allocated a 512 KiB channel on every call. A responder
// stands in for the pipeline: it answers each published envelope on its
// reply subject.
func TestSubmitAllocatesLittle(t *testing.T) {
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	respond(t, nc, "ok")
	e := &Edge{d: Deps{Log: zerolog.Nop(), NC: nc, JS: js, Now: time.Now}, replies: newReplyMux(nc)}
	submit := func() {
		req := &envelope.Request{ID: newID(), Tenant: "acme", Route: "chat", TimeoutMS: 5000,
			Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
		rep, aerr := e.submit(context.Background(), req)
		if aerr != nil || rep.Content != "ok" {
			t.Fatalf("submit: %+v %+v", rep, aerr)
		}
	}
	submit() // warm up
	const n = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		submit()
	}
	runtime.ReadMemStats(&after)
	// Everything in the process counts (the embedded server too): a bound
	// far below one 512 KiB channel per request.
	per := (after.TotalAlloc - before.TotalAlloc) / n
	if per > 128<<10 {
		t.Fatalf("%d bytes allocated per request, want under 128 KiB", per)
	}
	t.Logf("%d bytes allocated per request", per)
}

// A reply LLM_REPLIES stored but never delivered live (its leader died
// between the two, docs/subjects.md) still reaches the HTTP client: the
// waiting request looks for it in the stream. Before, it waited for the
// live copy until its deadline and answered 504. The stream here stores
// without republishing, which stands for that leader.
func TestSubmitFindsAReplyStoredButNotDelivered(t *testing.T) {
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.RePublish = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	respond(t, nc, "stored")
	e := &Edge{d: Deps{Log: zerolog.Nop(), NC: nc, JS: js, Now: time.Now}, replies: newReplyMux(nc), lookEvery: 100 * time.Millisecond}
	req := &envelope.Request{ID: newID(), Tenant: "acme", Route: "chat", TimeoutMS: 10000,
		Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
	start := time.Now()
	rep, aerr := e.submit(ctx, req)
	if aerr != nil || rep.Content != "stored" {
		t.Fatalf("submit: %+v %+v", rep, aerr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s: the stored reply was found only at the deadline", took)
	}
}

// respond stands in for the pipeline: it answers each request published on
// llm.requests with content, through LLM_REPLIES as the router does.
func respond(t *testing.T, nc *nats.Conn, content string) {
	t.Helper()
	responder, err := nc.Subscribe(natsx.SubjectRequests, func(m *nats.Msg) {
		var req envelope.Request
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		data, _ := json.Marshal(envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusOK, Content: content})
		store, _ := natsx.ReplyPublishSubject(req.ReplySubject())
		_ = nc.Publish(store, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = responder.Unsubscribe() })
}
