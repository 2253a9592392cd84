package natsx

import (
	"context"
	"fmt"
	"strings"

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

// WithoutManagement returns js for a process whose user may not manage
// streams (a service under authentication): creating or updating a stream
// or bucket binds to the one the operator (`up`) made, and a missing one
// is an error that says so. Streams named with one of ownPrefixes are the
// process's own to create (natsauth.OwnStreams: in-memory windows and
// buckets a NATS restart loses); a bucket's stream is KV_<bucket>.
func WithoutManagement(js jetstream.JetStream, ownPrefixes ...string) jetstream.JetStream {
	return unmanaged{JetStream: js, own: ownPrefixes}
}

type unmanaged struct {
	jetstream.JetStream
	own []string
}

func (u unmanaged) owns(name string) bool {
	for _, p := range u.own {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func missing(kind, name string, err error) error {
	return fmt.Errorf("%s %s: %w (this user may not create it: start `switchyard up` or run with operator credentials first)", kind, name, err)
}

func (u unmanaged) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s, err := u.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, missing("stream", name, err)
	}
	return s, nil
}

func (u unmanaged) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	kv, err := u.JetStream.KeyValue(ctx, name)
	if err != nil {
		return nil, missing("bucket", name, err)
	}
	return kv, nil
}

func (u unmanaged) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if u.owns(cfg.Name) {
		return u.JetStream.CreateStream(ctx, cfg)
	}
	return u.stream(ctx, cfg.Name)
}

func (u unmanaged) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if u.owns(cfg.Name) {
		return u.JetStream.UpdateStream(ctx, cfg)
	}
	return u.stream(ctx, cfg.Name)
}

func (u unmanaged) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if u.owns(cfg.Name) {
		return u.JetStream.CreateOrUpdateStream(ctx, cfg)
	}
	return u.stream(ctx, cfg.Name)
}

func (u unmanaged) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if u.owns("KV_" + cfg.Bucket) {
		return u.JetStream.CreateKeyValue(ctx, cfg)
	}
	return u.bucket(ctx, cfg.Bucket)
}

func (u unmanaged) UpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return u.bucket(ctx, cfg.Bucket)
}

func (u unmanaged) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return u.bucket(ctx, cfg.Bucket)
}
