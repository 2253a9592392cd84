package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// RateBucket holds the per-key request counters of the rpm limit, one
// entry per key and minute, shared by every edge replica.
const RateBucket = "edge_key_rate"

// rateWindow is the rpm limit's window.
const rateWindow = time.Minute

// InFlightBucket holds, per key, the requests in flight on every edge
// replica with their deadlines.
const InFlightBucket = "edge_key_inflight"

// inFlightMargin is added to a request's deadline (and the edge's 2 s of
// waiting past it) before its slot counts as free without a release.
const inFlightMargin = 5 * time.Second

// keyLimits enforces a key's limits (apikey.Limits) before a request is
// published. Both hold across every edge replica, whatever way a load
// balancer spreads a key's traffic; keys without limits pay nothing.
//
// RPM: each admitted request increments the key's counter for the current
// minute in a JetStream KV bucket with a compare-and-set on the entry's
// revision, so N replicas together admit at most rpm requests. (Dividing
// the limit by N with a local token bucket on each replica would need N to
// be known and fixed, and would refuse a key whose traffic lands on one
// replica at 1/N of its limit.) The estimate slides: the previous minute's
// count weighs by the part of it still inside the last 60 s, so a burst at
// a minute boundary cannot pass twice the limit.
//
// MaxInFlight: the key's entry lists its requests in flight, each with its
// deadline, updated by compare-and-set on admission and on release. A
// replica that dies mid-request cannot hold a slot for ever: a request
// whose deadline (plus margin) has passed no longer counts.
type keyLimits struct {
	js  jetstream.JetStream
	now func() time.Time

	mu       sync.Mutex
	rate     jetstream.KeyValue // opened on first use
	inFlight jetstream.KeyValue // opened on first use
}

func newKeyLimits(js jetstream.JetStream, now func() time.Time) *keyLimits {
	return &keyLimits{js: js, now: now}
}

// admit returns a release func to call when the request is answered, or
// the 429 to answer with. deadline is when the edge stops waiting for the
// request's reply.
func (l *keyLimits) admit(ctx context.Context, rec *apikey.Record, requestID string, deadline time.Time) (func(), *apiError) {
	release := func() {}
	if rec.MaxInFlight > 0 {
		var aerr *apiError
		if release, aerr = l.acquire(ctx, rec, requestID, deadline); aerr != nil {
			return nil, aerr
		}
	}
	if rec.RPM > 0 {
		if aerr := l.countRequest(ctx, rec); aerr != nil {
			release()
			return nil, aerr
		}
	}
	return release, nil
}

// acquire takes one of the key's in-flight slots.
func (l *keyLimits) acquire(ctx context.Context, rec *apikey.Record, requestID string, deadline time.Time) (func(), *apiError) {
	kv, err := l.bucket(ctx, &l.inFlight, jetstream.KeyValueConfig{Bucket: InFlightBucket,
		Description: "Switchyard edge: requests in flight per API key, with their deadlines (max-in-flight limits)",
		History:     1, TTL: 15 * time.Minute}) // past any request's deadline: an idle key's entry goes away
	if err != nil {
		return nil, unavailable("the in-flight limit store is unavailable")
	}
	full := false
	err = updateInFlight(ctx, kv, rec.ID, l.now(), func(live map[string]int64) bool {
		if len(live) >= rec.MaxInFlight {
			full = true
			return false
		}
		live[requestID] = deadline.Add(inFlightMargin).UnixMilli()
		return true
	})
	if err != nil {
		return nil, unavailable("the in-flight limit store is unavailable")
	}
	if full {
		return nil, &apiError{Status: http.StatusTooManyRequests, Code: "concurrency_limit_exceeded", RetryAfter: 1,
			Message: fmt.Sprintf("this API key already has %d requests in flight (its limit)", rec.MaxInFlight)}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// The client may be gone: release on a context of its own. A
			// release that fails frees the slot at its deadline.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = updateInFlight(rctx, kv, rec.ID, l.now(), func(live map[string]int64) bool {
				_, ok := live[requestID]
				delete(live, requestID)
				return ok
			})
		})
	}, nil
}

