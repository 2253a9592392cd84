package edge

import (
	"context"
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

// keyLimits enforces a key's limits (apikey.Limits) before a request is
// published.
//
// RPM holds across replicas: each admitted request increments the key's
// counter for the current minute in a JetStream KV bucket with a
// compare-and-set on the entry's revision, so N replicas together admit at
// most rpm requests whatever way a load balancer spreads them. (Dividing
// the limit by N with a local token bucket on each replica would need N to
// be known and fixed, and would refuse a key whose traffic lands on one
// replica at 1/N of its limit.) The estimate slides: the previous minute's
// count weighs by the part of it still inside the last 60 s, so a burst at
// a minute boundary cannot pass twice the limit. Keys without an rpm limit
// pay nothing.
//
// MaxInFlight holds on each replica: a shared in-flight counter would
// need every increment to be released, and a replica that dies with
// requests in flight would hold its slots for ever; the local count is
// exact and costs no round trip. N replicas admit at most N×max_in_flight.
type keyLimits struct {
	js  jetstream.JetStream
	now func() time.Time

	mu       sync.Mutex
	kv       jetstream.KeyValue // opened on first use
	inFlight map[string]int     // key id → requests in flight on this replica
}

func newKeyLimits(js jetstream.JetStream, now func() time.Time) *keyLimits {
	return &keyLimits{js: js, now: now, inFlight: map[string]int{}}
}

// admit returns a release func to call when the request is answered, or
// the 429 to answer with.
func (l *keyLimits) admit(ctx context.Context, rec *apikey.Record) (func(), *apiError) {
	release, aerr := l.acquire(rec)
	if aerr != nil {
		return nil, aerr
	}
	if rec.RPM > 0 {
		if aerr := l.countRequest(ctx, rec); aerr != nil {
			release()
			return nil, aerr
		}
	}
	return release, nil
}

func (l *keyLimits) acquire(rec *apikey.Record) (func(), *apiError) {
	if rec.MaxInFlight <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[rec.ID] >= rec.MaxInFlight {
		return nil, &apiError{Status: http.StatusTooManyRequests, Code: "concurrency_limit_exceeded", RetryAfter: 1,
			Message: fmt.Sprintf("this API key already has %d requests in flight (its limit)", rec.MaxInFlight)}
	}
	l.inFlight[rec.ID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.inFlight[rec.ID]--; l.inFlight[rec.ID] <= 0 {
				delete(l.inFlight, rec.ID)
			}
		})
	}, nil
}

func (l *keyLimits) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kv != nil {
		return l.kv, nil
	}
	// Entries live three windows: long enough to weigh the previous one.
	kv, err := natsx.OpenOrCreateKV(ctx, l.js, jetstream.KeyValueConfig{Bucket: RateBucket,
		Description: "Switchyard edge: requests per API key and minute (rpm limits)", History: 1, TTL: 3 * rateWindow})
	if err != nil {
		return nil, err
	}
	l.kv = kv
	return kv, nil
}

// countRequest admits one request under the key's rpm limit, or says when
// to retry.
func (l *keyLimits) countRequest(ctx context.Context, rec *apikey.Record) *apiError {
	kv, err := l.bucket(ctx)
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
