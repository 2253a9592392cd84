package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Store keeps the applied policy in a JetStream KV bucket, so every replica
// of every stage reads the same version and picks up a new one without a
// restart. The bucket's history is the audit trail: who applied what, when.
type Store struct {
	kv      jetstream.KeyValue
	log     zerolog.Logger
	current atomic.Pointer[Applied]
}

// Applied is one stored version of the policy.
type Applied struct {
	Revision  uint64    `json:"revision"`
	AppliedAt time.Time `json:"applied_at"`
	AppliedBy string    `json:"applied_by"`
	Comment   string    `json:"comment,omitempty"`
	// Source is the policy file as written (YAML).
	Source string `json:"source"`
	// Policy is the parsed, validated policy (not stored, derived).
	Policy *Policy `json:"-"`
}

// DefaultBucket is the KV bucket holding the policy.
const DefaultBucket = "switchyard_policy"

const currentKey = "current"

// OpenStore opens (creating if needed) the policy bucket.
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string, log zerolog.Logger) (*Store, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	// Bind first: `switchyard policy apply` opens the store with a plain
	// connection, and updating the bucket from there would reset its
	// replicas (R3 on a cluster) to 1.
	kv, err := natsx.OpenOrCreateKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "routing policy versions (switchyard policy apply|show|history)",
		History:     64,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("policy bucket %s: %w", bucket, err)
	}
	return &Store{kv: kv, log: log}, nil
}

// Apply validates source and stores it as the new current version. A
// policy with errors is refused with every problem listed, and the running
// version stays.
func (s *Store) Apply(ctx context.Context, source []byte, by, comment string) (*Applied, error) {
	p, err := Parse(source)
	if err != nil {
		return nil, err
	}
	if by == "" {
		return nil, errors.New("apply: say who applies the policy (--by)")
	}
	a := Applied{AppliedAt: time.Now().UTC(), AppliedBy: by, Comment: comment, Source: string(source)}
	data, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	rev, err := s.kv.Put(ctx, currentKey, data)
	if err != nil {
		return nil, fmt.Errorf("store policy: %w", err)
	}
	a.Revision, a.Policy = rev, p
	return &a, nil
}

// Load reads the current version; ok is false when none was ever applied.
func (s *Store) Load(ctx context.Context) (a *Applied, ok bool, err error) {
	e, err := s.kv.Get(ctx, currentKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	a, err = decodeApplied(e)
	return a, err == nil, err
}

// History lists every stored version, oldest first.
func (s *Store) History(ctx context.Context) ([]*Applied, error) {
	entries, err := s.kv.History(ctx, currentKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]*Applied, 0, len(entries))
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var a Applied
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			continue
		}
		a.Revision = e.Revision()
		out = append(out, &a)
	}
	return out, nil
}

func decodeApplied(e jetstream.KeyValueEntry) (*Applied, error) {
	var a Applied
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, fmt.Errorf("policy revision %d: %w", e.Revision(), err)
	}
	p, err := Parse([]byte(a.Source))
	if err != nil {
		return nil, fmt.Errorf("policy revision %d: %w", e.Revision(), err)
	}
	a.Revision, a.Policy = e.Revision(), p
	return &a, nil
}

// Current is the policy in force for this process.
func (s *Store) Current() *Policy {
	if a := s.current.Load(); a != nil {
		return a.Policy
	}
	return nil
}

// Watch keeps Current up to date until ctx is done, calling onChange for
// every new version. fallback is used until a version is stored. A stored
// version that fails to parse (written by hand) is logged and skipped: the
// running one stays.
func (s *Store) Watch(ctx context.Context, fallback *Policy, onChange func(*Applied)) error {
	if fallback != nil && s.current.Load() == nil {
		s.current.Store(&Applied{Policy: fallback, AppliedBy: "file"})
	}
	w, err := s.kv.Watch(ctx, currentKey)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					continue
				}
				a, err := decodeApplied(e)
				if err != nil {
					s.log.Error().Err(err).Msg("stored policy refused; keeping the running one")
					continue
				}
				s.current.Store(a)
				s.log.Info().Uint64("revision", a.Revision).Str("applied_by", a.AppliedBy).Str("version", a.Policy.Version).Msg("policy applied")
				if onChange != nil {
					onChange(a)
				}
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("policy watch: initial value not received in 10s")
	}
}

// Source gives the policy in force. A *Policy is a Source that never
// changes; a *Store follows the applied versions.
type Source interface{ Current() *Policy }

// Current makes a fixed policy a Source.
func (p *Policy) Current() *Policy { return p }

// Model looks a model up in the current policy (a pricing catalog that
// follows applied versions).
func (s *Store) Model(vendor, model string) (*Model, bool) {
	if p := s.Current(); p != nil {
		return p.Model(vendor, model)
	}
	return nil, false
}
