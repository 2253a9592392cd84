// Package budget enforces per-tenant budgets (USD) and quotas (requests)
// per UTC day and month, shared by every router replica through a NATS
// JetStream KeyValue bucket (no other datastore).
//
// Each tenant has one KV entry per window: <tenant>.d.20261123 and
// <tenant>.m.202611 (see windowKey), a JSON record of the settled spend,
// the outstanding reservations by id, and the request count. Every change
// is a compare-and-set (Create for a new key, Update with the last revision
// otherwise); on a revision conflict the entry is re-read and the change
// re-derived, so concurrent replicas never lose an update and never admit
// more than a limit allows. Inside one instance the changes of a key are
// also serialised by a local lock, so goroutines of one replica do not
// collide with each other, and the last revision written is cached so the
// common case is one round trip per window.
//
// A request is admitted with Reserve (before any vendor is called) against
// its cost estimate, in the day window then the month window, all or
// nothing. Settle replaces the hold with the actual cost; Release drops it
// for a request that never reached a vendor. Both are idempotent per
// reservation id. A hold never settled (a crashed router) lapses after
// Config.ReservationTTL, at the next write to its window.
package budget

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

const (
	// maxAttempts bounds the compare-and-set retries of one change. Inside
	// an instance changes of a key are serialised, so conflicts only come
	// from other replicas.
	maxAttempts = 32
	// rollbackTimeout bounds the undo of a half-made reservation; it runs
	// detached from the caller's cancellation.
	rollbackTimeout = 5 * time.Second
	bucketHistory   = 5
	// shards of the local per-key locks and caches.
	shards = 64
	// maxCached bounds the cached windows of one shard.
	maxCached = 256
)

// Errors.
var (
	// ErrBudgetExceeded: spent + reserved + estimate would exceed a USD
	// limit. Reserve returns a *LimitError that matches it.
	ErrBudgetExceeded = errors.New("budget: budget exceeded")
	// ErrQuotaExceeded: one more request would exceed a request quota.
	// Reserve returns a *LimitError that matches it.
	ErrQuotaExceeded = errors.New("budget: request quota exceeded")
	// ErrContention is returned when a change lost the compare-and-set
	// race maxAttempts times in a row.
	ErrContention = errors.New("budget: too many concurrent updates")
	// ErrInvalidAmount is returned for a negative, NaN or infinite amount.
	ErrInvalidAmount = errors.New("budget: amount must be a finite number >= 0")
	// ErrInvalidReservation is returned for a zero Reservation.
	ErrInvalidReservation = errors.New("budget: invalid reservation")
)

// Deps are the collaborators of a Budgets set.
type Deps struct {
	Log zerolog.Logger
	// Now is the clock; time.Now when nil. It decides the windows (UTC)
	// and the expiry of reservations, so replicas sharing a bucket need
	// synchronised clocks.
	Now func() time.Time
}

// Reservation is a granted hold on a tenant's budget. It is plain data
// (JSON-encodable), so the stage that settles it may differ from the one
// that reserved it.
type Reservation struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	// EstimateUSD is the amount held in both windows.
	EstimateUSD float64 `json:"estimate_usd"`
	// Day and Month are the periods (20261123, 202611) the request counts
	// in; its settle goes to these windows even after a rollover.
	Day   string `json:"day"`
	Month string `json:"month"`
	// Expires is when the hold lapses if never settled or released.
	Expires time.Time `json:"expires"`
}

// Usage is a tenant's consumption in its current windows.
type Usage struct {
	Tenant string      `json:"tenant"`
	Day    WindowUsage `json:"day"`
	Month  WindowUsage `json:"month"`
}

