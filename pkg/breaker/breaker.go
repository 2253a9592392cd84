// Package breaker provides circuit breakers per key ("vendor" or
// "vendor/model") whose state is shared by every router replica through a
// NATS JetStream KeyValue bucket.
//
// Each key is one KV entry holding a JSON record (state, generation,
// consecutive failures, open-until time, outstanding half-open probes).
// Every change is a compare-and-set: Create for a new key, Update with the
// last revision otherwise; on a revision conflict the entry is re-read and
// the change re-derived, so concurrent replicas never lose an update and
// never hand out more half-open probes than configured. Each instance keeps
// a local copy of the bucket fed by a KV watch, so Allow on a closed breaker
// is a lock-free memory read with no network round trip and no allocation.
//
// Every state change yields a Transition, reported only by the instance
// whose write won; PublishAlert sends it to llm.alerts.circuit with a
// de-duplication id of key:to:revision.
//
// Operators reset a breaker by deleting its KV key; the breaker is then
// closed with no failures.
package breaker

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

const (
	// maxAttempts bounds the compare-and-set retries of one change.
	maxAttempts = 16
	// alertTimeout bounds one Alert call; it runs detached from the
	// caller's cancellation so a finished request does not lose the alert.
	alertTimeout = 5 * time.Second
	// bucketHistory keeps a few revisions per key for operators
	// (`nats kv history`).
	bucketHistory = 5
)

// Errors.
var (
	// ErrNotPermitted is returned by Record for a permit Allow refused.
	ErrNotPermitted = errors.New("breaker: permit was not granted")
	// ErrContention is returned when a change lost the compare-and-set
	// race maxAttempts times in a row.
	ErrContention = errors.New("breaker: too many concurrent updates")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("breaker: closed")
)

// Deps are the collaborators of a Breakers set.
type Deps struct {
	Log zerolog.Logger
	// Now is the clock; time.Now when nil. Every instance sharing a
	// bucket should use a synchronised clock: open-until and probe
	// expiry times are absolute.
	Now func() time.Time
	// Alert receives every transition this instance wrote. Nil means
	// transitions are only logged. See JetStreamAlert.
	Alert func(ctx context.Context, t Transition) error
}

// Permit is the answer of Allow. A granted permit must be passed to Record
// (or Release) once the call it allowed has finished.
type Permit struct {
	key   string
	gen   uint64
	probe string
	ok    bool
}

// Allowed reports whether the call may go.
func (p Permit) Allowed() bool { return p.ok }

// Key is the breaker key the permit was asked for.
func (p Permit) Key() string { return p.key }

// Trial reports whether the permit is a half-open trial call: its outcome
// decides whether the breaker closes or opens again.
func (p Permit) Trial() bool { return p.probe != "" }

// Status is the locally known state of one breaker.
type Status struct {
	Key       string
	State     State
	Failures  int
	Successes int
	Probes    int
	OpenUntil time.Time
	Since     time.Time
	Reason    string
	Revision  uint64
}

// Breakers is a set of circuit breakers sharing one KV bucket. It is safe
// for concurrent use.
type Breakers struct {
	cfg Config
	d   Deps
	kv  jetstream.KeyValue
	id  string

	probeSeq atomic.Uint64
	entries  atomic.Pointer[map[string]*entry] // copy-on-write
	mu       sync.Mutex                        // serialises copies of entries

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
}

// entry is the local view of one breaker.
type entry struct {
	key   string
	kvKey string
	snap  atomic.Pointer[snapshot]
	// admitting is set while a goroutine of this instance tries to take a
	// half-open slot; others are refused meanwhile instead of piling
	// compare-and-set attempts onto the bucket.
	admitting atomic.Bool
	win       rateWindow
}

// snapshot is an immutable (revision, record) pair.
type snapshot struct {
	rev uint64
	rec record
}

