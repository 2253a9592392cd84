package executor

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A result goes to a gate directly when one stores its verdict, and to
// llm.results otherwise: no gate (then the direct way pauses), a gate that
// refuses, or the direct way turned off. Either way the result is stored
// exactly once. The gate here is a stand-in answering on llm.gate.judge;
// the real one is services/gate (and integration/, end to end).
func TestResultGoesToTheGateDirectlyOrToTheStream(t *testing.T) {
	for _, tt := range []struct {
		name       string
		direct     bool
		gate       string // "": none; "store"; "refuse"
		wantAsked  int32
		wantStream uint64 // results on llm.results
		wantMarked bool   // the stream's copy is marked as possibly handled
		wantPaused bool
	}{
		{name: "a gate stores the verdict", direct: true, gate: "store", wantAsked: 1},
		{name: "no gate answers", direct: true, wantStream: 1, wantMarked: true, wantPaused: true},
		{name: "the gate refuses", direct: true, gate: "refuse", wantAsked: 1, wantStream: 1, wantMarked: true},
		{name: "direct hand-off off", direct: false, gate: "store", wantStream: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			nc, js := testkit.Connect(t, url)
			testkit.WithTopology(t, js)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var asked atomic.Int32
			var got atomic.Pointer[envelope.Work]
			if tt.gate != "" {
				gnc, _ := testkit.Connect(t, url)
				if _, err := gnc.QueueSubscribe(natsx.SubjectGateJudge, natsx.QueueGate, func(m *nats.Msg) {
					asked.Add(1)
					var w envelope.Work
					if err := json.Unmarshal(m.Data, &w); err == nil {
						got.Store(&w)
					}
					reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
					if tt.gate == "refuse" {
						reply.Header.Set(natsx.HeaderDirectError, "judge: broken")
					}
					_ = m.RespondMsg(reply)
				}); err != nil {
					t.Fatal(err)
				}
				if err := gnc.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			e := testExecutor(t, adapterFunc(answer))
			e.d.JS, e.d.NC, e.pub = js, nc, pipeline.Publisher{JS: js, NC: nc}
			e.cfg.AckWait = 30 * time.Second
			e.toGate.NC, e.toGate.Enabled, e.toGate.Timeout = nc, tt.direct, 500*time.Millisecond
			data, _ := json.Marshal(work(time.Now()))
			d := &pipeline.Delivery{Msg: redelivered{data: data}, Meta: &jetstream.MsgMetadata{NumDelivered: 1}}
			if err := e.Handle(ctx, d); err != nil {
				t.Fatal(err)
			}
			if n := asked.Load(); n != tt.wantAsked {
				t.Fatalf("the gate was asked %d times, want %d", n, tt.wantAsked)
			}
			if w := got.Load(); tt.wantAsked > 0 && (w == nil || w.Current == nil || w.Current.Content != "hello" || len(w.Attempts) != 1) {
				t.Fatalf("the gate was not handed the result: %+v", w)
			}
			stream, err := js.Stream(ctx, natsx.StreamPipeline)
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctx, jetstream.WithSubjectFilter(natsx.SubjectResults))
			if err != nil {
				t.Fatal(err)
			}
			if n := info.State.Subjects[natsx.SubjectResults]; n != tt.wantStream {
				t.Fatalf("%d results on llm.results, want %d", n, tt.wantStream)
			}
			if tt.wantStream > 0 {
				m, err := stream.GetLastMsgForSubject(ctx, natsx.SubjectResults)
				if err != nil {
					t.Fatal(err)
				}
				if marked := m.Header.Get(natsx.HeaderTriedDirect) != ""; marked != tt.wantMarked {
					t.Fatalf("the result on llm.results marked tried-direct: %v, want %v", marked, tt.wantMarked)
				}
			}
			direct, stored := testutil.ToFloat64(e.toGate.Paths.WithLabelValues("direct")), testutil.ToFloat64(e.toGate.Paths.WithLabelValues("stream"))
			if direct+stored != 1 || (tt.wantStream == 0) != (direct == 1) {
				t.Fatalf("hand-offs counted direct %v, stream %v", direct, stored)
			}
			if paused := e.toGate.Paused(); paused != tt.wantPaused {
				t.Fatalf("direct hand-off paused = %v, want %v", paused, tt.wantPaused)
			}
		})
	}
}
