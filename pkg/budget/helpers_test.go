package budget

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// fakeClock is a clock shared by the instances of a test.
// fakeClock is a clock the test moves.
type fakeClock = testkit.Clock

func newClock(t time.Time) *fakeClock { return testkit.NewClock(t) }

// natsEnv is an embedded JetStream server.
type natsEnv struct {
	url string
	js  jetstream.JetStream // for test assertions
}

func startNATS(tb testing.TB) *natsEnv {
	tb.Helper()
	env := &natsEnv{url: testkit.Server(tb)}
	env.js = connectJS(tb, env.url)
	return env
}

func connectJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	_, js := testkit.Connect(tb, url)
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
