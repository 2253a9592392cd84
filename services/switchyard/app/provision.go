package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
	"github.com/switchyard-llm/switchyard/services/gate"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/router"
)

// Inventory is what exists in JetStream after provisioning.
type Inventory struct {
	Streams   []StreamInfo // KV buckets' streams excluded
	Buckets   []StreamInfo // named by bucket
	Consumers []ConsumerInfo
}

// StreamInfo describes one stream or bucket.
type StreamInfo struct {
	Name     string
	Replicas int
	Messages uint64
}

// ConsumerInfo describes one durable consumer.
type ConsumerInfo struct {
	Stream, Name string
	Replicas     int // the stream's when the consumer sets none
	Pending      uint64
	AckPending   int
}

// Provision creates or updates, on the external NATS of cfg, everything
// the service processes need and a service user may not create: the
// streams, the shared KV buckets and the durable consumers of intake,
// router, gate, ledger and the executors of vendors (nil: every vendor of
// the policy in force). Each comes from the function its service uses
// (svc.Open, FromRuntime, ConsumerConfig), so the configurations are the
// services' own. No stage runs: no message is consumed. Run again, it
// updates in place what changed (a new stream config after an upgrade).
func Provision(ctx context.Context, cfg Config, vendors []string, log zerolog.Logger) (*Inventory, error) {
	if err := cfg.validateProvision(); err != nil {
		return nil, err
	}
	pol := cfg.Policy
	if pol == nil {
		var err error
		if pol, err = policy.Load(cfg.PolicyFile); err != nil {
			return nil, err
		}
	}
	rt, err := svc.Open(ctx, svc.Options{Name: "provision", NATSURL: cfg.NATSURL, Auth: cfg.ClientAuth, Replicas: cfg.NATSReplicas,
		Policy: pol, Log: log, Features: cfg.Features, Topology: cfg.Topology})
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	ctx = rt.Logger("provision").WithContext(ctx) // natsx logs its retries here
	// The API key bucket: the edge binds to it, `switchyard keys` fills it.
	if _, err := apikey.Open(ctx, rt.JS); err != nil {
		return nil, err
	}
	consumers, err := stageConsumers(rt, cfg, vendors)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, c := range consumers {
		if _, err := natsx.EnsureConsumer(ctx, rt.JS, c.stream, c.cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return inventory(ctx, rt.JS)
}

// validateProvision: an external NATS, the operator's credentials (a
// service user may create none of it) and `up`'s other settings.
func (c Config) validateProvision() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("SWITCHYARD_NATS_URL: required: provision runs against an external NATS server or cluster (`switchyard up`'s embedded server provisions itself)"))
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Creds != "" {
		u, err := natsauth.ReadCreds(c.Creds)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("SWITCHYARD_NATS_CREDS: %w", err))
		case u.Restricted:
			errs = append(errs, fmt.Errorf("SWITCHYARD_NATS_CREDS: %s is the credentials of %q, which may not create streams: provision needs the operator's (operator.creds)", c.Creds, u.Name))
		}
	}
	return errors.Join(errs...)
}

type stageConsumer struct {
	stream string
	cfg    jetstream.ConsumerConfig
}

// stageConsumers are the durable consumers of every stage, each computed
// by its stage (the executors' without an adapter or a vendor key).
func stageConsumers(rt *svc.Runtime, cfg Config, vendors []string) ([]stageConsumer, error) {
	in, err := intake.FromRuntime(rt, cfg.Intake)
	if err != nil {
		return nil, err
	}
	r, err := router.FromRuntime(rt, cfg.Router)
	if err != nil {
		return nil, err
	}
	g, err := gate.FromRuntime(rt, cfg.Gate)
	if err != nil {
		return nil, err
	}
	out := []stageConsumer{
		{natsx.StreamRequests, in.ConsumerConfig()},
		{natsx.StreamPipeline, r.ConsumerConfig()},
		{natsx.StreamPipeline, g.ConsumerConfig()},
		{natsx.StreamTelemetry, cfg.Ledger.ConsumerConfig()},
	}
	pol := rt.Policies.Current() // an applied version may name more vendors than the file
	if len(vendors) == 0 {
		vendors = pol.VendorNames()
	}
	var errs []error
	for _, name := range vendors {
		v, ok := pol.Vendors[name]
		if !ok {
			errs = append(errs, fmt.Errorf("vendor %q is not in the policy in force (vendors: %s)", name, strings.Join(pol.VendorNames(), ", ")))
			continue
		}
		ec := cfg.Executor
		ec.Vendor = name
		out = append(out, stageConsumer{natsx.StreamPipeline, executor.ConsumerConfigFor(ec, v)})
	}
	return out, errors.Join(errs...)
}

// inventory lists every stream, bucket and durable consumer of the account.
func inventory(ctx context.Context, js jetstream.JetStream) (*Inventory, error) {
	inv := &Inventory{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		si := StreamInfo{Name: info.Config.Name, Replicas: max(info.Config.Replicas, 1), Messages: info.State.Msgs}
		if bucket, ok := strings.CutPrefix(si.Name, "KV_"); ok {
			si.Name = bucket
			inv.Buckets = append(inv.Buckets, si)
			continue // its consumers are watchers', not durable work
		}
		s, err := js.Stream(ctx, info.Config.Name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", info.Config.Name, err)
		}
		if info.Config.Retention == jetstream.WorkQueuePolicy && info.Config.AllowRollup {
			// The work, not the stream's anchor (natsx.KeepAnchor).
			if si.Messages, err = natsx.WorkMessages(ctx, s); err != nil {
				return nil, fmt.Errorf("stream %s: %w", info.Config.Name, err)
			}
		}
		inv.Streams = append(inv.Streams, si)
		lister := s.ListConsumers(ctx)
		for ci := range lister.Info() {
			if ci.Config.Durable == "" {
				continue
			}
			replicas := ci.Config.Replicas
			if replicas == 0 {
				replicas = si.Replicas
			}
			inv.Consumers = append(inv.Consumers, ConsumerInfo{Stream: si.Name, Name: ci.Name, Replicas: replicas, Pending: ci.NumPending, AckPending: ci.NumAckPending})
		}
		if err := lister.Err(); err != nil {
			return nil, fmt.Errorf("consumers of %s: %w", si.Name, err)
		}
	}
	if err := streams.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	byName := func(a, b StreamInfo) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(inv.Streams, byName)
	slices.SortFunc(inv.Buckets, byName)
	slices.SortFunc(inv.Consumers, func(a, b ConsumerInfo) int {
		return strings.Compare(a.Stream+"/"+a.Name, b.Stream+"/"+b.Name)
	})
	return inv, nil
}
