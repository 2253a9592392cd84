package budget

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// fakeClock is a clock shared by the instances of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// natsEnv is an embedded JetStream server.
type natsEnv struct {
	url string
	js  jetstream.JetStream // for test assertions
}

func startNATS(tb testing.TB) *natsEnv {
	tb.Helper()
	ns, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	env := &natsEnv{url: ns.ClientURL()}
	env.js = connectJS(tb, env.url)
	return env
}

func connectJS(tb testing.TB, url string) jetstream.JetStream {
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
	return js
}

// replica starts one Budgets instance on its own connection, as one router
// replica would.
func (env *natsEnv) replica(tb testing.TB, cfg Config, clock *fakeClock) *Budgets {
	tb.Helper()
	js := connectJS(tb, env.url)
	d := Deps{Log: zerolog.Nop()}
	if clock != nil {
		d.Now = clock.Now
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, js, cfg, d)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func usage(tb testing.TB, b *Budgets, tenant string) Usage {
	tb.Helper()
	u, err := b.Usage(ctxT(tb), tenant)
	if err != nil {
		tb.Fatalf("Usage(%s): %v", tenant, err)
	}
	return u
}

func mustReserve(tb testing.TB, b *Budgets, tenant string, l limits, est float64, id string) Reservation {
	tb.Helper()
	r, err := b.Reserve(ctxT(tb), tenant, l, est, id)
	if err != nil {
		tb.Fatalf("Reserve(%s, %v, %s): %v", tenant, est, id, err)
	}
	return r
}

func mustSettle(tb testing.TB, b *Budgets, r Reservation, actual float64) {
	tb.Helper()
	if err := b.Settle(ctxT(tb), r, actual); err != nil {
		tb.Fatalf("Settle(%s, %v): %v", r.ID, actual, err)
	}
}

// near compares USD amounts at nano-USD resolution.
func near(a, b float64) bool { return nano(a) == nano(b) }

func mustKV(tb testing.TB, env *natsEnv) jetstream.KeyValue {
	tb.Helper()
	kv, err := env.js.KeyValue(ctxT(tb), DefaultBucket)
	if err != nil {
		tb.Fatal(err)
	}
	return kv
}

func nan() float64 { return math.NaN() }
func inf() float64 { return math.Inf(1) }
