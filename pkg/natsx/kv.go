package natsx

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// OpenOrCreateKV binds to a KV bucket, creating it with cfg only when it
// does not exist: settings an operator changed on a live bucket are never
// overwritten. A bucket created concurrently by another replica is used.
// While JetStream is unavailable (a cluster still starting) it retries like
// EnsureTopology.
func OpenOrCreateKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = retryAtStart(ctx, "bucket "+cfg.Bucket, func(ctx context.Context) error {
		kv, err = openOrCreateKV(ctx, js, cfg)
		return err
	})
	return kv, err
}

// CreateOrUpdateKV creates cfg's bucket, or brings an existing one to cfg
// (a bucket whose settings follow the service's configuration, such as the
// response cache's size), retrying while JetStream is unavailable like
// EnsureTopology.
func CreateOrUpdateKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = retryAtStart(ctx, "bucket "+cfg.Bucket, func(ctx context.Context) error {
		kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	return kv, err
}

func openOrCreateKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
