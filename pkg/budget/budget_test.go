package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/policy"
)

type limits = policy.Budget

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "zero is all defaults", cfg: Config{}},
		{name: "max age 40 days", cfg: Config{MaxAge: 40 * 24 * time.Hour}},
		{name: "bad bucket", cfg: Config{Bucket: "a.b"}, want: []string{"bucket"}},
		{
			name: "every problem at once",
			cfg:  Config{ReservationTTL: -1, LateSettle: -1, MaxAge: time.Hour},
			want: []string{"reservation ttl", "late settle", "max age"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
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
	if d.Bucket != "switchyard_budgets" || d.ReservationTTL != 10*time.Minute {
		t.Errorf("defaults = %+v", d)
	}
}

func TestWindowKey(t *testing.T) {
	tests := []struct{ tenant, kind, period, want string }{
		{"acme", Day, "20261123", "acme.d.20261123"},
		{"acme", Month, "202611", "acme.m.202611"},
		{"acme.eu", Day, "20261123", "acme=2Eeu.d.20261123"},
		{"a b/c=*>", Month, "202611", "a=20b=2Fc=3D=2A=3E.m.202611"},
	}
	for _, tt := range tests {
		if got := windowKey(tt.tenant, tt.kind, tt.period); got != tt.want {
			t.Errorf("windowKey(%q) = %q, want %q", tt.tenant, got, tt.want)
		}
	}
}

// TestReserveLimits checks one Reserve against windows already holding some
// reservations (and some settled spend).
func TestReserveLimits(t *testing.T) {
	env := startNATS(t)
	b := env.replica(t, Config{}, newClock(t0))

	tests := []struct {
		name     string
		limits   limits
		reserved []float64 // held before
		settled  []float64 // reserved then settled at this actual cost
		estimate float64
		want     error
	}{
		{name: "unlimited", limits: limits{}, reserved: []float64{100, 200}, estimate: 1e6},
		{name: "fits", limits: limits{USDPerDay: 1}, reserved: []float64{0.5}, estimate: 0.4},
		{name: "fills exactly", limits: limits{USDPerDay: 1}, reserved: []float64{0.1, 0.2, 0.3}, estimate: 0.4},
		{name: "over by a nano", limits: limits{USDPerDay: 1}, reserved: []float64{0.5}, estimate: 0.500000001, want: ErrBudgetExceeded},
		{name: "day exceeded", limits: limits{USDPerDay: 1, USDPerMonth: 100}, reserved: []float64{0.9}, estimate: 0.2, want: ErrBudgetExceeded},
		{name: "month exceeded", limits: limits{USDPerDay: 100, USDPerMonth: 1}, reserved: []float64{0.9}, estimate: 0.2, want: ErrBudgetExceeded},
		{name: "settled spend counts", limits: limits{USDPerDay: 1}, settled: []float64{0.7}, estimate: 0.31, want: ErrBudgetExceeded},
		{name: "settled below estimate", limits: limits{USDPerDay: 1}, reserved: []float64{0.2}, settled: []float64{0.3}, estimate: 0.5},
		{name: "estimate alone too big", limits: limits{USDPerMonth: 5}, estimate: 5.01, want: ErrBudgetExceeded},
		{name: "zero estimate on a full budget", limits: limits{USDPerDay: 1}, reserved: []float64{1}, estimate: 0},
		{name: "day quota", limits: limits{RequestsPerDay: 2}, reserved: []float64{0, 0}, estimate: 0, want: ErrQuotaExceeded},
		{name: "month quota", limits: limits{RequestsPerDay: 10, RequestsPerMonth: 3}, reserved: []float64{0, 0}, settled: []float64{0}, estimate: 0, want: ErrQuotaExceeded},
		{name: "quota not reached", limits: limits{RequestsPerDay: 3}, reserved: []float64{0, 0}, estimate: 0},
		{name: "quota checked before usd", limits: limits{USDPerDay: 1, RequestsPerDay: 1}, reserved: []float64{1}, estimate: 1, want: ErrQuotaExceeded},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant := fmt.Sprintf("tenant-%d", i)
			// Set up without limits, then check tt.limits.
			for j, usd := range tt.reserved {
				mustReserve(t, b, tenant, limits{}, usd, fmt.Sprintf("held-%d", j))
			}
			for j, usd := range tt.settled {
				r := mustReserve(t, b, tenant, limits{}, 1, fmt.Sprintf("settled-%d", j))
				mustSettle(t, b, r, usd)
			}
			before := usage(t, b, tenant)
			_, err := b.Reserve(ctxT(t), tenant, tt.limits, tt.estimate, "probe")
			if !errors.Is(err, tt.want) || (err != nil) != (tt.want != nil) {
				t.Fatalf("Reserve = %v, want %v", err, tt.want)
			}
			after := usage(t, b, tenant)
			if tt.want != nil {
				var le *LimitError
				if !errors.As(err, &le) || le.Tenant != tenant {
					t.Fatalf("error %v is not a *LimitError for %s", err, tenant)
				}
				// A refused reservation leaves both windows as they were.
				for _, p := range [][2]WindowUsage{{before.Day, after.Day}, {before.Month, after.Month}} {
					if p[0].Requests != p[1].Requests || !near(p[0].ReservedUSD, p[1].ReservedUSD) {
						t.Errorf("%s window changed by a refused reservation: %+v -> %+v", p[0].Window, p[0], p[1])
					}
				}
				return
			}
			for _, w := range []WindowUsage{after.Day, after.Month} {
				if w.Requests != before.Day.Requests+1 || !near(w.ReservedUSD, before.Day.ReservedUSD+tt.estimate) {
					t.Errorf("%s window after admission: %+v (before %+v)", w.Window, w, before.Day)
				}
			}
		})
	}
}

