package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A publish whose ack does not come before the handler's deadline may
// still be stored a moment later (a stream leader slow to commit after a
// node came back). It must count as JetStream unavailable, so the retry
// waits the unavailable backoff before the redelivered handler asks
// whether the reply is stored: before, it was an ordinary transient error
// retried after about 80 ms, the check ran before the first copy was
// committed, and a subscriber saw the reply twice
// (TestClusterStreamLeaderKilled: "c087: 2 replies, want exactly 1").
func TestPublishAckPastTheDeadlineIsUnavailable(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	// A subject no stream stores, with a core subscriber that never
	// answers: the publish's ack never comes.
	const subject = "acks.never"
	sub, err := nc.Subscribe(subject, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	pub := Publisher{JS: js, NC: nc}
	one := Outbound{Subject: subject, MsgID: "a", Data: []byte(`{}`)}
	two := Outbound{Subject: subject, MsgID: "b", Data: []byte(`{}`)}
	tests := []struct {
		name    string
		publish func(ctx context.Context) error
	}{
		{"synchronous", func(ctx context.Context) error { return pub.PublishRaw(ctx, subject, "a", []byte(`{}`), nil) }},
		{"pipelined", func(ctx context.Context) error { return pub.Send(ctx, []Outbound{one, two}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := tt.publish(ctx)
			if !natsx.Unavailable(err) {
				t.Fatalf("publish = %v, want JetStream unavailable", err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("publish = %v, want it to keep context.DeadlineExceeded", err)
			}
			var tr *TransientError
			if !errors.As(err, &tr) {
				t.Fatalf("publish = %v, want a transient error", err)
			}
		})
	}
	// A publish stopped by cancellation (a shutdown) is not a missing ack.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pub.PublishRaw(ctx, subject, "c", []byte(`{}`), nil); natsx.Unavailable(err) {
		t.Fatalf("cancelled publish = %v, want it not counted as unavailable", err)
	}
}
