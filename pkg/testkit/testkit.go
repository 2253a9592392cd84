// Package testkit holds what many tests need: an embedded JetStream server
// on a random port with a temporary store, connections to it, a clock a
// test can move and a poll that waits for a condition. It is imported by
// tests only.
package testkit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Server starts an embedded JetStream server, stopped at cleanup, and
// returns its URL.
func Server(tb testing.TB) string {
	tb.Helper()
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns.ClientURL()
}

// Connect opens a connection, closed at cleanup, and its JetStream.
func Connect(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// JetStream starts a server and connects to it.
func JetStream(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return Connect(tb, Server(tb))
}

// WithTopology creates Switchyard's streams, as every service does at start.
func WithTopology(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureTopology(ctx, js, natsx.DefaultTopology()); err != nil {
		tb.Fatal(err)
	}
}

// Clock is a clock that moves only when told to.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// RepliesBehind makes a replica of LLM_REPLIES that answers its direct gets
// and is always behind: a mirror that holds one reply (stored here on a
// subject of its own) and never receives another. It stands for a cluster
// follower that has not applied a reply yet, for checks that must ask the
// stream's leader instead.
func RepliesBehind(tb testing.TB, ctx context.Context, js jetstream.JetStream) {
	tb.Helper()
	const other = "llm.replies.t.other"
	m := &nats.Msg{Subject: natsx.SubjectReplyStorePrefix + "t.other", Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, "other:reply")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		tb.Fatal(err)
	}
	mirror, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REPLIES_BEHIND", MirrorDirect: true,
		Mirror: &jetstream.StreamSource{Name: natsx.StreamReplies, FilterSubject: other}})
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if info, err := mirror.Info(ctx); err == nil && info.State.Msgs == 1 {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatal("the mirror did not receive its message")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Eventually polls cond until it holds and fails the test when it has not
// within the given time, naming what it waited for. It polls every
// millisecond at first, for tests that watch a short-lived state, and backs
// off to every 20 ms for long waits.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}
