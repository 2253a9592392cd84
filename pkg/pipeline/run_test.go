package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/faultnet"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A stage whose consumer (or its stream) disappears, or whose connection
// closes, must not idle as if healthy: Run returns an error saying why.
func TestRunReturnsWhenItsConsumerIsGone(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(ctx context.Context, t *testing.T, js jetstream.JetStream, closeConn func())
	}{
		{"consumer deleted", func(ctx context.Context, t *testing.T, js jetstream.JetStream, _ func()) {
			if err := js.DeleteConsumer(ctx, "S", "c"); err != nil {
				t.Fatal(err)
			}
		}},
		{"stream deleted", func(ctx context.Context, t *testing.T, js jetstream.JetStream, _ func()) {
			if err := js.DeleteStream(ctx, "S"); err != nil {
				t.Fatal(err)
			}
		}},
		{"connection closed", func(_ context.Context, _ *testing.T, _ jetstream.JetStream, closeConn func()) { closeConn() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			nc, js := testkit.Connect(t, url)
			_, admin := testkit.Connect(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
				t.Fatal(err)
			}
			cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}
			handled := make(chan struct{}, 1)
			h := func(context.Context, *pipeline.Delivery) error {
				select {
				case handled <- struct{}{}:
				default:
				}
				return nil
			}
			ran := make(chan error, 1)
			go func() { ran <- pipeline.Run(ctx, zerolog.Nop(), cons, h, pipeline.RunOptions{Concurrency: 2}) }()
			if _, err := js.Publish(ctx, "s.1", []byte("x")); err != nil {
				t.Fatal(err)
			}
			<-handled // consuming
			tt.breakIt(ctx, t, admin, nc.Close)
			select {
			case err := <-ran:
				if err == nil || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Run returned %v, want the reason its consumer stopped", err)
				}
				t.Logf("Run: %v", err)
			case <-ctx.Done():
				t.Fatal("Run kept idling after its consumer was gone")
			}
		})
	}
}

