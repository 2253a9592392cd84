package natsx

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// WithReplicas returns js with every stream and KV bucket it creates or
// updates set to n replicas: the one place SWITCHYARD_NATS_REPLICAS is
// applied, so no stream or bucket of a process (topology, breakers,
// budgets, hedges, cache, policy, intake dedupe, vendor limits) is left at
// R1 on a cluster, and none asks a single server for R3. n < 1 leaves each
// config's own value.
func WithReplicas(js jetstream.JetStream, n int) jetstream.JetStream {
	if n < 1 {
		return js
	}
	if r, ok := js.(replicated); ok {
		js = r.JetStream
	}
	return replicated{JetStream: js, n: n}
}

type replicated struct {
	jetstream.JetStream
	n int
}

func (r replicated) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateStream(ctx, cfg)
}

func (r replicated) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = r.n
	return r.JetStream.UpdateStream(ctx, cfg)
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateOrUpdateStream(ctx, cfg)
}

func (r replicated) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateKeyValue(ctx, cfg)
}

func (r replicated) UpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = r.n
	return r.JetStream.UpdateKeyValue(ctx, cfg)
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = r.n
	return r.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}
