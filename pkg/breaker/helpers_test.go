package breaker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// fakeClock is a clock shared by the instances of a test.
// fakeClock is a clock the test moves.
type fakeClock = testkit.Clock

func newClock() *fakeClock { return testkit.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// natsEnv is an embedded JetStream server with Switchyard's topology.
type natsEnv struct {
	url string
	js  jetstream.JetStream // for test assertions
}

func startNATS(tb testing.TB) *natsEnv {
	tb.Helper()
	env := &natsEnv{url: testkit.Server(tb)}
	env.js = connectJS(tb, env.url)
	testkit.WithTopology(tb, env.js)
	return env
}

func connectJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	_, js := testkit.Connect(tb, url)
	return js
}

// replica starts one Breakers instance on its own connection, as one
// router replica would, publishing alerts to llm.alerts.circuit.
func (env *natsEnv) replica(tb testing.TB, cfg Config, clock *fakeClock) *Breakers {
	tb.Helper()
	js := connectJS(tb, env.url)
	d := Deps{Log: zerolog.Nop(), Alert: JetStreamAlert(js)}
	if clock != nil {
		d.Now = clock.Now
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, js, cfg, d)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// alertSink collects every alert published on llm.alerts.circuit, as a
// core subscriber: it sees every publish, before JetStream de-duplication.
type alertSink struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (env *natsEnv) alerts(tb testing.TB) *alertSink {
	tb.Helper()
	nc, err := nats.Connect(env.url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	s := &alertSink{}
	if _, err := nc.Subscribe(AlertSubject(AlertKind), func(m *nats.Msg) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.msgs = append(s.msgs, m)
	}); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return s
}

type gotAlert struct {
	Kind string `json:"kind"`
	Transition
	msgID string
}

func (s *alertSink) list(tb testing.TB) []gotAlert {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]gotAlert, 0, len(s.msgs))
	for _, m := range s.msgs {
		var a gotAlert
		if err := json.Unmarshal(m.Data, &a); err != nil {
			tb.Fatalf("alert %s: %v", m.Data, err)
		}
		a.msgID = m.Header.Get(natsx.HeaderMsgID)
		out = append(out, a)
	}
	// Alerts from different connections may arrive in any order; the KV
	// revision orders the transitions of a bucket.
	slices.SortStableFunc(out, func(a, b gotAlert) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

// waitAlerts waits until n alerts arrived, then a little longer to catch
// extra ones.
func (s *alertSink) waitAlerts(tb testing.TB, n int) []gotAlert {
	tb.Helper()
	testkit.Eventually(tb, 5*time.Second, fmt.Sprintf("%d alerts", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.msgs) >= n
	})
	time.Sleep(150 * time.Millisecond)
	return s.list(tb)
}

// waitState waits until every instance sees key in state want.
func waitState(tb testing.TB, key string, want State, bs ...*Breakers) {
	tb.Helper()
	for _, b := range bs {
		testkit.Eventually(tb, 5*time.Second, fmt.Sprintf("%s to be %s on instance %s", key, want, b.id), func() bool { return b.State(key) == want })
	}
}

func allow(tb testing.TB, b *Breakers, key string) Permit {
	tb.Helper()
	p, err := b.Allow(context.Background(), key)
	if err != nil {
		tb.Fatalf("Allow(%s): %v", key, err)
	}
	return p
}

func recordOutcome(tb testing.TB, b *Breakers, p Permit, success bool) {
	tb.Helper()
	if err := b.Record(context.Background(), p, success); err != nil {
		tb.Fatalf("Record(%s, %v): %v", p.Key(), success, err)
	}
}

// fail records n failures of allowed calls on b.
func fail(tb testing.TB, b *Breakers, key string, n int) {
	tb.Helper()
	for range n {
		p := allow(tb, b, key)
		if !p.Allowed() {
			tb.Fatalf("Allow(%s) refused while failing it", key)
		}
		recordOutcome(tb, b, p, false)
	}
}

func alertStreamMsgs(tb testing.TB, env *natsEnv) uint64 {
	tb.Helper()
	s, err := env.js.Stream(context.Background(), natsx.StreamAlerts)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// converge waits until every instance has the same revision of key.
func converge(tb testing.TB, key string, bs ...*Breakers) {
	tb.Helper()
	testkit.Eventually(tb, 5*time.Second, "instances to agree on "+key, func() bool {
		for _, b := range bs[1:] {
			if b.Status(key).Revision != bs[0].Status(key).Revision {
				return false
			}
		}
		return true
	})
}

type trial struct {
	b *Breakers
	p Permit
}

// raceAllow has workers goroutines, spread over the instances, call Allow
// on key for 300ms and returns the permits granted.
func raceAllow(tb testing.TB, bs []*Breakers, key string, workers int) []trial {
	tb.Helper()
	var (
		mu  sync.Mutex
		got []trial
		wg  sync.WaitGroup
	)
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := range workers {
		b := bs[i%len(bs)]
		wg.Go(func() {
			for time.Now().Before(deadline) {
				p, err := b.Allow(context.Background(), key)
				if err != nil {
					tb.Error(err)
					return
				}
				if p.Allowed() {
					if !p.Trial() {
						tb.Error("half-open permit is not a trial")
					}
					mu.Lock()
					got = append(got, trial{b, p})
					mu.Unlock()
				}
				time.Sleep(50 * time.Microsecond)
			}
		})
	}
	wg.Wait()
	return got
}
