package apikey

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// View answers key lookups from memory. A KV watcher on the bucket keeps
// it current: a key created, revoked or deleted anywhere reaches every
// process's view within the watch latency (one JetStream delivery, about a
// millisecond on a local server; measured by the edge's two-replica test),
// with no bucket read on the request path. A key the view does not know
// is read from the bucket once per lookup, so a key created a moment ago
// works before its watch update arrives; until the watch has delivered
// the bucket's contents, and while it is being re-established, every
// lookup reads the bucket as Store.Lookup does.
type View struct {
	s *Store

	mu    sync.RWMutex
	ready bool               // the watch has delivered the bucket's contents
	recs  map[string]*Record // by hash; revoked keys too, so they are refused without a read
}

// NewView is an empty view of s's bucket; Run fills it and keeps it current.
func NewView(s *Store) *View { return &View{s: s, recs: map[string]*Record{}} }

// Run watches the bucket until ctx is done, watching again (after a
// pause) whenever the watch ends; meanwhile lookups read the bucket.
func (v *View) Run(ctx context.Context) {
	for ctx.Err() == nil {
		v.watch(ctx)
		v.setReady(false)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (v *View) watch(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := v.s.kv.WatchAll(wctx)
	if err != nil {
		return
	}
	defer func() { _ = w.Stop() }()
	fresh := map[string]*Record{} // the bucket's contents as replayed, swapped in whole
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // the replay is complete
				v.mu.Lock()
				v.recs, v.ready, fresh = fresh, true, nil
				v.mu.Unlock()
				continue
			}
			var rec *Record
			if e.Operation() == jetstream.KeyValuePut {
				var r Record
				if json.Unmarshal(e.Value(), &r) == nil {
					rec = &r
				}
			}
			if fresh != nil {
				if rec != nil {
					fresh[e.Key()] = rec
				}
				continue
			}
			v.mu.Lock()
			if rec != nil {
				v.recs[e.Key()] = rec
			} else { // deleted, purged or unreadable: unknown, read on use
				delete(v.recs, e.Key())
			}
			v.mu.Unlock()
		}
	}
}

func (v *View) setReady(ready bool) {
	v.mu.Lock()
	v.ready = ready
	v.mu.Unlock()
}

// Lookup is Store.Lookup answered from the view when it knows the key.
// The record may be shared with other lookups: read it, never change it.
func (v *View) Lookup(ctx context.Context, key string) (*Record, error) {
	if !wellFormed(key) {
		return nil, ErrUnknown
	}
	h := Hash(key)
	v.mu.RLock()
	rec, known := v.recs[h]
	known = known && v.ready
	v.mu.RUnlock()
	if !known {
		return v.s.lookupHash(ctx, h)
	}
	if rec.Revoked() {
		return nil, ErrUnknown
	}
	return rec, nil
}
