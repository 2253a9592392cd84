package edge

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// Concurrent requests of two tenants share one reply subscription per
// edge process, each gets its own reply, and the reply subject stays in
// the tenant's reply space (valid reply_to, stored in LLM_REPLIES).
func TestRepliesShareOneSubscription(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	pipe, _ := testkit.Connect(t, url)
	var subjects sync.Map
	if _, err := pipe.Subscribe(natsx.SubjectRequests, func(m *nats.Msg) {
		var req envelope.Request
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		if err := envelope.ValidReplyTo(req.Tenant, req.ReplyTo); err != nil {
			t.Error(err)
		}
		subjects.Store(req.ID, req.ReplySubject())
		data, _ := json.Marshal(envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusOK, Content: req.ID})
		store, _ := natsx.ReplyPublishSubject(req.ReplySubject())
		_ = pipe.Publish(store, data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := pipe.Flush(); err != nil {
		t.Fatal(err)
	}
	e := &Edge{d: Deps{Log: zerolog.Nop(), NC: nc, JS: js, Now: time.Now}, replies: newReplyMux(nc)}
	before := nc.NumSubscriptions()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := []string{"acme", "beta"}[i%2]
			req := &envelope.Request{ID: newID(), Tenant: tenant, Route: "chat", TimeoutMS: 5000,
				Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
			rep, aerr := e.submit(context.Background(), req)
			if aerr != nil || rep.Content != req.ID {
				t.Errorf("submit %s: %+v %+v", req.ID, rep, aerr)
			}
		}()
	}
	wg.Wait()
	if got := nc.NumSubscriptions() - before; got != 1 {
		t.Fatalf("%d subscriptions for 40 requests, want 1 shared", got)
	}
	subjects.Range(func(id, subject any) bool {
		if !strings.HasPrefix(subject.(string), "llm.replies.") || !strings.HasSuffix(subject.(string), "."+id.(string)) {
			t.Errorf("reply subject %s", subject)
		}
		return true
	})
	s, err := js.Stream(context.Background(), natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 40 {
		t.Fatalf("LLM_REPLIES holds %+v (%v), want the 40 replies", info.State, err)
	}
}

// A request the pipeline cannot take (no LLM_REQUESTS stream here) is a
// 503 with a retry hint and a message that says what failed, not a hang.
func TestPublishRefusedIsAClearError(t *testing.T) {
	nc, js := testkit.JetStream(t) // no topology: nothing stores llm.requests
	e := &Edge{d: Deps{Log: zerolog.Nop(), NC: nc, JS: js, Now: time.Now}, replies: newReplyMux(nc)}
	req := &envelope.Request{ID: newID(), Tenant: "acme", Route: "chat", TimeoutMS: 5000,
		Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
	start := time.Now()
	_, aerr := e.submit(context.Background(), req)
	if aerr == nil || aerr.Status != 503 || aerr.Code != envelope.CodeInternal || aerr.RetryAfter != 1 ||
		!strings.HasPrefix(aerr.Message, "the pipeline did not accept the request: publish llm.requests: ") {
		t.Fatalf("got %+v", aerr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the refusal took %v", took)
	}
}
