package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A redelivered handler does not publish its reply again when the client
// already has it, or has the later, final reply of a replay (`dlq replay
// -reanswer`): republishing the first answer would reach the client after
// the replay's and become the stored one again.
func TestRedeliveredReplyYieldsToAReplaysAnswer(t *testing.T) {
	_, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := Publisher{JS: js}
	publish := func(subject, msgID string) {
		stored, _ := natsx.ReplyPublishSubject(subject)
		if err := p.PublishRaw(ctx, stored, msgID, []byte(`{}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	publish("llm.replies.acme.r1", "acme.r1:reply")
	publish("llm.replies.acme.r1", "acme.r1:replay:7:reply")
	publish("llm.replies.acme.r2", "acme.r2:reply")
	tests := []struct {
		name, subject, msgID string
		stored               bool
	}{
		{"the first answer, re-answered since", "llm.replies.acme.r1", "acme.r1:reply", true},
		{"the replay's own answer", "llm.replies.acme.r1", "acme.r1:replay:7:reply", true},
		{"a replay not answered yet", "llm.replies.acme.r2", "acme.r2:replay:9:reply", false},
		{"the only answer", "llm.replies.acme.r2", "acme.r2:reply", true},
		{"nothing stored", "llm.replies.acme.r3", "acme.r3:reply", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.stored(ctx, Outbound{Subject: tt.subject, MsgID: tt.msgID})
			if err != nil || got != tt.stored {
				t.Fatalf("stored = %v (%v), want %v", got, err, tt.stored)
			}
		})
	}
}
