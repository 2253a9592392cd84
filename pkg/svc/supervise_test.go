package svc

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// A stage that does not notice its consumer was deleted (the ledger's fetch
// loop keeps retrying) is restarted by the watchdog, which recreates what
// it owns; /healthz fails meanwhile and passes again after.
func TestSupervisorRestartsAStageWhoseConsumerWasDeleted(t *testing.T) {
	pol, err := policy.Load("../../deployments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := Open(ctx, Options{Name: "test", NATSURL: testkit.Server(t), Policy: pol, Log: zerolog.Nop(), WatchEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	var starts atomic.Int32
	rt.Go(Stage{Name: "oblivious", Stream: natsx.StreamRequests, Consumer: "oblivious", Run: func(ctx context.Context) error {
		starts.Add(1)
		if _, err := rt.JS.CreateOrUpdateConsumer(ctx, natsx.StreamRequests, jetstream.ConsumerConfig{Durable: "oblivious"}); err != nil {
			return err
		}
		<-ctx.Done() // never looks at its consumer again
		return nil
	}})
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return rt.Health.Check() == nil })
	if err := rt.JS.DeleteConsumer(ctx, natsx.StreamRequests, "oblivious"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "unhealthy", func() bool { return rt.Health.Check() != nil })
	t.Logf("while missing: %v", rt.Health.Check())
	testkit.Eventually(t, 10*time.Second, "restarted and healthy", func() bool { return starts.Load() == 2 && rt.Health.Check() == nil })
	if _, err := rt.JS.Consumer(ctx, natsx.StreamRequests, "oblivious"); err != nil {
		t.Fatalf("consumer not recreated: %v", err)
	}
}

// A stage whose handlers hang (work delivered, nothing acked, more waiting)
// is reported stuck.
func TestSupervisorReportsAStuckStage(t *testing.T) {
	pol, err := policy.Load("../../deployments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := Open(ctx, Options{Name: "test", NATSURL: testkit.Server(t), Policy: pol, Log: zerolog.Nop(),
		WatchEvery: 100 * time.Millisecond, StuckAfter: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	rt.Go(Stage{Name: "hung", Stream: natsx.StreamRequests, Consumer: "hung", Run: func(ctx context.Context) error {
		cons, err := rt.JS.CreateOrUpdateConsumer(ctx, natsx.StreamRequests, jetstream.ConsumerConfig{Durable: "hung", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour})
		if err != nil {
			return err
		}
		if _, err := cons.Next(); err != nil { // take one message, never ack it
			return err
		}
		<-ctx.Done()
		return nil
	}})
	testkit.Eventually(t, 10*time.Second, "healthy", func() bool { return rt.Health.Check() == nil })
	for i := range 3 {
		if _, err := rt.JS.Publish(ctx, natsx.SubjectRequests, []byte("x"), jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "stuck", func() bool { err := rt.Health.Check(); return err != nil && strings.Contains(err.Error(), "stuck") })
	t.Logf("healthz: %v", rt.Health.Check())
}
