// Package respcache is the exact response cache (contract §5): an answer is
// stored under a hash of the normalized request and its route policy (see
// Key and Fingerprint) and served again, for a time, to an identical
// request of the same tenant. Every replica shares one JetStream KeyValue
// bucket, so an answer cached by one is a hit on all.
//
// Expiry is enforced twice: the bucket deletes each key after its own TTL
// (per-key TTL, Nats-TTL), and Get checks the entry's own expiry time, so an
// entry the server has not purged yet is never served stale.
//
// Whether a request may be cached at all is Eligible's decision: not when
// the client asked for no cache, not for sensitive requests unless the route
// allows it, and, optionally, not for sampled (temperature > 0) requests.
package respcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Defaults of Config.
const (
	DefaultBucket        = "switchyard_cache"
	DefaultMaxBytes      = 128 << 20 // whole bucket
	DefaultMaxValueBytes = 256 << 10 // one entry, encoded
	DefaultTTL           = time.Hour
	// DefaultMarkerTTL is how long the bucket keeps the marker left when a
	// key expires. Per-key TTLs require it to be set.
	DefaultMarkerTTL = time.Minute
)

// ErrTooLarge is returned by Put when the encoded entry exceeds
// Config.MaxValueBytes. Nothing is stored; callers may treat it as a
// benign skip.
var ErrTooLarge = errors.New("respcache: entry too large to cache")

// entryVersion is the encoding version of Entry; a stored entry of another
// version is a miss.
const entryVersion = 1

// Config configures a Cache. Zero values take the defaults above.
type Config struct {
	// Bucket is the KeyValue bucket, shared by all replicas.
	Bucket string
	// MaxBytes bounds the whole bucket. KV buckets discard new writes when
	// full: Put then fails until entries expire.
	MaxBytes int64
	// MaxValueBytes bounds one encoded entry; a larger one is not cached.
	MaxValueBytes int
	// DefaultTTL applies when Put is given no TTL.
	DefaultTTL time.Duration
	// MarkerTTL is the bucket's limit marker TTL (see DefaultMarkerTTL).
	MarkerTTL time.Duration
	// Eligibility is what Cache.Eligible applies.
	Eligibility Eligibility
	// Now is the clock used for created_at and the expiry check on read;
	// tests inject one. Default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = DefaultTTL
	}
	if c.MarkerTTL <= 0 {
		c.MarkerTTL = DefaultMarkerTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Entry is a cached answer: what a reply needs, plus its lifetime.
type Entry struct {
	Content      string            `json:"content"`
	FinishReason string            `json:"finish_reason,omitempty"`
	Vendor       string            `json:"vendor,omitempty"`
	Model        string            `json:"model,omitempty"`
	Usage        envelope.Usage    `json:"usage"`
	Quality      *envelope.Quality `json:"quality,omitempty"`
	// CostUSD is what the original call cost; a hit costs nothing, so it
	// is what a hit saves.
	CostUSD float64 `json:"cost_usd,omitempty"`
	// CreatedAt is when the answer was stored; Put sets it when zero.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is CreatedAt plus the entry's TTL; Put sets it.
	ExpiresAt time.Time `json:"expires_at"`
	// V is the encoding version.
	V int `json:"v"`
}

// EntryFromReply captures a successful reply's answer.
func EntryFromReply(r *envelope.Reply) Entry {
	e := Entry{
		Content:      r.Content,
		FinishReason: r.FinishReason,
		Vendor:       r.Vendor,
		Model:        r.Model,
		Usage:        r.Usage,
		CostUSD:      r.CostUSD,
	}
	if r.Quality != nil {
		q := *r.Quality
		q.Checks = append([]string(nil), q.Checks...)
		q.Failed = append([]string(nil), q.Failed...)
		e.Quality = &q
	}
	return e
}

// Reply builds the reply a hit sends for request req on route: status ok,
// cached, no attempts and no cost. Usage is the cached answer's, as
// reported when it was produced.
func (e *Entry) Reply(req *envelope.Request, route string) envelope.Reply {
	return envelope.Reply{
		ID:           req.ID,
		Tenant:       req.Tenant,
		Status:       envelope.StatusOK,
		Content:      e.Content,
		FinishReason: e.FinishReason,
		Vendor:       e.Vendor,
		Model:        e.Model,
		Route:        route,
		Usage:        e.Usage,
		Cached:       true,
		Attempts:     []envelope.AttemptResult{},
		Quality:      e.Quality,
	}
}

// Cache is the shared response cache. It is safe for concurrent use.
type Cache struct {
	kv  jetstream.KeyValue
	cfg Config
	log zerolog.Logger
}

// New creates or updates the cache bucket and binds to it. Replicas calling
// New with the same Config share the bucket.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log zerolog.Logger) (*Cache, error) {
	cfg.defaults()
	kv, err := natsx.CreateOrUpdateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "Switchyard exact response cache",
		History:        1,
		MaxBytes:       cfg.MaxBytes,
		Storage:        jetstream.FileStorage,
		LimitMarkerTTL: cfg.MarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("respcache: bucket %s: %w", cfg.Bucket, err)
	}
	return &Cache{kv: kv, cfg: cfg, log: log.With().Str("component", "respcache").Logger()}, nil
}

