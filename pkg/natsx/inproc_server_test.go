package natsx_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// The stages of `up` reach its embedded server through BufferedInProcess:
// JetStream publishes, pulls, acks and core request-reply work over it, a
// drain delivers what was published before it, and no socket is opened.
func TestBufferedInProcessAgainstTheServer(t *testing.T) {
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := natsx.Connect(ns.ClientURL(), "inproc-test", zerolog.Nop(), natsx.BufferedInProcess(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if n := ns.NumClients(); n != 1 {
		t.Fatalf("server sees %d clients, want 1", n)
	}
	if addr := nc.ConnectedAddr(); addr != "pipe" { // a socket would give host:port
		t.Fatalf("connected to %q, want the in-process pipe", addr)
	}
	sub, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	reply, err := nc.RequestWithContext(ctx, "echo", []byte("ping"))
	if err != nil {
		t.Fatalf("request over the in-process connection: %v", err)
	}
	if string(reply.Data) != "ping" {
		t.Fatalf("reply %q, want %q", reply.Data, "ping")
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	acks := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		f, err := js.PublishAsync(fmt.Sprintf("w.%d", i%7), []byte(fmt.Sprint(i)), jetstream.WithMsgID(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, f)
	}
	for i, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish %d: %v", i, err)
		case <-ctx.Done():
			t.Fatalf("publish %d: no ack", i)
		}
	}
	cons, err := js.CreateConsumer(ctx, "W", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < n {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			seen[string(m.Data())] = true
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got == 0 {
			t.Fatalf("fetched nothing with %d of %d seen: %v", len(seen), n, batch.Error())
		}
	}
	info, err := js.Stream(ctx, "W")
	if err != nil {
		t.Fatal(err)
	}
	if msgs := info.CachedInfo().State.Msgs; msgs != 0 {
		t.Fatalf("%d messages left after every ack", msgs)
	}

	// What is published before a drain reaches the server before the
	// connection closes.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "D", Subjects: []string{"d"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := nc.Publish("d", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("drain did not close the connection")
	}
	_, js2 := testkit.Connect(t, ns.ClientURL()) // over TCP
	d, err := js2.Stream(ctx, "D")
	if err != nil {
		t.Fatal(err)
	}
	if msgs := d.CachedInfo().State.Msgs; msgs != 100 {
		t.Fatalf("stream holds %d of the 100 messages published before the drain", msgs)
	}
}
