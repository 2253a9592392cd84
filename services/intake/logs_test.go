package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// TestLogsCarryRequestIdentity: every line the intake (and the pipeline
// under it) writes about a request, retries and the dead letter included,
// carries request_id, tenant and trace_id. The hand-off to the router
// fails (its stream refuses a message that large), so the request is
// retried and dead-lettered.
func TestLogsCarryRequestIdentity(t *testing.T) {
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, natsx.StreamPipeline)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.MaxMsgSize = 64
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load("../../deployments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, err := envelope.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	log := zerolog.New(&buf).Level(zerolog.DebugLevel)
	cfg := Config{Consumer: "intake", ConsumerSettings: pipeline.ConsumerSettings{Concurrency: 1, MaxDeliver: 2, AckWait: 5 * time.Second, MaxAckPending: 8}, DefaultTimeout: 30 * time.Second, DedupeWindow: time.Minute}
	in, err := New(cfg, Deps{Log: log, NC: nc, JS: js, Policy: pol, Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = in.Run(runCtx) }()

	// No traceparent: the intake makes one, the same on every line.
	m := &nats.Msg{Subject: natsx.SubjectRequests, Header: nats.Header{},
		Data: []byte(`{"id":"r1","tenant":"acme","route":"chat","messages":[{"role":"user","content":"hi"}]}`)}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for {
		entries, err := dlq.List(ctx, js, dlq.Filter{Stage: natsx.StageIntake})
		if err == nil && len(entries) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no dead letter")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	var about []map[string]any
	trace := ""
	for _, l := range buf.lines() {
		if l["message"] == "intake consumer" || strings.Contains(l["message"].(string), "consum") && l["request_id"] == nil {
			continue
		}
		about = append(about, l)
		if l["request_id"] != "r1" || l["tenant"] != "acme" || l["trace_id"] == nil || l["trace_id"] == "" {
			t.Errorf("line without the request's identity: %v", l)
			continue
		}
		if trace == "" {
			trace = l["trace_id"].(string)
		} else if l["trace_id"] != trace {
			t.Errorf("trace_id changed from %s to %v: %v", trace, l["trace_id"], l)
		}
	}
	msgs := map[string]bool{}
	for _, l := range about {
		msgs[l["message"].(string)] = true
	}
	for _, want := range []string{"transient failure, retrying", "request dead-lettered", "message dead-lettered"} {
		if !msgs[want] {
			t.Errorf("no %q line; lines: %v", want, about)
		}
	}
}