// updateInFlight applies change to the key's live requests (expired ones
// dropped) with compare-and-set, retrying on a concurrent update; change
// returns false to write nothing.
func updateInFlight(ctx context.Context, kv jetstream.KeyValue, keyID string, now time.Time, change func(map[string]int64) bool) error {
	for range 50 {
		live := map[string]int64{}
		var rev uint64
		e, err := kv.Get(ctx, keyID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &live); err != nil {
				return fmt.Errorf("in-flight entry %s: %w", keyID, err)
			}
		}
		for id, until := range live {
			if until <= now.UnixMilli() {
				delete(live, id)
			}
		}
		if !change(live) {
			return nil
		}
		data, err := json.Marshal(live)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, keyID, data)
		} else {
			_, err = kv.Update(ctx, keyID, data, rev)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
	return errors.New("in-flight entry " + keyID + ": too many concurrent updates")
}

// bucket opens (or creates) a bucket once, into *kv.
func (l *keyLimits) bucket(ctx context.Context, kv *jetstream.KeyValue, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if *kv != nil {
		return *kv, nil
	}
	b, err := natsx.OpenOrCreateKV(ctx, l.js, cfg)
	if err != nil {
		return nil, err
	}
	*kv = b
	return b, nil
}

// countRequest admits one request under the key's rpm limit, or says when
// to retry.
func (l *keyLimits) countRequest(ctx context.Context, rec *apikey.Record) *apiError {
	// Entries live three windows: long enough to weigh the previous one.
	kv, err := l.bucket(ctx, &l.rate, jetstream.KeyValueConfig{Bucket: RateBucket,
		Description: "Switchyard edge: requests per API key and minute (rpm limits)", History: 1, TTL: 3 * rateWindow})
	if err != nil {
		return unavailable("the rate limit store is unavailable")
	}
	now := l.now()
	win := now.UnixNano() / int64(rateWindow)
	elapsed := time.Duration(now.UnixNano() % int64(rateWindow)) // into the current window
	weight := 1 - float64(elapsed)/float64(rateWindow)           // of the previous window still inside the last 60 s
	prev, _, err := readCount(ctx, kv, fmt.Sprintf("%s.%d", rec.ID, win-1))
	if err != nil {
		return unavailable("the rate limit store is unavailable")
	}
	curKey := fmt.Sprintf("%s.%d", rec.ID, win)
	for range 50 { // compare-and-set: another replica may count at the same time
		cur, rev, err := readCount(ctx, kv, curKey)
		if err != nil {
			return unavailable("the rate limit store is unavailable")
		}
		if float64(prev)*weight+float64(cur)+1 > float64(rec.RPM) {
			return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limit_exceeded",
				RetryAfter: retryAfter(rec.RPM, prev, cur, elapsed),
				Message:    fmt.Sprintf("this API key is limited to %d requests per minute", rec.RPM)}
		}
		next := []byte(strconv.Itoa(cur + 1))
		if rev == 0 {
			_, err = kv.Create(ctx, curKey, next)
		} else {
			_, err = kv.Update(ctx, curKey, next, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return unavailable("the rate limit store is unavailable")
		}
	}
	return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limit_exceeded", RetryAfter: 1,
		Message: "too many concurrent requests on this API key to count them; retry"}
}

// readCount reads a counter; a missing entry is 0 at revision 0.
func readCount(ctx context.Context, kv jetstream.KeyValue, key string) (int, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil {
		return 0, 0, fmt.Errorf("rate counter %s: %w", key, err)
	}
	return n, e.Revision(), nil
}

// retryAfter is the whole seconds until one more request fits: until the
// window ends when the current minute alone is full, else until enough of
// the previous minute has slid out.
func retryAfter(rpm, prev, cur int, elapsed time.Duration) int {
	wait := rateWindow - elapsed
	if cur+1 <= rpm && prev > 0 {
		// prev×(1-e'/W) + cur + 1 ≤ rpm  ⇔  e' ≥ W×(prev-(rpm-1-cur))/prev
		wait = rateWindow*time.Duration(prev-(rpm-1-cur))/time.Duration(prev) - elapsed
	}
	return max(1, int((wait+time.Second-1)/time.Second))
}

func unavailable(msg string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: "internal", Message: msg, RetryAfter: 1}
}