// New opens (creating it if needed) the KV bucket, loads every breaker and
// starts the watch that keeps the local copy current. ctx bounds the
// start-up only; call Close to stop the watch.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, d Deps) (*Breakers, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil {
		return nil, errors.New("breaker: JetStream is required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	kv, err := openBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	id, err := instanceID()
	if err != nil {
		return nil, err
	}
	b := &Breakers{cfg: cfg, d: d, kv: kv, id: id, done: make(chan struct{})}
	b.d.Log = d.Log.With().Str("component", "breaker").Str("bucket", cfg.Bucket).Str("instance", id).Logger()
	empty := map[string]*entry{}
	b.entries.Store(&empty)

	wctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("breaker: watch bucket %s: %w", cfg.Bucket, err)
	}
	ready := make(chan struct{})
	go b.watch(wctx, w, ready)
	select {
	case <-ready:
	case <-ctx.Done():
		b.Close()
		return nil, fmt.Errorf("breaker: loading bucket %s: %w", cfg.Bucket, ctx.Err())
	}
	return b, nil
}

func openBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Switchyard circuit breakers shared by the router replicas",
		History:     bucketHistory,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("breaker: %w", err)
	}
	return kv, nil
}

func instanceID() (string, error) {
	var buf [6]byte
	if _, err := cryptorand.Read(buf[:]); err != nil {
		return "", fmt.Errorf("breaker: instance id: %w", err)
	}
	return hex.EncodeToString(buf[:]), nil
}

// Close stops the watch. Allow and Record keep working on the last known
// state but no longer see other replicas' changes; Close is for shutdown.
func (b *Breakers) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		<-b.done
	})
	return nil
}

// Config returns the effective configuration (defaults applied).
func (b *Breakers) Config() Config { return b.cfg }

// Allow asks whether a call guarded by key may go. A closed breaker answers
// from memory. An open breaker refuses until OpenFor has elapsed; the next
// call then moves it to half-open and takes a trial slot. In half-open at
// most HalfOpenProbes permits are outstanding across all instances.
//
// A non-nil error means the shared state could not be read or written (the
// permit is then refused): callers may treat it as an open breaker or fail
// open, as their policy says.
func (b *Breakers) Allow(ctx context.Context, key string) (Permit, error) {
	e := b.lookup(key)
	if e == nil {
		if key == "" {
			return Permit{}, ErrInvalidKey
		}
		return Permit{key: key, ok: true}, nil
	}
	s := e.snap.Load()
	if s == nil || s.rec.State == StateClosed {
		var gen uint64
		if s != nil {
			gen = s.rec.Gen
		}
		return Permit{key: key, gen: gen, ok: true}, nil
	}
	return b.allowSlow(ctx, e, s)
}

func (b *Breakers) allowSlow(ctx context.Context, e *entry, s *snapshot) (Permit, error) {
	deny := Permit{key: e.key}
	now := b.d.Now()
	switch s.rec.State {
	case StateOpen:
		if now.Before(s.rec.OpenUntil) {
			return deny, nil
		}
	case StateHalfOpen:
		if s.rec.liveProbes(now) >= b.cfg.HalfOpenProbes {
			return deny, nil
		}
	}
	if !e.admitting.CompareAndSwap(false, true) {
		return deny, nil
	}
	defer e.admitting.Store(false)

	var p Permit
	_, err := b.update(ctx, e, func(r *record, now time.Time) bool {
		p = deny
		switch r.State {
		case StateClosed:
			p = Permit{key: e.key, gen: r.Gen, ok: true}
			return false
		case StateOpen:
			if now.Before(r.OpenUntil) {
				return false
			}
			r.State = StateHalfOpen
			r.Gen++
			r.Successes = 0
			r.Probes = nil
			r.Since = now
			r.Reason = "open for " + b.cfg.OpenFor.String() + ": admitting trial calls"
		case StateHalfOpen:
			r.pruneProbes(now)
			if len(r.Probes) >= b.cfg.HalfOpenProbes {
				return false
			}
		}
		id := b.id + "-" + strconv.FormatUint(b.probeSeq.Add(1), 36)
		r.Probes = append(r.Probes, probe{ID: id, Expires: now.Add(b.cfg.ProbeTimeout)})
		p = Permit{key: e.key, gen: r.Gen, probe: id, ok: true}
		return true
	})
	if err != nil {
		return deny, err
	}
	return p, nil
}

// Record reports the outcome of a permitted call. success=false must be
// used for retryable failures only (429, 5xx, timeouts, connection resets);
// a terminal refusal (400, 401, 404, …) says nothing about the vendor's
// health: Release the permit instead, or record it as a success.
//
// Outcomes of permits granted before the breaker last changed state are
// stale and ignored. On a closed breaker a success costs no network round
// trip unless failures have been counted since the last success.
func (b *Breakers) Record(ctx context.Context, p Permit, success bool) error {
	if !p.ok {
		return ErrNotPermitted
	}
	e, err := b.entry(p.key)
	if err != nil {
		return err
	}
	if p.probe != "" {
		return b.recordTrial(ctx, e, p, success)
	}
	var cur record
	if s := e.snap.Load(); s != nil {
		cur = s.rec
	}
	if cur.Gen != p.gen || cur.State != StateClosed {
		return nil // stale: the breaker has moved on
	}
	rateTrip, rateFails := false, 0
	if b.cfg.FailureRate > 0 {
		total, fails := e.win.add(p.gen, b.d.Now(), !success, b.cfg.RateWindow)
		rateTrip = !success && total >= b.cfg.RateMinRequests && float64(fails) >= b.cfg.FailureRate*float64(total)
		rateFails = fails
		if rateTrip {
			b.d.Log.Debug().Str("key", p.key).Int("calls", total).Int("failures", fails).Msg("breaker failure rate reached")
		}
	}
	if success {
		if cur.Failures == 0 {
			return nil
		}
		_, err := b.update(ctx, e, func(r *record, _ time.Time) bool {
			if r.State != StateClosed || r.Gen != p.gen || r.Failures == 0 {
				return false
			}
			r.Failures = 0
			return true
		})
		return err
	}
	var opened bool
	_, err = b.update(ctx, e, func(r *record, now time.Time) bool {
		opened = false
		if r.State != StateClosed || r.Gen != p.gen {
			return false
		}
		r.Failures++
		switch {
		case b.cfg.FailureThreshold > 0 && r.Failures >= b.cfg.FailureThreshold:
			b.open(r, now, r.Failures, strconv.Itoa(r.Failures)+" consecutive retryable failures")
			opened = true
		case rateTrip:
			reason := fmt.Sprintf("failure rate %.0f%% over %s reached (%d failures)", b.cfg.FailureRate*100, b.cfg.RateWindow, rateFails)
			b.open(r, now, rateFails, reason)
			opened = true
		}
		return true
	})
	if err == nil && opened {
		e.win.reset(p.gen + 1)
	}
	return err
}

func (b *Breakers) recordTrial(ctx context.Context, e *entry, p Permit, success bool) error {
	_, err := b.update(ctx, e, func(r *record, now time.Time) bool {
		if r.State != StateHalfOpen || r.Gen != p.gen {
			return false
		}
		r.removeProbe(p.probe)
		r.pruneProbes(now)
		if !success {
			b.open(r, now, 1, "trial call failed")
			return true
		}
		r.Successes++
		if r.Successes >= b.cfg.SuccessesToClose {
			n := r.Successes
			r.State = StateClosed
			r.Gen++
			r.Failures = 0
			r.Successes = 0
			r.Probes = nil
			r.OpenUntil = time.Time{}
			r.Since = now
			r.Reason = strconv.Itoa(n) + " trial call(s) succeeded"
		}
		return true
	})
	return err
}

// Release gives a permit back without an outcome (the call was not made,
// or failed for a reason that says nothing about the vendor's health). A
// trial permit's half-open slot is freed at once instead of after
// ProbeTimeout.
func (b *Breakers) Release(ctx context.Context, p Permit) error {
	if !p.ok || p.probe == "" {
		return nil
	}
	e, err := b.entry(p.key)
	if err != nil {
		return err
	}
	_, err = b.update(ctx, e, func(r *record, _ time.Time) bool {
		if r.State != StateHalfOpen || r.Gen != p.gen {
			return false
		}
		return r.removeProbe(p.probe)
	})
	return err
}

// State is the locally known state of key (closed when unknown). It does
// not move an open breaker whose OpenFor has elapsed: Allow does.
func (b *Breakers) State(key string) State {
	if e := b.lookup(key); e != nil {
		if s := e.snap.Load(); s != nil {
			return s.rec.State
		}
	}
	return StateClosed
}

// Status is the locally known detail of key.
func (b *Breakers) Status(key string) Status {
	st := Status{Key: key}
	if e := b.lookup(key); e != nil {
		if s := e.snap.Load(); s != nil {
			st.State = s.rec.State
			st.Failures = s.rec.Failures
			st.Successes = s.rec.Successes
			st.Probes = len(s.rec.Probes)
			st.OpenUntil = s.rec.OpenUntil
			st.Since = s.rec.Since
			st.Reason = s.rec.Reason
			st.Revision = s.rev
		}
	}
	return st
}

// Keys lists the breaker keys known locally.
func (b *Breakers) Keys() []string {
	m := *b.entries.Load()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// open moves r to open.
func (b *Breakers) open(r *record, now time.Time, failures int, reason string) {
	r.State = StateOpen
	r.Gen++
	r.Failures = failures
	r.Successes = 0
	r.Probes = nil
	r.OpenUntil = now.Add(b.cfg.OpenFor)
	r.Since = now
	r.Reason = reason
}

// update applies mutate to the latest known record of e and writes the
// result with compare-and-set, re-reading and re-applying on conflict.
// mutate gets a private copy and the current time, reports whether there is
// anything to write, and may run several times: it must derive everything
// from its arguments. The instance whose write changes the state reports
// the transition.
func (b *Breakers) update(ctx context.Context, e *entry, mutate func(r *record, now time.Time) bool) (*snapshot, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	cur := e.snap.Load()
	if cur == nil {
		cur = &snapshot{rec: record{Key: e.key}}
	}
	for attempt := 1; ; attempt++ {
		now := b.d.Now()
		next := cur.rec.clone()
		next.Key = e.key
		if !mutate(&next, now) {
			return cur, nil
		}
		next.By = b.id
		data, err := json.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("breaker %s: encode: %w", e.key, err)
		}
		var rev uint64
		if cur.rev == 0 {
			rev, err = b.kv.Create(ctx, e.kvKey, data)
		} else {
			rev, err = b.kv.Update(ctx, e.kvKey, data, cur.rev)
		}
		if err == nil {
			ns := &snapshot{rev: rev, rec: next}
			b.store(e, ns)
			if next.State != cur.rec.State {
				b.transitioned(ctx, cur.rec.State, ns)
			}
			return ns, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, fmt.Errorf("breaker %s: write: %w", e.key, err)
		}
		if attempt >= maxAttempts {
			return nil, fmt.Errorf("breaker %s: %w", e.key, ErrContention)
		}
		if attempt >= 3 {
			// Spread the retries of instances that keep colliding.
			d := time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if cur, err = b.fetch(ctx, e); err != nil {
			return nil, err
		}
	}
}

// fetch reads the latest revision of e from the bucket and caches it.
func (b *Breakers) fetch(ctx context.Context, e *entry) (*snapshot, error) {
	kve, err := b.kv.Get(ctx, e.kvKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Absent or deleted (an operator reset): closed, created afresh.
		return &snapshot{rec: record{Key: e.key}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("breaker %s: read: %w", e.key, err)
	}
	s := &snapshot{rev: kve.Revision(), rec: b.decode(e.key, kve.Value())}
	b.store(e, s)
	return s, nil
}

// decode parses a stored record; a damaged one reads as closed so the next
// write repairs it.
func (b *Breakers) decode(key string, data []byte) record {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		b.d.Log.Error().Err(err).Str("key", key).Msg("breaker record unreadable; treating it as closed")
		return record{Key: key}
	}
	r.Key = key
	return r
}

func (b *Breakers) transitioned(ctx context.Context, from State, s *snapshot) {
	t := Transition{
		Key:      s.rec.Key,
		From:     from,
		To:       s.rec.State,
		At:       s.rec.Since,
		Reason:   s.rec.Reason,
		Failures: s.rec.Failures,
		Revision: s.rev,
		Instance: b.id,
	}
	if t.To == StateClosed {
		t.Failures = 0
	}
	lvl := b.d.Log.Info()
	if t.To == StateOpen {
		lvl = b.d.Log.Warn()
	}
	lvl.Str("key", t.Key).Stringer("from", t.From).Stringer("to", t.To).Str("reason", t.Reason).
		Int("failures", t.Failures).Uint64("revision", t.Revision).Msg("circuit breaker transition")
	if b.d.Alert == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), alertTimeout)
	defer cancel()
	if err := b.d.Alert(actx, t); err != nil {
		b.d.Log.Error().Err(err).Str("key", t.Key).Stringer("to", t.To).Msg("circuit breaker alert failed")
	}
}

// lookup returns the local entry of key, or nil. It neither locks nor
// allocates.
func (b *Breakers) lookup(key string) *entry {
	return (*b.entries.Load())[key]
}

// entry returns the local entry of key, adding it when new.
func (b *Breakers) entry(key string) (*entry, error) {
	if e := b.lookup(key); e != nil {
		return e, nil
	}
	kk, err := kvKey(key)
	if err != nil {
		return nil, err
	}
	return b.add(key, kk), nil
}

func (b *Breakers) add(key, kk string) *entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.entries.Load()
	if e, ok := old[key]; ok {
		return e
	}
	m := make(map[string]*entry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	e := &entry{key: key, kvKey: kk}
	m[key] = e
	b.entries.Store(&m)
	return e
}

// store installs s unless a newer revision is already cached.
func (b *Breakers) store(e *entry, s *snapshot) {
	for {
		old := e.snap.Load()
		if old != nil && old.rev >= s.rev {
			return
		}
		if e.snap.CompareAndSwap(old, s) {
			return
		}
	}
}

// watch keeps the local copy current until ctx is done, re-establishing
// the watch if it ends. ready is closed once the initial values are in.
func (b *Breakers) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	defer close(b.done)
	var once sync.Once
	backoff := 100 * time.Millisecond
	for {
		if w != nil {
			b.consume(ctx, w, func() { once.Do(func() { close(ready) }) })
			_ = w.Stop()
			w = nil
		}
		if ctx.Err() != nil {
			return
		}
		b.d.Log.Warn().Dur("retry_in", backoff).Msg("breaker watch ended; restarting it")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
		var err error
		if w, err = b.kv.WatchAll(ctx); err != nil {
			b.d.Log.Error().Err(err).Msg("breaker watch")
			w = nil
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

func (b *Breakers) consume(ctx context.Context, w jetstream.KeyWatcher, loaded func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case kve, ok := <-w.Updates():
			if !ok {
				return
			}
			if kve == nil {
				loaded()
				continue
			}
			b.apply(kve)
		}
	}
}

func (b *Breakers) apply(kve jetstream.KeyValueEntry) {
	key, err := breakerKey(kve.Key())
	if err != nil {
		b.d.Log.Error().Err(err).Msg("breaker watch: foreign key in bucket")
		return
	}
	e := b.lookup(key)
	if e == nil {
		e = b.add(key, kve.Key())
	}
	s := &snapshot{rev: kve.Revision(), rec: record{Key: key}}
	if op := kve.Operation(); op != jetstream.KeyValueDelete && op != jetstream.KeyValuePurge {
		s.rec = b.decode(key, kve.Value())
	}
	b.store(e, s)
}
