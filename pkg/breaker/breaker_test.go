package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{name: "zero is all defaults", cfg: Config{}},
		{name: "rate only", cfg: Config{FailureThreshold: -1, FailureRate: 0.5}},
		{name: "bad bucket", cfg: Config{Bucket: "a.b"}, want: []string{"bucket"}},
		{name: "nothing opens", cfg: Config{FailureThreshold: -1}, want: []string{"nothing would open"}},
		{name: "rate out of range", cfg: Config{FailureRate: 1.5}, want: []string{"failure rate"}},
		{name: "rate NaN", cfg: Config{FailureRate: math.NaN()}, want: []string{"failure rate"}},
		{
			name: "every problem at once",
			cfg: Config{OpenFor: -1, HalfOpenProbes: -1, SuccessesToClose: -1, ProbeTimeout: -1,
				RateWindow: time.Millisecond, RateMinRequests: -1},
			want: []string{"open for", "half-open probes", "successes to close", "probe timeout", "rate window", "min requests"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if err := tt.cfg.WithDefaults().Validate(); err != nil {
					t.Fatalf("WithDefaults().Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Bucket != "switchyard_breakers" || d.FailureThreshold != 5 || d.OpenFor != 30*time.Second ||
		d.HalfOpenProbes != 1 || d.SuccessesToClose != 1 || d.ProbeTimeout != 30*time.Second {
		t.Errorf("defaults = %+v", d)
	}
}

func TestKVKeyRoundTrip(t *testing.T) {
	tests := []struct{ in, kv string }{
		{"openai", "openai"},
		{"anthropic/claude-haiku-4-5", "anthropic/claude-haiku-4-5"},
		{"openai/gpt-4.1", "openai/gpt-4=2E1"},
		{"openrouter/meta-llama/llama-3.1-8b:free", "openrouter/meta-llama/llama-3=2E1-8b=3Afree"},
		{"a=b c*>", "a=3Db=20c=2A=3E"},
		{".lead", "=2Elead"},
		{"ünï", "=C3=BCn=C3=AF"},
	}
	for _, tt := range tests {
		got, err := kvKey(tt.in)
		if err != nil || got != tt.kv {
			t.Errorf("kvKey(%q) = %q, %v; want %q", tt.in, got, err, tt.kv)
			continue
		}
		back, err := breakerKey(got)
		if err != nil || back != tt.in {
			t.Errorf("breakerKey(%q) = %q, %v; want %q", got, back, err, tt.in)
		}
	}
	if _, err := kvKey(""); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("kvKey(\"\") error = %v", err)
	}
	for _, bad := range []string{"x=", "x=4", "x=ZZ"} {
		if _, err := breakerKey(bad); err == nil {
			t.Errorf("breakerKey(%q) = nil error", bad)
		}
	}
}

func TestThresholdOpens(t *testing.T) {
	env := startNATS(t)
	tests := []struct {
		threshold int
	}{{1}, {3}, {5}}
	for _, tt := range tests {
		t.Run("threshold_"+strconv.Itoa(tt.threshold), func(t *testing.T) {
			cfg := Config{Bucket: "thr" + strconv.Itoa(tt.threshold), FailureThreshold: tt.threshold}
			b := env.replica(t, cfg, newClock())
			const key = "openai/gpt-4o-mini"
			if tt.threshold > 1 {
				fail(t, b, key, tt.threshold-1)
				if got := b.State(key); got != StateClosed {
					t.Fatalf("after %d failures state = %s", tt.threshold-1, got)
				}
				// A success resets the consecutive count.
				recordOutcome(t, b, allow(t, b, key), true)
				if got := b.Status(key).Failures; got != 0 {
					t.Fatalf("failures after success = %d", got)
				}
				fail(t, b, key, tt.threshold-1)
				if got := b.State(key); got != StateClosed {
					t.Fatalf("after reset and %d failures state = %s", tt.threshold-1, got)
				}
			}
			fail(t, b, key, 1)
			st := b.Status(key)
			if st.State != StateOpen || st.Failures != tt.threshold {
				t.Fatalf("status = %+v, want open with %d failures", st, tt.threshold)
			}
			// Open rejects immediately, without a round trip.
			for range 3 {
				if p := allow(t, b, key); p.Allowed() {
					t.Fatal("open breaker allowed a call")
				}
			}
			if err := b.Record(context.Background(), Permit{key: key}, false); !errors.Is(err, ErrNotPermitted) {
				t.Errorf("Record(refused permit) = %v", err)
			}
			// Other keys are unaffected.
			if !allow(t, b, "openai/gpt-4o").Allowed() || !allow(t, b, "openai").Allowed() {
				t.Error("an unrelated key is not closed")
			}
		})
	}
}

func TestOpenRejectsUntilOpenFor(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	b := env.replica(t, Config{FailureThreshold: 2, OpenFor: 10 * time.Second}, clock)
	const key = "gemini"
	fail(t, b, key, 2)
	if b.State(key) != StateOpen {
		t.Fatal("not open")
	}
	clock.Advance(10*time.Second - time.Nanosecond)
	if allow(t, b, key).Allowed() {
		t.Fatal("allowed before OpenFor elapsed")
	}
	clock.Advance(time.Nanosecond)
	p := allow(t, b, key)
	if !p.Allowed() || !p.Trial() {
		t.Fatalf("after OpenFor: permit %+v, want a trial", p)
	}
	if b.State(key) != StateHalfOpen {
		t.Fatalf("state = %s, want half_open", b.State(key))
	}
}

func TestHalfOpenAdmitsExactlyProbesAcrossReplicas(t *testing.T) {
	env := startNATS(t)
	for _, probes := range []int{1, 2, 3} {
		t.Run("probes_"+strconv.Itoa(probes), func(t *testing.T) {
			clock := newClock()
			cfg := Config{Bucket: "probes" + strconv.Itoa(probes), FailureThreshold: 1, HalfOpenProbes: probes, OpenFor: time.Second}
			r1 := env.replica(t, cfg, clock)
			r2 := env.replica(t, cfg, clock)
			const key = "anthropic/claude-haiku-4-5"
			fail(t, r1, key, 1)
			waitState(t, key, StateOpen, r1, r2)
			clock.Advance(time.Second)

			admitted := int64(len(raceAllow(t, []*Breakers{r1, r2}, key, 8)))
			if got := admitted; got != int64(probes) {
				t.Fatalf("admitted %d trial calls across two replicas, want exactly %d", got, probes)
			}
			waitState(t, key, StateHalfOpen, r1, r2)
			for _, b := range []*Breakers{r1, r2} {
				testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d probes on %s", probes, b.id), func() bool { return b.Status(key).Probes == probes })
			}
		})
	}
}

func TestHalfOpenOutcome(t *testing.T) {
	env := startNATS(t)
	tests := []struct {
		name      string
		toClose   int
		outcomes  []bool
		want      State
		wantAlert []State
	}{
		{"success closes", 1, []bool{true}, StateClosed, []State{StateOpen, StateHalfOpen, StateClosed}},
		{"failure re-opens", 1, []bool{false}, StateOpen, []State{StateOpen, StateHalfOpen, StateOpen}},
		{"two successes close", 2, []bool{true, true}, StateClosed, []State{StateOpen, StateHalfOpen, StateClosed}},
		{"one success is not enough", 2, []bool{true}, StateHalfOpen, []State{StateOpen, StateHalfOpen}},
		{"failure after a success re-opens", 2, []bool{true, false}, StateOpen, []State{StateOpen, StateHalfOpen, StateOpen}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			cfg := Config{Bucket: "outcome" + strconv.Itoa(i), FailureThreshold: 1, SuccessesToClose: tt.toClose, OpenFor: time.Second}
			sink := env.alerts(t)
			r1 := env.replica(t, cfg, clock)
			r2 := env.replica(t, cfg, clock)
			key := "vendor-" + strconv.Itoa(i) + "/model"
			fail(t, r1, key, 1)
			waitState(t, key, StateOpen, r1, r2)
			clock.Advance(time.Second)
			for j, ok := range tt.outcomes {
				b := []*Breakers{r2, r1}[j%2] // alternate replicas
				p := allow(t, b, key)
				if !p.Allowed() || !p.Trial() {
					t.Fatalf("trial %d refused: %+v (state %s)", j, p, b.State(key))
				}
				recordOutcome(t, b, p, ok)
				converge(t, key, r1, r2)
			}
			waitState(t, key, tt.want, r1, r2)
			got := sink.waitAlerts(t, len(tt.wantAlert))
			if len(got) != len(tt.wantAlert) {
				t.Fatalf("alerts = %+v, want transitions to %v", got, tt.wantAlert)
			}
			for j, a := range got {
				if a.To != tt.wantAlert[j] || a.Key != key || a.Kind != AlertKind {
					t.Errorf("alert %d = %+v, want to=%s", j, a, tt.wantAlert[j])
				}
			}
			if tt.want == StateOpen {
				// Re-opened: refused again until OpenFor elapses anew.
				if allow(t, r1, key).Allowed() || allow(t, r2, key).Allowed() {
					t.Error("re-opened breaker allowed a call")
				}
			}
			if tt.want == StateClosed {
				if st := r1.Status(key); st.Failures != 0 || st.Probes != 0 {
					t.Errorf("closed status = %+v", st)
				}
				if p := allow(t, r2, key); !p.Allowed() || p.Trial() {
					t.Errorf("closed permit = %+v", p)
				}
			}
		})
	}
}

// Two replicas race failures, trials and outcomes: each transition is
// written once and alerted once.
func TestAlertsExactlyOncePerTransition(t *testing.T) {
	env := startNATS(t)
	sink := env.alerts(t)
	clock := newClock()
	cfg := Config{FailureThreshold: 3, HalfOpenProbes: 2, OpenFor: 5 * time.Second}
	r1 := env.replica(t, cfg, clock)
	r2 := env.replica(t, cfg, clock)
	replicas := []*Breakers{r1, r2}
	const key = "openai/gpt-4.1"
	ctx := context.Background()

	// Every worker holds a permit granted while closed, then all fail at once.
	var permits []Permit
	for i := range 20 {
		permits = append(permits, allow(t, replicas[i%2], key))
	}
	var wg sync.WaitGroup
	for i, p := range permits {
		wg.Go(func() {
			if err := replicas[i%2].Record(ctx, p, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	waitState(t, key, StateOpen, r1, r2)

	// Both replicas race to move it to half-open.
	clock.Advance(5 * time.Second)
	trials := raceAllow(t, replicas, key, 10)
	n := len(trials)
	for _, tr := range trials {
		wg.Go(func() {
			if err := tr.b.Record(ctx, tr.p, true); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n != 2 {
		t.Fatalf("%d trials, want 2", n)
	}
	waitState(t, key, StateClosed, r1, r2)

	got := sink.waitAlerts(t, 3)
	want := []State{StateOpen, StateHalfOpen, StateClosed}
	if len(got) != len(want) {
		t.Fatalf("published %d alerts %+v, want %d", len(got), got, len(want))
	}
	ids := map[string]bool{}
	for i, a := range got {
		if a.To != want[i] || a.Key != key {
			t.Errorf("alert %d = %+v, want to %s", i, a, want[i])
		}
		wantID := a.MsgID()
		if a.msgID != wantID || ids[wantID] {
			t.Errorf("alert %d Nats-Msg-Id = %q, want unique %q", i, a.msgID, wantID)
		}
		ids[wantID] = true
	}
	if got[0].Failures != 3 || got[0].From != StateClosed {
		t.Errorf("open alert = %+v, want 3 failures from closed", got[0])
	}
	if got := alertStreamMsgs(t, env); got != 3 {
		t.Errorf("LLM_ALERTS holds %d messages, want 3", got)
	}
}

func TestProbeTimeoutRecovers(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	cfg := Config{FailureThreshold: 1, OpenFor: time.Second, ProbeTimeout: 10 * time.Second}
	r1 := env.replica(t, cfg, clock)
	r2 := env.replica(t, cfg, clock)
	const key = "openrouter/meta-llama/llama-3.1-8b:free"
	fail(t, r1, key, 1)
	waitState(t, key, StateOpen, r1, r2)
	clock.Advance(time.Second)

	leaked := allow(t, r1, key) // r1 "crashes": never recorded
	if !leaked.Trial() {
		t.Fatal("no trial permit")
	}
	waitState(t, key, StateHalfOpen, r2)
	testkit.Eventually(t, 5*time.Second, "r2 to see the probe", func() bool { return r2.Status(key).Probes == 1 })
	clock.Advance(10*time.Second - time.Nanosecond)
	if allow(t, r2, key).Allowed() {
		t.Fatal("second trial admitted before the first expired")
	}
	clock.Advance(time.Nanosecond)
	p := allow(t, r2, key)
	if !p.Trial() {
		t.Fatalf("trial not admitted after ProbeTimeout: %+v", p)
	}
	if st := r2.Status(key); st.Probes != 1 {
		t.Errorf("probes = %d, want the expired one replaced", st.Probes)
	}
	recordOutcome(t, r2, p, true)
	waitState(t, key, StateClosed, r1, r2)

	// The leaked permit's late outcome is stale and ignored.
	recordOutcome(t, r1, leaked, false)
	if got := r1.State(key); got != StateClosed {
		t.Errorf("stale trial outcome moved the breaker to %s", got)
	}
}

func TestStaleAndReleasedPermits(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	b := env.replica(t, Config{FailureThreshold: 2, OpenFor: time.Second}, clock)
	const key = "gemini/gemini-2.0-flash"
	early := allow(t, b, key)
	fail(t, b, key, 2)
	// Outcomes of calls allowed before the breaker opened are ignored.
	recordOutcome(t, b, early, true)
	if st := b.Status(key); st.State != StateOpen || st.Failures != 2 {
		t.Fatalf("status = %+v", st)
	}
	clock.Advance(time.Second)
	p := allow(t, b, key)
	if !p.Trial() {
		t.Fatal("no trial")
	}
	if allow(t, b, key).Allowed() {
		t.Fatal("second trial admitted")
	}
	// Release frees the slot at once, without an outcome.
	if err := b.Release(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(key); st.State != StateHalfOpen || st.Probes != 0 {
		t.Fatalf("after release status = %+v", st)
	}
	if !allow(t, b, key).Trial() {
		t.Fatal("slot not freed by Release")
	}
	if err := b.Release(context.Background(), allow(t, b, "other")); err != nil {
		t.Errorf("Release(closed permit) = %v", err)
	}
}

func TestFailureRate(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	b := env.replica(t, Config{FailureThreshold: -1, FailureRate: 0.5, RateMinRequests: 4, RateWindow: 10 * time.Second}, clock)
	const key = "openai"
	outcomes := []bool{true, false, true, true, false, true, false}
	// Calls 1..4 hold 1 failure in 4; calls 1..5 hold 2 in 5; 6: 2 in 6;
	// 7: 3 in 7 (43%). Nothing opens yet.
	for _, ok := range outcomes {
		recordOutcome(t, b, allow(t, b, key), ok)
	}
	if b.State(key) != StateClosed {
		t.Fatalf("opened below the rate: %+v", b.Status(key))
	}
	// The window slides: after 10s the old calls no longer count.
	clock.Advance(11 * time.Second)
	for _, ok := range []bool{true, false, true} {
		recordOutcome(t, b, allow(t, b, key), ok)
	}
	if b.State(key) != StateClosed {
		t.Fatal("opened with 3 calls, fewer than RateMinRequests")
	}
	recordOutcome(t, b, allow(t, b, key), false) // 2 failures in 4 = 50%
	st := b.Status(key)
	if st.State != StateOpen || !strings.Contains(st.Reason, "failure rate") || st.Failures != 2 {
		t.Fatalf("status = %+v, want open by failure rate", st)
	}
}

func TestSharedStateSurvivesRestartAndReset(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	cfg := Config{FailureThreshold: 1}
	r1 := env.replica(t, cfg, clock)
	const key = "anthropic/claude-sonnet-4.5"
	fail(t, r1, key, 1)
	// A replica started later loads the state before New returns.
	r2 := env.replica(t, cfg, clock)
	if got := r2.State(key); got != StateOpen {
		t.Fatalf("new replica sees %s, want open", got)
	}
	if allow(t, r2, key).Allowed() {
		t.Fatal("new replica allowed a call on an open breaker")
	}
	// An operator resets it by deleting the key.
	kv, err := env.js.KeyValue(context.Background(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	kk, _ := kvKey(key)
	if err := kv.Delete(context.Background(), kk); err != nil {
		t.Fatal(err)
	}
	waitState(t, key, StateClosed, r1, r2)
	// It works from there, writing over the delete marker.
	fail(t, r2, key, 1)
	waitState(t, key, StateOpen, r1, r2)
}

func TestNewValidates(t *testing.T) {
	env := startNATS(t)
	ctx := context.Background()
	if _, err := New(ctx, env.js, Config{OpenFor: -1}, Deps{}); err == nil {
		t.Error("New accepted an invalid config")
	}
	if _, err := New(ctx, nil, Config{}, Deps{}); err == nil {
		t.Error("New accepted a nil JetStream")
	}
	b, err := New(ctx, env.js, Config{}, Deps{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Allow(ctx, ""); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Allow(\"\") = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Record(ctx, allow(t, b, "x"), false); !errors.Is(err, ErrClosed) {
		t.Errorf("Record after Close = %v", err)
	}
}

// Many goroutines on two replicas drive one breaker through its whole
// cycle while the clock moves: no errors, and never more outstanding trial
// calls than HalfOpenProbes in any half-open period.
func TestConcurrentReplicas(t *testing.T) {
	env := startNATS(t)
	clock := newClock()
	const probes = 2
	cfg := Config{FailureThreshold: 3, HalfOpenProbes: probes, SuccessesToClose: 2, OpenFor: time.Second, ProbeTimeout: time.Hour}
	replicas := []*Breakers{env.replica(t, cfg, clock), env.replica(t, cfg, clock)}
	keys := []string{"openai/gpt-4o", "anthropic"}
	ctx := context.Background()

	var mu sync.Mutex
	outstanding := map[string]int{} // key#gen → trial permits in flight
	maxOutstanding := 0
	var allowed, trials, refused atomic.Int64

	stop := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				clock.Advance(250 * time.Millisecond)
			}
		}
	})
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for w := range 12 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; time.Now().Before(deadline); i++ {
				b := replicas[(w+i)%2]
				key := keys[rng.IntN(len(keys))]
				p, err := b.Allow(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				if !p.Allowed() {
					refused.Add(1)
					time.Sleep(100 * time.Microsecond)
					continue
				}
				allowed.Add(1)
				id := key + "#" + strconv.FormatUint(p.gen, 10)
				if p.Trial() {
					trials.Add(1)
					mu.Lock()
					outstanding[id]++
					maxOutstanding = max(maxOutstanding, outstanding[id])
					mu.Unlock()
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
				if p.Trial() {
					mu.Lock()
					outstanding[id]--
					mu.Unlock()
				}
				if err := b.Record(ctx, p, rng.IntN(10) < 6); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	ticker.Wait()
	t.Logf("allowed %d (trials %d), refused %d, max outstanding trials %d", allowed.Load(), trials.Load(), refused.Load(), maxOutstanding)
	if maxOutstanding > probes {
		t.Errorf("%d trial calls outstanding at once, limit %d", maxOutstanding, probes)
	}
	if trials.Load() == 0 || refused.Load() == 0 {
		t.Error("the breakers never went through open and half-open")
	}
	// Both replicas converge on the same state.
	for _, key := range keys {
		testkit.Eventually(t, 5*time.Second, "replicas to agree on "+key, func() bool {
			return replicas[0].Status(key).Revision == replicas[1].Status(key).Revision
		})
	}
}

func TestAllowClosedDoesNotAllocate(t *testing.T) {
	env := startNATS(t)
	b := env.replica(t, Config{}, nil)
	ctx := context.Background()
	const key = "openai/gpt-4o-mini"
	fail(t, b, key, 1)
	recordOutcome(t, b, allow(t, b, key), true) // known key, closed
	for _, k := range []string{key, "never-seen"} {
		if n := testing.AllocsPerRun(1000, func() {
			if p, _ := b.Allow(ctx, k); !p.Allowed() {
				t.Fatal("refused")
			}
		}); n != 0 {
			t.Errorf("Allow(%s) allocates %.1f times per call", k, n)
		}
	}
}

func BenchmarkAllowClosed(b *testing.B) {
	env := startNATS(b)
	br := env.replica(b, Config{}, nil)
	ctx := context.Background()
	const key = "openai/gpt-4o-mini"
	fail(b, br, key, 1)
	recordOutcome(b, br, allow(b, br, key), true)
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		fail(b, br, k, 1) // a realistic number of known keys
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, _ := br.Allow(ctx, key); !p.Allowed() {
				b.Fatal("refused")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if p, _ := br.Allow(ctx, key); !p.Allowed() {
					b.Fatal("refused")
				}
			}
		})
	})
}
