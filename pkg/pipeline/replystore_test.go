package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A client sees a reply only once LLM_REPLIES holds it, and sees it once.
// Before, the stream captured llm.replies.> as published: a subscriber got
// the reply the moment it was published, stored or not (a stream leader cut
// off stored it seconds later, and an executor asking meanwhile called the
// vendor again for a request already answered), and a retried publish the
// stream dropped as a duplicate reached it a second time.
func TestRepliesAreDeliveredOnlyOnceStored(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live, err := nc.SubscribeSync("llm.replies.t.>")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Unsubscribe()
	pub := Publisher{JS: js, NC: nc}
	finish := func(id string, size int) []Outbound {
		w := &envelope.Work{Key: "t." + id, Request: envelope.Request{ID: id, Tenant: "t"}}
		outs, err := FinishOuts(w, &envelope.Reply{ID: id, Status: envelope.StatusOK, Content: strings.Repeat("x", size)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return outs
	}

	// Stored: delivered once, by the stream, however often published.
	outs := finish("r1", 10)
	for range 3 {
		if err := pub.Send(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	m, err := live.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "llm.replies.t.r1" || m.Header.Get("Nats-Stream") != natsx.StreamReplies || m.Header.Get(natsx.HeaderMsgID) != "t.r1:reply" {
		t.Fatalf("reply on %s with headers %v, want llm.replies.t.r1 from %s", m.Subject, m.Header, natsx.StreamReplies)
	}
	if m, err := live.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a second copy reached the client: %s %v", m.Subject, m.Header)
	}

	// Refused by the stream (here: too large for it): never delivered.
	s, err := js.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 2048
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := pub.Send(ctx, finish("r2", 4096)); err == nil {
		t.Fatal("a reply the stream refused was published without an error")
	}
	if m, err := live.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatalf("a reply the stream did not store reached the client: %s", m.Subject)
	}
}

// In a rolling upgrade LLM_REPLIES is provisioned anew after the services:
// until then it stores llm.replies.> as published, and a reply goes there
// instead of being lost. A stream that answers nobody for another reason
// (gone, or between leaders) gets nothing on the clients' subject.
func TestReplyToAStreamOfTheOldConfiguration(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live, err := nc.SubscribeSync("llm.replies.t.>")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Unsubscribe()
	pub := Publisher{JS: js, NC: nc}
	store, _ := natsx.ReplyPublishSubject("llm.replies.t.r1")

	// No LLM_REPLIES at all: an error, and nothing published where clients listen.
	nctx, ncancel := context.WithTimeout(ctx, 2*time.Second)
	err = pub.PublishRaw(nctx, store, "t.r1:reply", []byte(`{}`), nil)
	ncancel()
	if err == nil {
		t.Fatal("a reply with no stream to store it was published without an error")
	}
	if m, err := live.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a reply no stream stored reached the client: %s", m.Subject)
	}

	old := jetstream.StreamConfig{Name: natsx.StreamReplies, Subjects: []string{natsx.SubjectReplies}, Storage: jetstream.FileStorage, AllowDirect: true}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishRaw(ctx, store, "t.r1:reply", []byte(`{}`), nats.Header{}); err != nil {
		t.Fatal(err)
	}
	id, found, err := LastStoredMsgID(ctx, js, natsx.StreamReplies, "llm.replies.t.r1")
	if err != nil || !found || id != "t.r1:reply" {
		t.Fatalf("stored %q found=%v (%v), want t.r1:reply on llm.replies.t.r1", id, found, err)
	}
	if _, err := live.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("the client did not get the reply: %v", err)
	}

	// Provisioned anew: the same stream, its replies kept.
	if err := natsx.EnsureTopology(ctx, js, natsx.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	if _, found, err := LastStoredMsgID(ctx, js, natsx.StreamReplies, "llm.replies.t.r1"); err != nil || !found {
		t.Fatalf("the reply stored before the upgrade is gone: found=%v (%v)", found, err)
	}
	if err := pub.PublishRaw(ctx, "llm.store.replies.t.r2", "t.r2:reply", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := live.NextMsg(2 * time.Second); err != nil || m.Header.Get("Nats-Stream") != natsx.StreamReplies {
		t.Fatalf("after the upgrade: %v %v", m, err)
	}
}