// WindowUsage is a tenant's consumption in one window.
type WindowUsage struct {
	Window string `json:"window"` // Day or Month
	Period string `json:"period"` // 20261123 or 202611 (UTC)
	// SpentUSD is settled cost; ReservedUSD the live (unexpired) holds.
	SpentUSD    float64 `json:"spent_usd"`
	ReservedUSD float64 `json:"reserved_usd"`
	// Requests counts admitted requests; Outstanding the live holds.
	Requests    int `json:"requests"`
	Outstanding int `json:"outstanding"`
	// LimitUSD and LimitRequests are the limits of the last reservation
	// (0 = unlimited).
	LimitUSD      float64 `json:"limit_usd,omitempty"`
	LimitRequests int     `json:"limit_requests,omitempty"`
	// USDFraction is (spent + reserved) / limit, RequestFraction
	// requests / limit; 0 when unlimited. They may exceed 1 when actual
	// costs overran the estimates.
	USDFraction     float64 `json:"usd_fraction"`
	RequestFraction float64 `json:"request_fraction"`
	// Revision of the KV entry (0: nothing recorded yet).
	Revision uint64 `json:"revision"`
}

// Fraction is the larger of USDFraction and RequestFraction: how close the
// window is to its first limit.
func (u WindowUsage) Fraction() float64 { return math.Max(u.USDFraction, u.RequestFraction) }

// Budgets enforces the budgets of every tenant in one KV bucket. It is safe
// for concurrent use.
type Budgets struct {
	cfg  Config
	d    Deps
	kv   jetstream.KeyValue
	id   string
	seed maphash.Seed
	sh   [shards]shard
}

// shard serialises the changes of the keys hashed to it within this
// instance and caches their last known revision.
type shard struct {
	sem   chan struct{}
	mu    sync.Mutex
	cache map[string]snapshot
	queue map[string][]*pendingUpdate // mutations waiting for their key's turn
}

// snapshot is a (revision, record) pair; rev 0 means the key is absent.
type snapshot struct {
	rev uint64
	w   window
}

// New opens (creating it if needed) the KV bucket. ctx bounds the start-up
// only.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, d Deps) (*Budgets, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, errors.New("budget: JetStream is required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	kv, err := openBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	var buf [6]byte
	if _, err := cryptorand.Read(buf[:]); err != nil {
		return nil, fmt.Errorf("budget: instance id: %w", err)
	}
	b := &Budgets{cfg: cfg, d: d, kv: kv, id: hex.EncodeToString(buf[:]), seed: maphash.MakeSeed()}
	b.d.Log = d.Log.With().Str("component", "budget").Str("bucket", cfg.Bucket).Str("instance", b.id).Logger()
	for i := range b.sh {
		b.sh[i].sem = make(chan struct{}, 1)
		b.sh[i].cache = map[string]snapshot{}
	}
	return b, nil
}

func openBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Switchyard tenant budgets and quotas per day and month",
		History:     bucketHistory,
		Storage:     jetstream.FileStorage,
		TTL:         cfg.MaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	return kv, nil
}

// Config returns the effective configuration (defaults applied).
func (b *Budgets) Config() Config { return b.cfg }

