package gate

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// The gate's direct door stores the verdict of a result handed to it on
// llm.gate.judge under the id the same result on llm.results would give
// it, answers empty once it is stored, and answers with the reason when it
// stored none (the executor then uses llm.results). A result handed twice
// (an answer lost, the executor trying again) leaves one verdict. A stopped
// gate answers nothing more.
func TestDirectHandOffStoresTheVerdictOnce(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, err := New(Config{Consumer: "gate", ConsumerSettings: pipeline.ConsumerSettings{Concurrency: 4, MaxDeliver: 5, AckWait: 30 * time.Second, MaxAckPending: 8}, Direct: true},
		Deps{Log: zerolog.Nop(), NC: nc, JS: js, Policy: testGate().d.Policy})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := g.serveDirect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := envelope.Result{Content: "hello", FinishReason: "stop", AttemptID: "k#1", StartedAt: time.Now().UTC()}
	good, _ := json.Marshal(&envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}, Route: "chat",
		Chain: []envelope.Target{{Vendor: "a", Model: "m"}}, Current: &res,
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "m", Outcome: envelope.OutcomeOK}}})
	noAttempt, _ := json.Marshal(&envelope.Work{Key: "k2", Request: envelope.Request{ID: "k2", Tenant: "t"}})
	cli, _ := testkit.Connect(t, url)
	for _, tt := range []struct {
		name      string
		data      []byte
		wantError bool
	}{
		{"a result", good, false},
		{"the same result again", good, false},
		{"not JSON", []byte("{"), true},
		{"a result without an attempt", noAttempt, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cli.RequestWithContext(ctx, natsx.SubjectGateJudge, tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if why := resp.Header.Get(natsx.HeaderDirectError); (why != "") != tt.wantError {
				t.Fatalf("answer's error %q, want an error: %v", why, tt.wantError)
			}
		})
	}
	stream, err := js.Stream(ctx, natsx.StreamPipeline)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(natsx.SubjectVerdicts))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[natsx.SubjectVerdicts]; n != 1 {
		t.Fatalf("%d verdicts stored, want 1", n)
	}
	m, err := stream.GetLastMsgForSubject(ctx, natsx.SubjectVerdicts)
	if err != nil {
		t.Fatal(err)
	}
	if id := m.Header.Get(natsx.HeaderMsgID); id != "k:verdict:k#1" {
		t.Fatalf("verdict stored under id %q, want the one llm.results gives it (k:verdict:k#1)", id)
	}
	var v envelope.Work
	if err := json.Unmarshal(m.Data, &v); err != nil || v.Quality == nil || !v.Quality.Passed {
		t.Fatalf("stored verdict: %+v, %v", v.Quality, err)
	}
	stop()
	if _, err := cli.RequestWithContext(ctx, natsx.SubjectGateJudge, good); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a stopped gate's door: %v, want no responders", err)
	}
}

// The gate hands the verdict to a router directly when one handles it
// (nothing is stored on llm.verdicts), and stores it otherwise, marked as
// possibly handled when a router was asked.
func TestVerdictGoesToTheRouterDirectlyOrToTheStream(t *testing.T) {
	for _, tt := range []struct {
		name       string
		router     error // the stand-in router's answer; nil: handled
		noRouter   bool
		wantStored bool
		wantMarked bool
	}{
		{name: "a router handles it"},
		{name: "the router refuses", router: errors.New("budget bucket unavailable"), wantStored: true, wantMarked: true},
		{name: "no router", noRouter: true, wantStored: true, wantMarked: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			nc, js := testkit.Connect(t, url)
			testkit.WithTopology(t, js)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got atomic.Pointer[envelope.Work]
			if !tt.noRouter {
				rnc, _ := testkit.Connect(t, url)
				stop, err := pipeline.DirectDoor{NC: rnc, Subject: natsx.SubjectRouterVerdict, Queue: natsx.QueueRouter, Stage: "router", Concurrency: 1,
					Timeout: time.Second, Log: zerolog.Nop(), Handle: func(_ context.Context, data []byte) error {
						var w envelope.Work
						if err := json.Unmarshal(data, &w); err == nil {
							got.Store(&w)
						}
						return tt.router
					}}.Serve(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer stop()
				if err := rnc.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			g, err := New(Config{Consumer: "gate", ConsumerSettings: pipeline.ConsumerSettings{Concurrency: 4, MaxDeliver: 5, AckWait: 30 * time.Second, MaxAckPending: 8}, DirectRouter: true, RouterTimeout: 500 * time.Millisecond},
				Deps{Log: zerolog.Nop(), NC: nc, JS: js, Policy: testGate().d.Policy})
			if err != nil {
				t.Fatal(err)
			}
			res := envelope.Result{Content: "hello", FinishReason: "stop", AttemptID: "k#1", StartedAt: time.Now().UTC()}
			data, _ := json.Marshal(&envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}, Route: "chat",
				Chain: []envelope.Target{{Vendor: "a", Model: "m"}}, Current: &res,
				Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "a", Model: "m", Outcome: envelope.OutcomeOK}}})
			if err := g.handleDirect(ctx, data); err != nil {
				t.Fatal(err)
			}
			if w := got.Load(); !tt.noRouter && (w == nil || w.Quality == nil || !w.Quality.Passed) {
				t.Fatalf("the router was not handed the verdict: %+v", w)
			}
			stream, err := js.Stream(ctx, natsx.StreamPipeline)
			if err != nil {
				t.Fatal(err)
			}
			m, err := stream.GetLastMsgForSubject(ctx, natsx.SubjectVerdicts)
			if stored := err == nil; stored != tt.wantStored {
				t.Fatalf("verdict stored: %v (%v), want %v", stored, err, tt.wantStored)
			}
			if tt.wantStored {
				if marked := m.Header.Get(natsx.HeaderTriedDirect) != ""; marked != tt.wantMarked || m.Header.Get(natsx.HeaderMsgID) != "k:verdict:k#1" {
					t.Fatalf("stored verdict: marked %v (want %v), id %q", marked, tt.wantMarked, m.Header.Get(natsx.HeaderMsgID))
				}
			}
		})
	}
}
