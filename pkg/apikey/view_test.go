package apikey

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// countingKV is the real bucket, counting its reads.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets.Add(1)
	return c.KeyValue.Get(ctx, key)
}

// The view answers known keys without reading the bucket, reads it once
// for a key it does not know yet (created a moment ago), and follows
// revocations and deletions made through another store.
func TestViewFollowsTheBucket(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, js := testkit.JetStream(t)
	admin, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := admin.Create(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := &countingKV{KeyValue: admin.kv}
	v := NewView(&Store{kv: kv, now: time.Now})
	// Before Run, the view reads the bucket like Store.Lookup.
	if rec, err := v.Lookup(ctx, old); err != nil || rec.Tenant != "acme" || kv.gets.Load() != 1 {
		t.Fatalf("before run: %+v %v, %d reads", rec, err, kv.gets.Load())
	}
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.Eventually(t, 5*time.Second, "the view to load the keys", func() bool { v.mu.RLock(); defer v.mu.RUnlock(); return v.ready })

	reads := kv.gets.Load()
	for range 10 {
		if rec, err := v.Lookup(ctx, old); err != nil || rec.Tenant != "acme" {
			t.Fatalf("known key: %+v %v", rec, err)
		}
	}
	if n := kv.gets.Load() - reads; n != 0 {
		t.Fatalf("a known key read the bucket %d times", n)
	}

	fresh, _, err := admin.Create(ctx, "beta", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := v.Lookup(ctx, fresh); err != nil || rec.Tenant != "beta" { // at once, watch or not
		t.Fatalf("key created a moment ago: %+v %v", rec, err)
	}
	testkit.Eventually(t, 5*time.Second, "the new key served from memory", func() bool {
		before := kv.gets.Load()
		_, err := v.Lookup(ctx, fresh)
		return err == nil && kv.gets.Load() == before
	})

	tests := []struct {
		name   string
		key    string
		remove func(key string) error
	}{
		{"revoked", old, func(key string) error { _, err := admin.Revoke(ctx, key); return err }},
		{"deleted", fresh, func(key string) error { return admin.kv.Delete(ctx, Hash(key)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.remove(tt.key); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 5*time.Second, "the key to be refused", func() bool { _, err := v.Lookup(ctx, tt.key); return errors.Is(err, ErrUnknown) })
		})
	}
	for _, bad := range []string{"", "sk-nope", Prefix + "unknown"} {
		if _, err := v.Lookup(ctx, bad); !errors.Is(err, ErrUnknown) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}