// Reserve admits one request of tenant costing an estimated estimateUSD:
// it checks and holds the estimate in the tenant's current day and month
// windows, all or nothing. A limit that would be exceeded (spent + reserved
// + estimate > USD limit, or requests + 1 > request limit) refuses the
// request with a *LimitError matching ErrBudgetExceeded or
// ErrQuotaExceeded; zero limits are unlimited, but the request is still
// recorded for Usage.
//
// reservationID identifies the request (its envelope id is a good choice):
// reserving an id already held in a window does not hold it twice, so a
// redelivered request is not counted twice. An empty id gets a random one.
// The returned Reservation must be settled or released.
func (b *Budgets) Reserve(ctx context.Context, tenant string, limits policy.Budget, estimateUSD float64, reservationID string) (Reservation, error) {
	if tenant == "" {
		return Reservation{}, ErrInvalidTenant
	}
	if !validAmount(estimateUSD) {
		return Reservation{}, fmt.Errorf("%w: estimate %v", ErrInvalidAmount, estimateUSD)
	}
	if reservationID == "" {
		var buf [12]byte
		if _, err := cryptorand.Read(buf[:]); err != nil {
			return Reservation{}, fmt.Errorf("budget: reservation id: %w", err)
		}
		reservationID = hex.EncodeToString(buf[:])
	}
	now := b.d.Now()
	day, month := periods(now)
	r := Reservation{
		ID:          reservationID,
		Tenant:      tenant,
		EstimateUSD: fromNano(nano(estimateUSD)),
		Day:         day,
		Month:       month,
		Expires:     now.Add(b.cfg.ReservationTTL),
	}
	est := nano(estimateUSD)

	reserve := func(kind, period string, limitUSD float64, limitReq int) (bool, error) {
		var fresh bool
		var lerr error
		err := b.update(ctx, tenant, kind, period, func(w *window, now time.Time) bool {
			fresh, lerr = false, nil
			changed := w.expire(now, b.cfg.LateSettle)
			if _, held := w.Reservations[r.ID]; held {
				return changed
			}
			if lerr = w.admit(r.ID, est, limitUSD, limitReq, r.Expires); lerr != nil {
				return changed
			}
			fresh = true
			return true
		})
		if err != nil {
			return false, err
		}
		return fresh, lerr
	}

	dayFresh, err := reserve(Day, day, limits.USDPerDay, limits.RequestsPerDay)
	if err != nil {
		return Reservation{}, err
	}
	if _, err := reserve(Month, month, limits.USDPerMonth, limits.RequestsPerMonth); err != nil {
		if dayFresh {
			b.undo(tenant, Day, day, r.ID)
		}
		return Reservation{}, err
	}
	return r, nil
}

// undo drops a hold this call made, as if it never happened (the request
// count too). A failure is logged: the hold then lapses after the TTL.
func (b *Budgets) undo(tenant, kind, period, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	err := b.update(ctx, tenant, kind, period, func(w *window, now time.Time) bool {
		changed := w.expire(now, b.cfg.LateSettle)
		if _, ok := w.Reservations[id]; ok {
			delete(w.Reservations, id)
			w.Requests--
			return true
		}
		return changed
	})
	if err != nil {
		b.d.Log.Warn().Err(err).Str("tenant", tenant).Str("window", kind).Str("period", period).Str("reservation", id).
			Msg("budget: roll back of a half-made reservation failed; it lapses after the reservation TTL")
	}
}

// Settle replaces the reservation's hold with its actual cost in both
// windows. It is idempotent: a reservation unknown to a window (already
// settled or released there, or never made) changes nothing, so a
// redelivered settle is not counted twice. A reservation that lapsed less
// than Config.LateSettle ago still has its cost added, once.
func (b *Budgets) Settle(ctx context.Context, r Reservation, actualUSD float64) error {
	if r.ID == "" || r.Tenant == "" || r.Day == "" || r.Month == "" {
		return ErrInvalidReservation
	}
	if !validAmount(actualUSD) {
		return fmt.Errorf("%w: actual %v", ErrInvalidAmount, actualUSD)
	}
	actual := nano(actualUSD)
	return b.finish(ctx, r, func(w *window) {
		w.SpentUSD = fromNano(nano(w.SpentUSD) + actual)
	})
}

// Release drops the reservation of a request that never called a vendor:
// its hold is freed and its request no longer counts. Idempotent like
// Settle.
func (b *Budgets) Release(ctx context.Context, r Reservation) error {
	if r.ID == "" || r.Tenant == "" || r.Day == "" || r.Month == "" {
		return ErrInvalidReservation
	}
	return b.finish(ctx, r, func(w *window) {
		if w.Requests > 0 {
			w.Requests--
		}
	})
}

