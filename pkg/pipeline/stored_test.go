package pipeline

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A redelivered handler must not publish a reply the stream already holds,
// even when a replica that has not applied it yet answers direct gets (a
// follower in a cluster; here a mirror that answers LLM_REPLIES' direct
// gets and never receives the reply). Before: the check used the direct
// get, about half of the checks landed on the mirror, and a subscriber saw
// the reply again each time.
func TestRedeliveredReplyCheckAsksTheStreamLeader(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	testkit.RepliesBehind(t, ctx, js)
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}}
	var seen atomic.Int32
	sub, err := nc.Subscribe(w.Request.ReplySubject(), func(*nats.Msg) { seen.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	outs, err := FinishOuts(w, &envelope.Reply{ID: "k", Status: envelope.StatusOK}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub := Publisher{JS: js, NC: nc}
	if err := pub.Send(ctx, outs); err != nil {
		t.Fatal(err)
	}
	redelivered := withDelivery(ctx, &Delivery{Meta: &jetstream.MsgMetadata{NumDelivered: 2}})
	const redeliveries = 20
	for range redeliveries {
		if err := pub.Send(redelivered, outs); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a second copy would have arrived
	if n := seen.Load(); n != 1 {
		t.Fatalf("a subscriber saw %d replies after %d redeliveries, want 1", n, redeliveries)
	}
}
