package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// LastStoredMsgID reads the stream's leader: a message the stream holds is
// found even where a replica behind (a mirror answering LLM_REPLIES' direct
// gets that never receives it) would say it is not there; a missing
// message or stream is "not found", and JetStream that does not answer (no
// responder under the API prefix) is an error, not "not found".
func TestLastStoredMsgID(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(subject, id string) {
		stored, _ := natsx.ReplyPublishSubject(subject)
		m := &nats.Msg{Subject: stored, Data: []byte(`{}`), Header: nats.Header{}}
		if id != "" {
			m.Header.Set(natsx.HeaderMsgID, id)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testkit.RepliesBehind(t, ctx, js)
	publish("llm.replies.t.a", "a:1")
	publish("llm.replies.t.a", "a:2")
	publish("llm.replies.t.noid", "")
	elsewhere, err := jetstream.NewWithDomain(nc, "nowhere")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, stream, subject string
		js                    jetstream.JetStream
		wantID                string
		wantFound, wantErr    bool
	}{
		{"last of two", natsx.StreamReplies, "llm.replies.t.a", js, "a:2", true, false},
		{"no message id", natsx.StreamReplies, "llm.replies.t.noid", js, "", true, false},
		{"nothing on the subject", natsx.StreamReplies, "llm.replies.t.none", js, "", false, false},
		{"no such stream", "NO_SUCH_STREAM", "llm.replies.t.a", js, "", false, false},
		{"JetStream not answering", natsx.StreamReplies, "llm.replies.t.a", elsewhere, "", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Asked many times: a direct get would land on the mirror about
			// half of the time and miss "a:2".
			for range 10 {
				id, found, err := LastStoredMsgID(ctx, tt.js, tt.stream, tt.subject)
				if id != tt.wantID || found != tt.wantFound || (err != nil) != tt.wantErr {
					t.Fatalf("got (%q, %v, %v), want (%q, %v, error %v)", id, found, err, tt.wantID, tt.wantFound, tt.wantErr)
				}
				if err != nil && !natsx.Unavailable(err) {
					t.Fatalf("error %v: JetStream should count as unavailable", err)
				}
			}
		})
	}
}