// A handler redelivered after its reply went out (the first delivery's
// ack was lost, e.g. with the NATS node that held it) does not publish the
// reply again: LLM_REPLIES would drop the copy, but a client subscribed to
// the reply subject would see two replies. (Before: it saw two.)
func TestRedeliveredHandlerRepliesOnce(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "W", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}}
	var seen atomic.Int32
	sub, err := nc.Subscribe(w.Request.ReplySubject(), func(*nats.Msg) { seen.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	pub := pipeline.Publisher{JS: js, NC: nc}
	handled := make(chan uint64, 4)
	h := pipeline.Stage(zerolog.Nop(), func(ctx context.Context, d *pipeline.Delivery) error {
		outs, err := pipeline.FinishOuts(w, &envelope.Reply{ID: "k", Status: envelope.StatusOK}, time.Now())
		if err != nil {
			return err
		}
		if err := pub.Send(ctx, outs); err != nil {
			return err
		}
		handled <- d.NumDelivered()
		if d.NumDelivered() == 1 {
			return pipeline.Transient(errors.New("ack lost"), 10*time.Millisecond)
		}
		return nil
	}, nil, 5, 5*time.Second)
	go func() { _ = pipeline.Run(ctx, zerolog.Nop(), cons, h, pipeline.RunOptions{Concurrency: 1}) }()
	if _, err := js.Publish(ctx, "w.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 2; want++ {
		select {
		case n := <-handled:
			if n != want {
				t.Fatalf("delivery %d, want %d", n, want)
			}
		case <-ctx.Done():
			t.Fatal("the message was not redelivered")
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != 1 {
		t.Fatalf("a subscriber saw %d replies, want 1", n)
	}
}

// Send pipelines a handler's messages but publishes a reply only once the
// messages before it are stored: a client that saw a reply can find the
// request's telemetry (and so the ledger row) eventually. With the
// telemetry stream gone, its publish fails and the reply is not sent; with
// it, the reply's subscriber finds the telemetry already stored.
func TestSendPublishesTheReplyAfterTheTelemetryIsStored(t *testing.T) {
	for _, tt := range []struct {
		name          string
		dropTelemetry bool
		batched       bool // the router's way: request events in batches (Publisher.Events)
	}{{"telemetry stored", false, false}, {"telemetry stream missing", true, false},
		{"telemetry stored in a batch", false, true}, {"telemetry stream missing, batched", true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			url := testkit.Server(t)
			nc, js := testkit.Connect(t, url)
			testkit.WithTopology(t, js)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if tt.dropTelemetry {
				if err := js.DeleteStream(ctx, natsx.StreamTelemetry); err != nil {
					t.Fatal(err)
				}
			}
			w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}}
			telemetryAtReply := make(chan uint64, 4)
			sub, err := nc.Subscribe(w.Request.ReplySubject(), func(*nats.Msg) {
				var n uint64
				if s, err := js.Stream(ctx, natsx.StreamTelemetry); err == nil {
					if info, err := s.Info(ctx); err == nil {
						n = info.State.Msgs
					}
				}
				telemetryAtReply <- n
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			outs, err := pipeline.FinishOuts(w, &envelope.Reply{ID: "k", Status: envelope.StatusOK}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			pub := pipeline.Publisher{JS: js, NC: nc}
			if tt.batched {
				pub.Events = pub.NewRequestEvents(nil)
			}
			err = pub.Send(ctx, outs)
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if tt.dropTelemetry {
				if err == nil || !natsx.Unavailable(err) {
					t.Fatalf("Send = %v, want the telemetry's publish failure (JetStream unavailable)", err)
				}
				time.Sleep(100 * time.Millisecond) // a reply published anyway would have arrived
				if len(telemetryAtReply) != 0 {
					t.Fatal("the reply went out although the telemetry was not stored")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case n := <-telemetryAtReply:
				if n != 1 {
					t.Fatalf("when the reply arrived LLM_TELEMETRY held %d messages, want 1", n)
				}
			case <-ctx.Done():
				t.Fatal("no reply")
			}
			subject := natsx.SubjectRequest
			if tt.batched {
				subject = natsx.SubjectRequestBatch
			}
			s, err := js.Stream(ctx, natsx.StreamTelemetry)
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.GetLastMsgForSubject(ctx, subject)
			if err != nil {
				t.Fatalf("no message on %s: %v", subject, err)
			}
			var ev envelope.RequestEvent
			var batch []envelope.RequestEvent
			if tt.batched && (json.Unmarshal(m.Data, &batch) != nil || len(batch) != 1 || batch[0].RequestID != "k") {
				t.Fatalf("%s holds %s, want an array of the one request event", subject, m.Data)
			} else if !tt.batched && (json.Unmarshal(m.Data, &ev) != nil || ev.RequestID != "k") {
				t.Fatalf("%s holds %s, want the request event", subject, m.Data)
			}
		})
	}
}

// Messages no client sees are published together; one that fails (here
// the attempt event, its stream gone) fails Send with JetStream
// unavailable, so the handler's message is redelivered and both are
// published again (deduplicated by their ids).
func TestSendReportsAFailedPipelinedPublish(t *testing.T) {
	url := testkit.Server(t)
	nc, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := &envelope.Work{Key: "k", Request: envelope.Request{ID: "k", Tenant: "t"}}
	attempt, err := pipeline.Out(natsx.SubjectAttempt, "k:1", map[string]string{"request_id": "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	verdict, err := pipeline.WorkOut(natsx.SubjectVerdicts, "k:verdict:1", w)
	if err != nil {
		t.Fatal(err)
	}
	pub := pipeline.Publisher{JS: js, NC: nc}
	if err := pub.Send(ctx, []pipeline.Outbound{attempt, verdict}); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, natsx.StreamTelemetry); err != nil {
		t.Fatal(err)
	}
	attempt.MsgID, verdict.MsgID = "k:2", "k:verdict:2"
	err = pub.Send(ctx, []pipeline.Outbound{attempt, verdict})
	if err == nil || !natsx.Unavailable(err) {
		t.Fatalf("Send = %v, want the attempt event's publish failure (JetStream unavailable)", err)
	}
}

// A partition that lasts longer than two heartbeats makes the iterator
// report a missed heartbeat; the iterator re-pulls by itself, so every
// worker must carry on. (Before: each worker that saw the error returned,
// leaving the stage with fewer workers, or none, until a restart.)
func TestRunKeepsEveryWorkerThroughAMissedHeartbeat(t *testing.T) {
	const workers = 3
	url := testkit.Server(t)
	proxy, err := faultnet.Start(strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	_, js := testkit.Connect(t, "nats://"+proxy.Addr())
	_, admin := testkit.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}

	// Each handler holds until the test releases its round, so a round
	// completes only when `workers` handlers run at once.
	var inFlight atomic.Int32
	var release atomic.Pointer[chan struct{}]
	allIn := make(chan struct{}, workers)
	handled := make(chan struct{}, workers)
	h := func(hctx context.Context, _ *pipeline.Delivery) error {
		rel := *release.Load()
		if inFlight.Add(1) == workers {
			allIn <- struct{}{}
		}
		select {
		case <-rel:
		case <-hctx.Done():
		}
		inFlight.Add(-1)
		handled <- struct{}{}
		return nil
	}
	ran := make(chan error, 1)
	go func() {
		ran <- pipeline.Run(ctx, zerolog.New(zerolog.NewTestWriter(t)), cons, h,
			pipeline.RunOptions{Concurrency: workers, PullExpiry: time.Second})
	}()

	round := func(name string, within time.Duration) {
		t.Helper()
		rel := make(chan struct{})
		release.Store(&rel)
		start := time.Now()
		for i := range workers {
			if _, err := admin.Publish(ctx, fmt.Sprintf("s.%d", i), []byte(name)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-allIn:
			t.Logf("%s: %d handlers in parallel after %s", name, workers, time.Since(start).Round(time.Millisecond))
		case err := <-ran:
			t.Fatalf("%s: Run returned %v; it must keep consuming", name, err)
		case <-time.After(within):
			t.Fatalf("%s: %d of %d handlers running after %s: workers were lost", name, inFlight.Load(), workers, within)
		}
		close(rel)
		for range workers {
			<-handled
		}
	}
	round("before the partition", 5*time.Second)
	proxy.Stall()
	// The partition itself is the thing simulated: it lasts three pull
	// expiries, so every worker waiting in Next sees a missed heartbeat.
	time.Sleep(3 * time.Second)
	proxy.Heal()
	round("after the partition", 5*time.Second)
}