// finish removes r from both of its windows, applying apply to each window
// that still knew it.
func (b *Budgets) finish(ctx context.Context, r Reservation, apply func(w *window)) error {
	var errs []error
	for _, win := range [...]struct{ kind, period string }{{Day, r.Day}, {Month, r.Month}} {
		err := b.update(ctx, r.Tenant, win.kind, win.period, func(w *window, now time.Time) bool {
			changed := w.expire(now, b.cfg.LateSettle)
			if _, ok := w.Reservations[r.ID]; ok {
				delete(w.Reservations, r.ID)
			} else if _, ok := w.Expired[r.ID]; ok {
				delete(w.Expired, r.ID)
			} else {
				return changed
			}
			apply(w)
			return true
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Usage reports the tenant's current day and month windows. Holds past
// their expiry are not counted as reserved, even before a write drops them.
func (b *Budgets) Usage(ctx context.Context, tenant string) (Usage, error) {
	return b.UsageAt(ctx, tenant, b.d.Now())
}

// UsageAt reports the tenant's day and month windows containing t (UTC).
func (b *Budgets) UsageAt(ctx context.Context, tenant string, t time.Time) (Usage, error) {
	if tenant == "" {
		return Usage{}, ErrInvalidTenant
	}
	now := b.d.Now()
	day, month := periods(t)
	u := Usage{Tenant: tenant}
	for _, x := range [...]struct {
		kind, period string
		out          *WindowUsage
	}{{Day, day, &u.Day}, {Month, month, &u.Month}} {
		s, err := b.fetch(ctx, b.shard(windowKey(tenant, x.kind, x.period)), tenant, x.kind, x.period)
		if err != nil {
			return Usage{}, err
		}
		w := s.w.clone()
		w.expire(now, 0)
		*x.out = WindowUsage{
			Window:        x.kind,
			Period:        x.period,
			SpentUSD:      fromNano(nano(w.SpentUSD)),
			ReservedUSD:   fromNano(w.reservedNano()),
			Requests:      w.Requests,
			Outstanding:   len(w.Reservations),
			LimitUSD:      w.LimitUSD,
			LimitRequests: w.LimitRequests,
			Revision:      s.rev,
		}
		if w.LimitUSD > 0 {
			x.out.USDFraction = (x.out.SpentUSD + x.out.ReservedUSD) / w.LimitUSD
		}
		if w.LimitRequests > 0 {
			x.out.RequestFraction = float64(w.Requests) / float64(w.LimitRequests)
		}
	}
	return u, nil
}

func (b *Budgets) shard(key string) *shard {
	return &b.sh[maphash.String(b.seed, key)%shards]
}

// update applies mutate to the window with compare-and-set, re-reading and
// re-deriving on a revision conflict. mutate reports whether it changed
// the record; it may run several times and must derive everything from
// the record it is given.
//
// Concurrent updates of one window are committed together: callers queue
// their mutation, and whoever gets the key's turn applies every queued
// mutation in order and writes once (group commit). Each mutation still
// sees the effect of those before it, as if they ran one by one, but a hot
// tenant costs one KV write per batch instead of one per request.
func (b *Budgets) update(ctx context.Context, tenant, kind, period string, mutate func(w *window, now time.Time) bool) error {
	key := windowKey(tenant, kind, period)
	sh := b.shard(key)
	p := &pendingUpdate{mutate: mutate, done: make(chan error, 1)}
	sh.mu.Lock()
	if sh.queue == nil {
		sh.queue = map[string][]*pendingUpdate{}
	}
	sh.queue[key] = append(sh.queue[key], p)
	sh.mu.Unlock()
	for {
		select {
		case err := <-p.done:
			return err
		case <-ctx.Done():
			sh.mu.Lock()
			q := sh.queue[key]
			for i, x := range q {
				if x == p {
					sh.queue[key] = append(q[:i:i], q[i+1:]...)
					sh.mu.Unlock()
					return ctx.Err()
				}
			}
			sh.mu.Unlock()
			// Already taken into a batch: its outcome decides.
			return <-p.done
		case sh.sem <- struct{}{}:
			sh.mu.Lock()
			batch := sh.queue[key]
			delete(sh.queue, key)
			sh.mu.Unlock()
			if len(batch) > 0 {
				// The batch runs on its own deadline: the other callers'
				// mutations must not fail because this caller gave up.
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				muts := make([]func(*window, time.Time) bool, len(batch))
				for i, x := range batch {
					muts[i] = x.mutate
				}
				err := b.updateBatch(bctx, tenant, kind, period, muts)
				cancel()
				for _, x := range batch {
					x.done <- err
				}
			}
			<-sh.sem
		}
	}
}

type pendingUpdate struct {
	mutate func(w *window, now time.Time) bool
	done   chan error
}

// updateBatch applies the mutations in order to one fresh copy of the
// window and writes it once with compare-and-set.
func (b *Budgets) updateBatch(ctx context.Context, tenant, kind, period string, muts []func(w *window, now time.Time) bool) error {
	key := windowKey(tenant, kind, period)
	sh := b.shard(key)

	// The cached revision is a guess that saves a read when this instance
	// wrote the key last: a write against it fails if another replica
	// wrote since. A decision not to write (a refusal, an unknown
	// reservation) must not rest on a guess, so it is re-taken on a fresh
	// read.
	cur, cached := sh.get(key)
	fresh := !cached
	if fresh {
		var err error
		if cur, err = b.fetch(ctx, sh, tenant, kind, period); err != nil {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		now := b.d.Now()
		next := cur.w.clone()
		changed := false
		for _, mutate := range muts {
			if mutate(&next, now) {
				changed = true
			}
		}
		if !changed {
			if fresh {
				return nil
			}
			var err error
			if cur, err = b.fetch(ctx, sh, tenant, kind, period); err != nil {
				return err
			}
			fresh = true
			continue
		}
		next.normalise()
		next.Updated, next.By = now.UTC(), b.id
		data, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("budget %s: encode: %w", key, err)
		}
		var rev uint64
		if cur.rev == 0 {
			rev, err = b.kv.Create(ctx, key, data)
		} else {
			rev, err = b.kv.Update(ctx, key, data, cur.rev)
		}
		if err == nil {
			sh.put(key, snapshot{rev: rev, w: next})
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			sh.drop(key)
			return fmt.Errorf("budget %s: write: %w", key, err)
		}
		if attempt >= maxAttempts {
			sh.drop(key)
			return fmt.Errorf("budget %s: %w", key, ErrContention)
		}
		if attempt >= 3 {
			// Spread the retries of replicas that keep colliding.
			d := time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if cur, err = b.fetch(ctx, sh, tenant, kind, period); err != nil {
			return err
		}
		fresh = true
	}
}

// fetch reads the latest revision of a window and caches it.
func (b *Budgets) fetch(ctx context.Context, sh *shard, tenant, kind, period string) (snapshot, error) {
	key := windowKey(tenant, kind, period)
	empty := snapshot{w: window{Tenant: tenant, Window: kind, Period: period}}
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Absent, or deleted by an operator (a reset): a fresh window.
		sh.drop(key)
		return empty, nil
	}
	if err != nil {
		return snapshot{}, fmt.Errorf("budget %s: read: %w", key, err)
	}
	s := snapshot{rev: e.Revision(), w: empty.w}
	if err := json.Unmarshal(e.Value(), &s.w); err != nil {
		// A damaged record must not wedge the tenant: it is rewritten from
		// scratch by the next change (losing its counts), loudly.
		b.d.Log.Error().Err(err).Str("key", key).Uint64("revision", s.rev).Msg("budget: damaged window record, starting it afresh")
		s.w = empty.w
	}
	s.w.Tenant, s.w.Window, s.w.Period = tenant, kind, period
	sh.put(key, s)
	return s, nil
}

func (sh *shard) get(key string) (snapshot, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.cache[key]
	return s, ok
}

func (sh *shard) put(key string, s snapshot) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.cache[key]
	if ok && old.rev > s.rev {
		return // a reader raced a writer: keep the newer revision
	}
	if !ok && len(sh.cache) >= maxCached {
		clear(sh.cache)
	}
	sh.cache[key] = s
}

func (sh *shard) drop(key string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.cache, key)
}

func validAmount(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }
