// Package hedge coordinates the branches of a hedged request across
// stages and replicas through a JetStream KV bucket: the first branch with
// an acceptable answer wins (a compare-and-create), a branch not yet started
// is cancelled once another has won, and the request fails only when every
// branch has failed.
package hedge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// DefaultBucket holds the branch outcomes; entries live 10 minutes.
const DefaultBucket = "switchyard_hedges"

// Tracker records branch outcomes.
type Tracker struct {
	kv jetstream.KeyValue
}

// New opens (creating if needed) the bucket.
func New(ctx context.Context, js jetstream.JetStream, bucket string) (*Tracker, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "hedged request branches: winner and failures",
		TTL:         10 * time.Minute,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("hedge bucket: %w", err)
	}
	return &Tracker{kv: kv}, nil
}

// name maps a delivery key (any characters) to a KV-safe token.
func name(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

// Win claims the request for branch; it is true for exactly one branch,
// and stays true for that branch when its handler runs again after a
// redelivery (so the winner's reply is never lost).
func (t *Tracker) Win(ctx context.Context, key string, branch int) (bool, error) {
	_, err := t.kv.Create(ctx, name(key)+".won", []byte(strconv.Itoa(branch)))
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := t.kv.Get(ctx, name(key)+".won")
		if gerr != nil {
			return false, gerr
		}
		return string(e.Value()) == strconv.Itoa(branch), nil
	}
	return err == nil, err
}

// Done records that branch has finished (won, lost, failed or was skipped)
// having spent costUSD over calls vendor calls, and reports whether every
// branch (of branches) is now done, with their total cost and calls. The
// router settles a hedged request's budget then, so the loser's cost is
// charged too. Recording a branch again overwrites it (idempotent).
func (t *Tracker) Done(ctx context.Context, key string, branch, branches int, costUSD float64, calls int) (all bool, totalUSD float64, totalCalls int, err error) {
	n := name(key)
	val := strconv.FormatFloat(costUSD, 'g', -1, 64) + " " + strconv.Itoa(calls)
	if _, err := t.kv.Put(ctx, n+".done."+strconv.Itoa(branch), []byte(val)); err != nil {
		return false, 0, 0, err
	}
	for b := range branches {
		e, err := t.kv.Get(ctx, n+".done."+strconv.Itoa(b))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, 0, 0, nil
		}
		if err != nil {
			return false, 0, 0, err
		}
		var c float64
		var k int
		if _, err := fmt.Sscanf(string(e.Value()), "%g %d", &c, &k); err != nil {
			return false, 0, 0, fmt.Errorf("hedge: branch record %q: %w", e.Value(), err)
		}
		totalUSD, totalCalls = totalUSD+c, totalCalls+k
	}
	return true, totalUSD, totalCalls, nil
}

// Won reports whether some branch has already won.
func (t *Tracker) Won(ctx context.Context, key string) (bool, error) {
	_, err := t.kv.Get(ctx, name(key)+".won")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// CancelWhenWon returns a context that is cancelled as soon as some branch
// wins the request, so a losing branch's vendor call in flight is cut
// short. stop releases the watch.
func (t *Tracker) CancelWhenWon(ctx context.Context, key string) (context.Context, func()) {
	cctx, cancel := context.WithCancel(ctx)
	w, err := t.kv.Watch(cctx, name(key)+".won")
	if err != nil {
		return cctx, cancel
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-cctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && e.Operation() == jetstream.KeyValuePut {
					cancel()
					return
				}
			}
		}
	}()
	return cctx, cancel
}

// Fail records that branch failed and reports whether all branches (of
// branches in total) have now failed. Two branches failing at once both see
// it; the request is then finished twice, which the reply's and the
// telemetry's message ids deduplicate.
func (t *Tracker) Fail(ctx context.Context, key string, branch, branches int) (allFailed bool, err error) {
	n := name(key)
	if _, err := t.kv.Put(ctx, n+".failed."+strconv.Itoa(branch), nil); err != nil {
		return false, err
	}
	for b := range branches {
		if _, err := t.kv.Get(ctx, n+".failed."+strconv.Itoa(b)); err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return false, nil
			}
			return false, err
		}
	}
	return true, nil
}

// Budget caps the share of a tenant's requests that are hedged, over a
// sliding minute, per router replica.
type Budget struct {
	mu      sync.Mutex
	tenants map[string]*window
}

type window struct {
	start            time.Time
	requests, hedges int
}

// NewBudget returns an empty budget.
func NewBudget() *Budget { return &Budget{tenants: map[string]*window{}} }

// Allow counts a request and says whether it may be hedged under ratio.
// It counts every call: a router uses Tracker.Admit, which counts each
// request once however often its message is delivered.
func (b *Budget) Allow(tenant string, ratio float64, now time.Time) bool {
	ok, _ := b.count(tenant, ratio, now)
	return ok
}

// count is Allow returning also how to take the count back.
func (b *Budget) count(tenant string, ratio float64, now time.Time) (bool, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.tenants[tenant]
	if w == nil || now.Sub(w.start) > time.Minute {
		w = &window{start: now}
		b.tenants[tenant] = w
	}
	w.requests++
	hedged := float64(w.hedges+1) <= ratio*float64(w.requests)
	if hedged {
		w.hedges++
	}
	return hedged, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		// A window started since holds no count of this request.
		if w.requests > 0 {
			w.requests--
		}
		if hedged && w.hedges > 0 {
			w.hedges--
		}
	}
}

// Admit says whether the request key of tenant may be hedged under ratio,
// counting it against b once. The first decision is recorded in the bucket
// (a compare-and-create) before any branch is dispatched, so a redelivered
// router message (its ack was lost, or the router stopped after counting),
// on this replica or another, gets the same decision and is not counted
// again: the ratio holds, and a redelivery never adds or drops a branch.
func (t *Tracker) Admit(ctx context.Context, b *Budget, tenant, key string, ratio float64, now time.Time) (bool, error) {
	hedged, undo := b.count(tenant, ratio, now)
	val := []byte("0")
	if hedged {
		val = []byte("1")
	}
	_, err := t.kv.Create(ctx, name(key)+".admitted", val)
	if err == nil {
		return hedged, nil
	}
	undo()
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, err
	}
	e, err := t.kv.Get(ctx, name(key)+".admitted")
	if err != nil {
		return false, err
	}
	return string(e.Value()) == "1", nil
}
