package intake

import (
	"context"
	"encoding/base64"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// DedupeBucket is the KV bucket holding the tenant+id of every request
// accepted within the dedupe window (its TTL).
const DedupeBucket = "intake_dedupe"

// Deduper remembers which requests were accepted. Claim reports whether
// owner (the request message's stream sequence) is the first to claim key
// within the window; the same owner claiming again (a redelivery after a
// crash) is still first, so a request is never lost to its own claim.
type Deduper interface {
	Claim(ctx context.Context, key, owner string) (bool, error)
}

type kvDeduper struct{ kv jetstream.KeyValue }

func (d kvDeduper) Claim(ctx context.Context, key, owner string) (bool, error) {
	k := kvKey(key)
	if _, err := d.kv.Create(ctx, k, []byte(owner)); err == nil {
		return true, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, err
	}
	e, err := d.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Expired between Create and Get: the window has passed.
		_, err = d.kv.Create(ctx, k, []byte(owner))
		return err == nil, err
	}
	if err != nil {
		return false, err
	}
	return string(e.Value()) == owner, nil
}

// kvKey encodes a delivery key (which may hold ':' from a replay key) into
// the characters KV keys allow.
func kvKey(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }
