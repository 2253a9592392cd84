// Package apikey stores the API keys of the HTTP edge: each key maps to a
// tenant and an optional route allow-list. Only the SHA-256 of a key is
// stored (the KV key is that hash), so the bucket never holds a usable key.
// A plain SHA-256 is enough because a key is 32 random bytes: there is no
// dictionary to try, and a slow password hash would only add latency to
// every request. Every edge replica keeps a View of the bucket, current
// through a KV watch, so a revoked key stops working everywhere within the
// watch latency (about a millisecond), without a restart.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Bucket is the KV bucket of the keys.
const Bucket = "api_keys"

// Prefix starts every key, so a leaked one is recognisable (secret scanners).
const Prefix = "sy-"

// ErrUnknown is a key that is not stored, malformed, or revoked.
var ErrUnknown = errors.New("unknown or revoked API key")

var tenantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Record is what the bucket stores about one key.
type Record struct {
	// ID names the key in `keys ls` and `keys revoke` (the first 16 hex
	// digits of its hash: it identifies the key without revealing it).
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Routes []string `json:"routes,omitempty"` // empty: every route, `auto` and catalog models
	Limits
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Limits bound one key's traffic; zero means no limit. The edge enforces
// them across every edge replica (services/edge/limits.go).
type Limits struct {
	RPM         int `json:"rpm,omitempty"`
	MaxInFlight int `json:"max_in_flight,omitempty"`
}

// Validate refuses negative limits.
func (l Limits) Validate() error {
	var errs []error
	if l.RPM < 0 {
		errs = append(errs, fmt.Errorf("rpm %d: must be 0 (no limit) or positive", l.RPM))
	}
	if l.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max in flight %d: must be 0 (no limit) or positive", l.MaxInFlight))
	}
	return errors.Join(errs...)
}

// Revoked reports whether the key was revoked.
func (r *Record) Revoked() bool { return !r.RevokedAt.IsZero() }

// AllowsRoute reports whether the key may use the named route.
func (r *Record) AllowsRoute(name string) bool {
	return len(r.Routes) == 0 || slices.Contains(r.Routes, name)
}

// Store is the key bucket.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open binds to (or creates) the bucket.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{Bucket: Bucket, Description: "Switchyard API keys (SHA-256 of each key)", History: 1})
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// Hash is the stored form of a key (hex SHA-256).
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func idOf(hash string) string { return hash[:16] }

// Create makes a new key for tenant and returns it; only its hash is stored.
func (s *Store) Create(ctx context.Context, tenant string, routes []string) (string, *Record, error) {
	return s.CreateWithLimits(ctx, tenant, routes, Limits{})
}

// CreateWithLimits makes a new key that carries per-key limits.
func (s *Store) CreateWithLimits(ctx context.Context, tenant string, routes []string, lim Limits) (string, *Record, error) {
	if !tenantRE.MatchString(tenant) {
		return "", nil, fmt.Errorf("tenant %q: must match %s", tenant, tenantRE)
	}
	if err := lim.Validate(); err != nil {
		return "", nil, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	key := Prefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := Hash(key)
	rec := &Record{ID: idOf(h), Tenant: tenant, Routes: routes, Limits: lim, CreatedAt: s.now().UTC()}
	data, err := json.Marshal(rec)
	if err != nil {
		return "", nil, err
	}
	if _, err := s.kv.Create(ctx, h, data); err != nil {
		return "", nil, fmt.Errorf("store key: %w", err)
	}
	return key, rec, nil
}

// Lookup returns the record of a live key; ErrUnknown for anything else.
// It reads the bucket (no cache), so a revocation holds at once; the edge
// looks keys up in a View instead, which the bucket's watch keeps current.
func (s *Store) Lookup(ctx context.Context, key string) (*Record, error) {
	if !wellFormed(key) {
		return nil, ErrUnknown
	}
	return s.lookupHash(ctx, Hash(key))
}

// wellFormed refuses what cannot be a key before it is hashed.
func wellFormed(key string) bool { return strings.HasPrefix(key, Prefix) && len(key) <= 128 }

// lookupHash reads the record of the key whose hash is h.
func (s *Store) lookupHash(ctx context.Context, h string) (*Record, error) {
	e, err := s.kv.Get(ctx, h)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrUnknown
	}
	if err != nil {
		return nil, err
	}
	// The KV lookup is by hash; compare again in constant time so the
	// answer never depends on how much of a guess matched.
	if subtle.ConstantTimeCompare([]byte(e.Key()), []byte(h)) != 1 {
		return nil, ErrUnknown
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("key record %s: %w", idOf(h), err)
	}
	if rec.Revoked() {
		return nil, ErrUnknown
	}
	return &rec, nil
}

// List returns every key's record (revoked ones too), oldest first.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Record
	for h := range lister.Keys() {
		e, err := s.kv.Get(ctx, h)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec Record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("key record %s: %w", idOf(h), err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b Record) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Revoke revokes a key given either the key itself or its id. The record
// stays (marked revoked) so `keys ls` shows when it was revoked.
func (s *Store) Revoke(ctx context.Context, keyOrID string) (*Record, error) {
	h, err := s.find(ctx, keyOrID)
	if err != nil {
		return nil, err
	}
	for {
		e, err := s.kv.Get(ctx, h)
		if err != nil {
			return nil, err
		}
		var rec Record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, err
		}
		if rec.Revoked() {
			return &rec, nil
		}
		rec.RevokedAt = s.now().UTC()
		data, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		_, err = s.kv.Update(ctx, h, data, e.Revision())
		if err == nil {
			return &rec, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
		// Changed meanwhile: read again.
	}
}

// find resolves a key or an id to the stored hash.
func (s *Store) find(ctx context.Context, keyOrID string) (string, error) {
	if strings.HasPrefix(keyOrID, Prefix) {
		h := Hash(keyOrID)
		if _, err := s.kv.Get(ctx, h); err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return "", ErrUnknown
			}
			return "", err
		}
		return h, nil
	}
	if len(keyOrID) != 16 {
		return "", fmt.Errorf("%q is neither a key (%s…) nor a key id (16 hex digits, see `switchyard keys ls`)", keyOrID, Prefix)
	}
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return "", ErrUnknown
		}
		return "", err
	}
	for h := range lister.Keys() {
		if idOf(h) == keyOrID {
			return h, nil
		}
	}
	return "", ErrUnknown
}