// Bucket returns the bucket name.
func (c *Cache) Bucket() string { return c.cfg.Bucket }

// Eligible applies Config.Eligibility; see Eligibility.Eligible.
func (c *Cache) Eligible(req *envelope.Request, sensitive, allowSensitive bool) bool {
	return c.cfg.Eligibility.Eligible(req, sensitive, allowSensitive)
}

// Get returns the live entry stored under key. A missing, expired (by its
// own ExpiresAt, whether or not the bucket has purged it yet) or
// unreadable entry is a miss, with no error; errors are NATS failures,
// which callers should treat as a miss too.
func (c *Cache) Get(ctx context.Context, key string) (*Entry, bool, error) {
	kve, err := c.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("respcache: get: %w", err)
	}
	e, ok := c.decode(key, kve.Value())
	if !ok || !c.live(e) {
		return nil, false, nil
	}
	return e, true, nil
}

func (c *Cache) decode(key string, b []byte) (*Entry, bool) {
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		c.log.Warn().Err(err).Str("key", key).Msg("unreadable cache entry, treated as a miss")
		return nil, false
	}
	if e.V != entryVersion {
		return nil, false
	}
	return &e, true
}

func (c *Cache) live(e *Entry) bool {
	return !e.ExpiresAt.IsZero() && c.cfg.Now().Before(e.ExpiresAt)
}

// Put stores e under key for ttl (Config.DefaultTTL when ttl <= 0; routes
// pass their own). CreatedAt is set from the clock when zero, and ExpiresAt
// to CreatedAt+ttl. An entry whose encoding exceeds Config.MaxValueBytes
// is not stored: Put returns ErrTooLarge.
//
// A live entry already under key is kept (first writer wins: concurrent
// replicas computing the same answer store it once); an expired or
// unreadable one is replaced.
func (c *Cache) Put(ctx context.Context, key string, e Entry, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = c.cfg.DefaultTTL
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = c.cfg.Now()
	}
	e.CreatedAt = e.CreatedAt.UTC()
	e.ExpiresAt = e.CreatedAt.Add(ttl)
	e.V = entryVersion
	if !c.cfg.Now().Before(e.ExpiresAt) {
		return nil // already expired: nothing worth storing
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("respcache: encode: %w", err)
	}
	if len(b) > c.cfg.MaxValueBytes {
		c.log.Debug().Str("key", key).Int("bytes", len(b)).Int("limit", c.cfg.MaxValueBytes).Msg("entry too large, not cached")
		return ErrTooLarge
	}
	kvTTL := serverTTL(e.ExpiresAt.Sub(c.cfg.Now()))

	for range 2 {
		_, err = c.kv.Create(ctx, key, b, jetstream.KeyTTL(kvTTL))
		if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
			break
		}
		// Something is stored: keep it if it is live, else clear it (only
		// that revision: a concurrent fresh write is not lost) and retry.
		cur, gerr := c.kv.Get(ctx, key)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
			continue
		}
		if gerr != nil {
			return fmt.Errorf("respcache: put: %w", gerr)
		}
		if old, ok := c.decode(key, cur.Value()); ok && c.live(old) {
			return nil
		}
		perr := c.kv.Purge(ctx, key, jetstream.LastRevision(cur.Revision()), jetstream.PurgeTTL(c.cfg.MarkerTTL))
		if perr != nil && !errors.Is(perr, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("respcache: put: replace expired entry: %w", perr)
		}
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil // lost a race to another writer, which stored an answer
	}
	if err != nil {
		return fmt.Errorf("respcache: put: %w", err)
	}
	return nil
}

// serverTTL rounds a TTL up to whole seconds, the server's granularity,
// with a floor of one second. The read-side ExpiresAt check keeps the
// exact TTL.
func serverTTL(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// Eligibility decides which requests may be cached. The zero value is the
// default: exact-cache semantics.
type Eligibility struct {
	// SkipSampled keeps requests with temperature > 0 out of the cache.
	// By default (false) they are cached like any other: this is an exact
	// cache, and an identical request gets the answer the first one got,
	// which is a valid sample of the same distribution. Set it when
	// callers expect a fresh sample on every call.
	SkipSampled bool
}

// Eligible reports whether req may be read from and written to the cache
// under the default Eligibility; see Eligibility.Eligible.
func Eligible(req *envelope.Request, sensitive, allowSensitive bool) bool {
	return Eligibility{}.Eligible(req, sensitive, allowSensitive)
}

// Eligible reports whether req may be read from and written to the cache.
// sensitive is intake's classification (PII found); allowSensitive is the
// route's permission to cache sensitive requests anyway. Not eligible:
// a nil request or one with no tenant or no messages; a request whose
// policy says cache: false; a sensitive request unless allowSensitive;
// with SkipSampled, a request with temperature > 0 (an absent temperature
// means the vendor default, which is sampled, and counts as > 0).
func (el Eligibility) Eligible(req *envelope.Request, sensitive, allowSensitive bool) bool {
	switch {
	case req == nil || req.Tenant == "" || len(req.Messages) == 0:
		return false
	case req.Policy != nil && req.Policy.Cache != nil && !*req.Policy.Cache:
		return false
	case sensitive && !allowSensitive:
		return false
	case el.SkipSampled && (req.Temperature == nil || *req.Temperature > 0):
		return false
	}
	return true
}
