package dlq_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// deadLetter stores a dead letter as a stage writes it.
func deadLetter(t *testing.T, js jetstream.JetStream, stage, origSubject string, data []byte, extra nats.Header) uint64 {
	t.Helper()
	m := &nats.Msg{Subject: natsx.DLQSubject(stage), Data: data, Header: nats.Header{}}
	m.Header.Set(natsx.HeaderStage, stage)
	m.Header.Set(natsx.HeaderReason, "test")
	m.Header.Set(natsx.HeaderOrigSubject, origSubject)
	for k, v := range extra {
		m.Header[k] = v
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// lastOn returns the last message stored on subject.
func lastOn(t *testing.T, js jetstream.JetStream, stream, subject string) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatalf("nothing on %s: %v", subject, err)
	}
	return m
}

// TestReplayGoesBackToTheStage: each stage's dead letter is replayed to
// that stage's input: telemetry to llm.telemetry.*, a work envelope to its
// original subject under a replay key, a request to llm.requests under a
// replay dedupe key. A truncated dead letter is refused.
func TestReplayGoesBackToTheStage(t *testing.T) {
	_, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	event := []byte(`{"request_id":"r1","tenant":"acme"}`)
	work, _ := json.Marshal(&envelope.Work{Key: "acme.r1", Request: envelope.Request{ID: "r1", Tenant: "acme"}, Route: "chat", Step: 1,
		Chain: []envelope.Target{{Vendor: "openai", Model: "a"}, {Vendor: "anthropic", Model: "b"}}})
	request := []byte(`{"id":"r1","tenant":"acme","colour":"red"}`)
	tests := []struct {
		name, stage, orig string
		data              []byte
		hdr               nats.Header
		stream, subject   string
		kind              string
		check             func(t *testing.T, m *jetstream.RawStreamMsg, seq uint64)
	}{
		{"ledger dead letter is telemetry", natsx.StageLedger, natsx.SubjectRequest, event, nil, natsx.StreamTelemetry, natsx.SubjectRequest, dlq.KindTelemetry,
			func(t *testing.T, m *jetstream.RawStreamMsg, seq uint64) {
				if !strings.Contains(string(m.Data), `"ts":"2026-01-01T00:00:00Z"`) {
					t.Errorf("patch not applied: %s", m.Data)
				}
			}},
		{"executor dead letter goes back to its executor", natsx.StageExecutor, natsx.ExecSubject("anthropic"), work, nil, natsx.StreamPipeline, natsx.ExecSubject("anthropic"), dlq.KindWork,
			func(t *testing.T, m *jetstream.RawStreamMsg, seq uint64) {
				var w envelope.Work
				if err := json.Unmarshal(m.Data, &w); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(w.Key, "acme.r1:replay:") || w.Step != 1 || len(w.Chain) != 2 || w.Request.User != "patched" {
					t.Errorf("replayed work %+v", w)
				}
			}},
		{"gate dead letter goes back to the gate", natsx.StageGate, natsx.SubjectResults, work, nil, natsx.StreamPipeline, natsx.SubjectResults, dlq.KindWork, nil},
		{"intake dead letter is a request", natsx.StageIntake, natsx.SubjectRequests, request, nil, natsx.StreamRequests, natsx.SubjectRequests, dlq.KindRequest,
			func(t *testing.T, m *jetstream.RawStreamMsg, seq uint64) {
				if got := m.Header.Get(natsx.HeaderDedupeKey); !strings.HasPrefix(got, "r1:replay:") {
					t.Errorf("dedupe key %q", got)
				}
				if strings.Contains(string(m.Data), "colour") {
					t.Errorf("patch not applied: %s", m.Data)
				}
			}},
	}
	patches := map[string]string{
		dlq.KindTelemetry: `{"ts":"2026-01-01T00:00:00Z"}`,
		dlq.KindWork:      `{"user":"patched"}`,
		dlq.KindRequest:   `{"colour":null}`,
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq := deadLetter(t, js, tc.stage, tc.orig, tc.data, tc.hdr)
			e, err := dlq.Get(ctx, js, seq)
			if err != nil {
				t.Fatal(err)
			}
			// r1 was answered with a retryable error (each case's own
			// answer): its replays re-answer it.
			answered := []byte(`{"id":"r1","status":"error","error":{"code":"all_vendors_failed","message":"x","retryable":true}}`)
			if _, err := js.Publish(ctx, "llm.store.replies.acme.r1", answered); err != nil {
				t.Fatal(err)
			}
			o := dlq.ReplayOptions{DryRun: true, Patch: json.RawMessage(patches[tc.kind]), Reanswer: true}
			dry := dlq.Replay(ctx, js, e, o)
			if dry.Error != "" || dry.Skipped != "" || dry.Kind != tc.kind || dry.Subject != tc.subject || len(dry.Payload) == 0 {
				t.Fatalf("dry run %+v", dry)
			}
			o.DryRun = false
			r := dlq.Replay(ctx, js, e, o)
			if !r.Replayed || r.Error != "" {
				t.Fatalf("replay %+v", r)
			}
			m := lastOn(t, js, tc.stream, tc.subject)
			if string(m.Data) != string(dry.Payload) {
				t.Errorf("published %s, dry run showed %s", m.Data, dry.Payload)
			}
			if tc.check != nil {
				tc.check(t, m, seq)
			}
			if _, err := dlq.Get(ctx, js, seq); err == nil {
				t.Error("dead letter still there after the replay")
			}
		})
	}

	t.Run("truncated dead letter is not replayed", func(t *testing.T) {
		hdr := nats.Header{}
		data := dlq.CapPayload([]byte(`{"id":"big","tenant":"acme","user":"`+strings.Repeat("x", 1_000_000)+`"}`), hdr)
		seq := deadLetter(t, js, natsx.StageIntake, natsx.SubjectRequests, data, hdr)
		e, err := dlq.Get(ctx, js, seq)
		if err != nil {
			t.Fatal(err)
		}
		if e.Truncated() != 1_000_038 || len(e.Data) != dlq.TruncatedPayloadBytes {
			t.Fatalf("truncated %d, kept %d bytes", e.Truncated(), len(e.Data))
		}
		if r := dlq.Replay(ctx, js, e, dlq.ReplayOptions{}); r.Replayed || !strings.Contains(r.Error, "truncated") {
			t.Fatalf("replay %+v", r)
		}
	})
}