// raceReserve has n goroutines, alternating between the instances, reserve
// estimate each for tenant at once, and counts the outcomes.
func raceReserve(t *testing.T, bs []*Budgets, tenant string, l limits, n int, estimate float64) (ok, exceeded int) {
	t.Helper()
	var (
		wg          sync.WaitGroup
		okN, exN    atomic.Int32
		start       = make(chan struct{})
		ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	)
	defer cancel()
	for i := range n {
		b := bs[i%len(bs)]
		wg.Go(func() {
			<-start
			_, err := b.Reserve(ctx, tenant, l, estimate, fmt.Sprintf("req-%d", i))
			switch {
			case err == nil:
				okN.Add(1)
			case errors.Is(err, ErrBudgetExceeded):
				exN.Add(1)
			default:
				t.Errorf("Reserve #%d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return int(okN.Load()), int(exN.Load())
}

// Two replicas, 50 concurrent requests, a budget that fits 10 of them.
func TestConcurrentReserveTwoReplicas(t *testing.T) {
	env := startNATS(t)
	clock := newClock(t0)
	bs := []*Budgets{env.replica(t, Config{}, clock), env.replica(t, Config{}, clock)}

	tests := []struct {
		name string
		l    limits
	}{
		{"day limit binds", limits{USDPerDay: 1.0, USDPerMonth: 30}},
		// Every request passes the day window first and 40 are rolled
		// back from it when the month window refuses them.
		{"month limit binds", limits{USDPerMonth: 1.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant := strings.ReplaceAll(tt.name, " ", "-")
			ok, exceeded := raceReserve(t, bs, tenant, tt.l, 50, 0.1)
			if ok != 10 || exceeded != 40 {
				t.Fatalf("%d admitted and %d refused, want 10 and 40", ok, exceeded)
			}
			u := usage(t, bs[1], tenant)
			for _, w := range []WindowUsage{u.Day, u.Month} {
				if w.Requests != 10 || w.Outstanding != 10 || !near(w.ReservedUSD, 1.0) || w.SpentUSD != 0 {
					t.Errorf("%s window: %+v, want 10 requests holding $1.0", w.Window, w)
				}
			}
		})
	}
}

func TestSettleFreesRoom(t *testing.T) {
	env := startNATS(t)
	clock := newClock(t0)
	a, b := env.replica(t, Config{}, clock), env.replica(t, Config{}, clock)
	l := limits{USDPerDay: 1, USDPerMonth: 1}

	var rs []Reservation
	for i := range 10 {
		rs = append(rs, mustReserve(t, a, "acme", l, 0.1, fmt.Sprintf("r%d", i)))
	}
	if _, err := b.Reserve(ctxT(t), "acme", l, 0.05, "r10"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("11th reservation: %v, want ErrBudgetExceeded", err)
	}
	// The call cost half its estimate: $0.05 is free again, on any replica.
	mustSettle(t, b, rs[0], 0.05)
	mustReserve(t, a, "acme", l, 0.05, "r10")
	if _, err := b.Reserve(ctxT(t), "acme", l, 0.000001, "r11"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reservation past a full budget: %v, want ErrBudgetExceeded", err)
	}
	// A request that never reached a vendor gives back its hold and its
	// request.
	if err := a.Release(ctxT(t), rs[1]); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, b, "acme", l, 0.1, "r12")

	u := usage(t, a, "acme")
	if !near(u.Day.SpentUSD, 0.05) || !near(u.Day.ReservedUSD, 0.95) || u.Day.Requests != 11 || u.Day.Outstanding != 10 {
		t.Fatalf("day usage %+v", u.Day)
	}
	if !near(u.Day.USDFraction, 1.0) || u.Day.Fraction() != u.Day.USDFraction || u.Day.LimitUSD != 1 {
		t.Fatalf("day fraction %+v", u.Day)
	}
}

func TestSettleIsIdempotent(t *testing.T) {
	env := startNATS(t)
	clock := newClock(t0)
	a, b := env.replica(t, Config{}, clock), env.replica(t, Config{}, clock)

	r := mustReserve(t, a, "acme", limits{USDPerDay: 10}, 1, "req-1")
	// The reservation travels to another stage as JSON.
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var r2 Reservation
	if err := json.Unmarshal(raw, &r2); err != nil {
		t.Fatal(err)
	}
	if r2 != r {
		t.Fatalf("reservation JSON round trip: %+v != %+v", r2, r)
	}
	mustSettle(t, b, r2, 0.75)
	mustSettle(t, a, r, 0.75) // redelivered
	mustSettle(t, b, r, 5)    // redelivered with another figure: still ignored
	if err := a.Release(ctxT(t), r); err != nil {
		t.Fatal(err)
	}
	// An unknown reservation changes nothing.
	mustSettle(t, a, Reservation{ID: "never", Tenant: "acme", Day: r.Day, Month: r.Month}, 3)

	u := usage(t, b, "acme")
	for _, w := range []WindowUsage{u.Day, u.Month} {
		if !near(w.SpentUSD, 0.75) || w.ReservedUSD != 0 || w.Requests != 1 || w.Outstanding != 0 {
			t.Errorf("%s window after repeated settles: %+v", w.Window, w)
		}
	}
	// Re-reserving an id that is still held does not hold it twice.
	r3 := mustReserve(t, a, "acme", limits{}, 1, "req-2")
	mustReserve(t, b, "acme", limits{}, 1, "req-2")
	if u := usage(t, a, "acme"); u.Day.Requests != 2 || !near(u.Day.ReservedUSD, 1) {
		t.Fatalf("redelivered reserve counted twice: %+v", u.Day)
	}
	mustSettle(t, a, r3, 1)

	if err := a.Settle(ctxT(t), Reservation{}, 1); !errors.Is(err, ErrInvalidReservation) {
		t.Errorf("Settle(zero) = %v", err)
	}
	if err := a.Settle(ctxT(t), r, -1); !errors.Is(err, ErrInvalidAmount) {
		t.Errorf("Settle(-1) = %v", err)
	}
}

func TestRequestQuota(t *testing.T) {
	env := startNATS(t)
	clock := newClock(t0)
	a, b := env.replica(t, Config{}, clock), env.replica(t, Config{}, clock)
	l := limits{RequestsPerDay: 3, RequestsPerMonth: 5}

	var rs []Reservation
	for i := range 3 {
		rs = append(rs, mustReserve(t, []*Budgets{a, b}[i%2], "acme", l, 0.01, fmt.Sprintf("d%d", i)))
	}
	_, err := a.Reserve(ctxT(t), "acme", l, 0.01, "d3")
	var le *LimitError
	if !errors.Is(err, ErrQuotaExceeded) || !errors.As(err, &le) || le.Window != Day || !le.Quota {
		t.Fatalf("4th request of the day: %v, want a day ErrQuotaExceeded", err)
	}
	// Settling does not give the request back; releasing does.
	mustSettle(t, b, rs[0], 0.01)
	if _, err := a.Reserve(ctxT(t), "acme", l, 0.01, "d3"); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("after a settle: %v, want ErrQuotaExceeded", err)
	}
	if err := b.Release(ctxT(t), rs[1]); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, a, "acme", l, 0.01, "d3")

	// The next day the day quota is fresh, the month one is not.
	clock.Advance(24 * time.Hour)
	mustReserve(t, a, "acme", l, 0.01, "e0")
	mustReserve(t, b, "acme", l, 0.01, "e1")
	if _, err := a.Reserve(ctxT(t), "acme", l, 0.01, "e2"); !errors.As(err, &le) || le.Window != Month || !le.Quota {
		t.Fatalf("6th request of the month: %v, want a month quota error", err)
	}
	u := usage(t, a, "acme")
	if u.Day.Requests != 2 || u.Month.Requests != 5 || u.Month.RequestFraction != 1 || u.Day.RequestFraction != 2.0/3 {
		t.Fatalf("usage %+v", u)
	}
}

func TestDayAndMonthRollover(t *testing.T) {
	env := startNATS(t)
	clock := newClock(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	b := env.replica(t, Config{}, clock)
	l := limits{USDPerDay: 1, USDPerMonth: 1.5}

	late := mustReserve(t, b, "acme", l, 1, "nov-30")
	if late.Day != "20261130" || late.Month != "202611" {
		t.Fatalf("reservation windows %s %s", late.Day, late.Month)
	}
	if _, err := b.Reserve(ctxT(t), "acme", l, 0.5, "nov-30b"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("over the day budget: %v", err)
	}

	clock.Advance(2 * time.Minute) // 2026-12-01 00:01 UTC: new day, new month
	dec := mustReserve(t, b, "acme", l, 1, "dec-1")
	if dec.Day != "20261201" || dec.Month != "202612" {
		t.Fatalf("reservation windows %s %s", dec.Day, dec.Month)
	}
	// The settle of a request admitted before midnight goes to November.
	mustSettle(t, b, late, 0.8)
	nov, err := b.UsageAt(ctxT(t), "acme", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if !near(nov.Day.SpentUSD, 0.8) || nov.Day.ReservedUSD != 0 || nov.Day.Period != "20261130" || !near(nov.Month.SpentUSD, 0.8) {
		t.Fatalf("November usage %+v", nov)
	}
	cur := usage(t, b, "acme")
	if cur.Day.Period != "20261201" || cur.Month.Period != "202612" || !near(cur.Day.ReservedUSD, 1) || cur.Day.SpentUSD != 0 {
		t.Fatalf("December usage %+v", cur)
	}

	// Later in December the day budget renews but the month one binds.
	mustSettle(t, b, dec, 1)
	clock.Advance(24 * time.Hour)
	mustReserve(t, b, "acme", l, 0.5, "dec-2")
	_, err = b.Reserve(ctxT(t), "acme", l, 0.01, "dec-2b")
	var le *LimitError
	if !errors.As(err, &le) || le.Window != Month || le.Period != "202612" || le.Quota {
		t.Fatalf("month budget: %v", err)
	}
}

func TestUnsettledReservationsExpire(t *testing.T) {
	env := startNATS(t)
	clock := newClock(t0)
	cfg := Config{ReservationTTL: 10 * time.Minute, LateSettle: time.Hour}
	a, b := env.replica(t, cfg, clock), env.replica(t, cfg, clock)
	l := limits{USDPerDay: 1}

	// A router reserves the whole budget and crashes.
	lost := mustReserve(t, a, "acme", l, 1, "lost")
	if _, err := b.Reserve(ctxT(t), "acme", l, 0.1, "blocked"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("before expiry: %v", err)
	}
	clock.Advance(9 * time.Minute)
	if _, err := b.Reserve(ctxT(t), "acme", l, 0.1, "blocked"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("before expiry: %v", err)
	}
	clock.Advance(time.Minute)
	// Usage already ignores the lapsed hold, before any write.
	if u := usage(t, b, "acme"); u.Day.ReservedUSD != 0 || u.Day.Outstanding != 0 || u.Day.Requests != 1 {
		t.Fatalf("usage after expiry: %+v", u.Day)
	}
	r := mustReserve(t, b, "acme", l, 0.5, "after")

	// A late settle of the lapsed reservation still counts, once.
	mustSettle(t, a, lost, 0.25)
	mustSettle(t, b, lost, 0.25)
	u := usage(t, a, "acme")
	if !near(u.Day.SpentUSD, 0.25) || !near(u.Day.ReservedUSD, 0.5) || u.Day.Requests != 2 {
		t.Fatalf("usage after late settle: %+v", u.Day)
	}
	if _, err := a.Reserve(ctxT(t), "acme", l, 0.26, "too-much"); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("over budget after late settle: %v", err)
	}

	// Past the late-settle window the id is forgotten.
	mustSettle(t, b, r, 0.5)
	lost2 := mustReserve(t, a, "acme", limits{}, 0.1, "lost-2")
	clock.Advance(30 * time.Minute)
	mustReserve(t, b, "acme", limits{}, 0, "tick-1") // a write: lapses lost-2
	mustSettle(t, b, Reservation{ID: "tick-1", Tenant: "acme", Day: r.Day, Month: r.Month}, 0)
	clock.Advance(2 * time.Hour)
	mustReserve(t, b, "acme", limits{}, 0, "tick-2") // a write: forgets lost-2
	mustSettle(t, a, lost2, 7)
	if u := usage(t, a, "acme"); !near(u.Day.SpentUSD, 0.75) || u.Day.Outstanding != 1 {
		t.Fatalf("a settle past the late-settle window was counted: %+v", u.Day)
	}
}

// A reservation the month window refuses is taken back from the day window.
func TestReserveIsAllOrNothing(t *testing.T) {
	env := startNATS(t)
	b := env.replica(t, Config{}, newClock(t0))

	mustReserve(t, b, "acme", limits{}, 0.9, "a")
	_, err := b.Reserve(ctxT(t), "acme", limits{USDPerDay: 10, USDPerMonth: 1}, 0.2, "b")
	if !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("Reserve = %v", err)
	}
	u := usage(t, b, "acme")
	if u.Day.Requests != 1 || !near(u.Day.ReservedUSD, 0.9) || u.Day.Outstanding != 1 {
		t.Fatalf("day window kept the refused hold: %+v", u.Day)
	}
	// An operator reset (deleting a key) starts the window afresh.
	if err := mustKV(t, env).Delete(ctxT(t), windowKey("acme", Day, "20261123")); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, b, "acme", limits{USDPerDay: 0.2}, 0.2, "c")
	if u := usage(t, b, "acme"); u.Day.Requests != 1 || !near(u.Day.ReservedUSD, 0.2) {
		t.Fatalf("day window after reset: %+v", u.Day)
	}
}

func TestInvalidInput(t *testing.T) {
	env := startNATS(t)
	b := env.replica(t, Config{}, nil)
	if _, err := b.Reserve(ctxT(t), "", limits{}, 1, "x"); !errors.Is(err, ErrInvalidTenant) {
		t.Errorf("empty tenant: %v", err)
	}
	for _, v := range []float64{-1, nan(), inf()} {
		if _, err := b.Reserve(ctxT(t), "acme", limits{}, v, "x"); !errors.Is(err, ErrInvalidAmount) {
			t.Errorf("estimate %v: %v", v, err)
		}
	}
	r := mustReserve(t, b, "acme.with dots", limits{}, 1, "")
	if r.ID == "" {
		t.Fatal("no reservation id generated")
	}
	if _, err := mustKV(t, env).Get(ctxT(t), windowKey("acme.with dots", Day, r.Day)); err != nil {
		t.Fatalf("escaped key: %v", err)
	}
}

func BenchmarkReserveSettle(b *testing.B) {
	env := startNATS(b)
	bud := env.replica(b, Config{}, nil)
	ctx := context.Background()
	l := limits{USDPerDay: 1e9, RequestsPerDay: 1 << 30}
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			r, err := bud.Reserve(ctx, "bench", l, 0.01, fmt.Sprintf("s-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			if err := bud.Settle(ctx, r, 0.005); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Parallel: one tenant per goroutine (tenants do not share keys).
	b.Run("parallel-tenants", func(b *testing.B) {
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			tenant := fmt.Sprintf("bench-%d", seq.Add(1))
			i := 0
			for pb.Next() {
				i++
				r, err := bud.Reserve(ctx, tenant, l, 0.01, fmt.Sprintf("p-%d", i))
				if err != nil {
					b.Error(err)
					return
				}
				if err := bud.Settle(ctx, r, 0.005); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	// Parallel on one hot tenant, two replicas: contention on its keys.
	other := env.replica(b, Config{}, nil)
	b.Run("parallel-hot-tenant-2-replicas", func(b *testing.B) {
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			n := seq.Add(1)
			rep := []*Budgets{bud, other}[n%2]
			i := 0
			for pb.Next() {
				i++
				r, err := rep.Reserve(ctx, "hot", l, 0.01, fmt.Sprintf("h-%d-%d", n, i))
				if err != nil {
					b.Error(err)
					return
				}
				if err := rep.Settle(ctx, r, 0.005); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
