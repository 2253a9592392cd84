package svc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/limiter"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
)

// Options open a Runtime.
type Options struct {
	// Name names the NATS connection and the process's own log lines.
	Name string
	// NATSURL is one server or a comma-separated list (a cluster's nodes).
	NATSURL string
	// Auth is the process's NATS credentials and TLS (empty: none). A
	// restricted user (a service's) neither creates nor updates streams
	// and buckets: it binds to those `up` made.
	Auth natsx.ClientAuth
	// Replicas of every stream and KV bucket the process creates or
	// updates (SWITCHYARD_NATS_REPLICAS); 0 means 1.
	Replicas int
	// Policy is the file policy, in force until a version is applied.
	Policy *policy.Policy
	// Log is the process logger without a `service` key: Logger adds one.
	Log      zerolog.Logger
	Features Features
	// Topology overrides the default streams (tests).
	Topology *natsx.TopologyConfig
	// InProcess, when set, is the server embedded in this process: the
	// connection goes to it without a socket (natsx.BufferedInProcess) and
	// NATSURL only names it.
	InProcess nats.InProcessConnProvider
	// WatchEvery is how often a supervised stage's consumer is checked
	// (default 2s).
	WatchEvery time.Duration
	// StuckAfter: a consumer with work outstanding that has delivered and
	// acked nothing for this long is reported stuck (default 11m, longer
	// than any one request may last: timeout_ms ≤ 600 s, so a slow vendor
	// is not mistaken for a stuck stage).
	StuckAfter time.Duration
}

// Runtime is what every stage of a process shares, built once from one
// configuration: `switchyard up` and each service binary open it the same
// way, so a stage has the same breakers, limits, budgets, hedging and cache
// whichever process it runs in.
type Runtime struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Policy *policy.Policy // the file policy the process started with
	// Policies follows `switchyard policy apply`: stages read the version in
	// force through it.
	Policies *policy.Store
	Registry *prometheus.Registry
	Health   *obs.Health
	Breakers *breaker.Breakers // nil when disabled
	Limiter  *limiter.Limiter  // vendor rpm/tpm windows shared by all executors
	Budgets  *budget.Budgets   // tenant budgets and quotas
	Hedges   *hedge.Tracker    // branches of hedged requests
	Cache    *respcache.Cache  // nil when disabled

	log        zerolog.Logger
	name       string
	topology   natsx.TopologyConfig
	watchEvery time.Duration
	stuckAfter time.Duration
	ctx        context.Context // lives until Close
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closers    []func()
	anchorsOn  bool
	anchorsMu  sync.Mutex
	anchors    map[string]bool // streams whose anchor this process keeps
}

// Open connects to NATS, ensures the streams, and builds the shared
// collaborators. Close undoes it.
func Open(ctx context.Context, o Options) (_ *Runtime, err error) {
	if o.Policy == nil {
		return nil, errors.New("runtime: a policy is required")
	}
	rt := &Runtime{Policy: o.Policy, Registry: obs.NewRegistry(), Health: &obs.Health{}, log: o.Log, name: o.Name,
		topology: natsx.DefaultTopology(), watchEvery: o.WatchEvery, stuckAfter: o.StuckAfter, anchorsOn: o.Features.StreamAnchors}
	if o.Topology != nil {
		rt.topology = *o.Topology
	}
	if rt.watchEvery <= 0 {
		rt.watchEvery = 2 * time.Second
	}
	if rt.stuckAfter <= 0 {
		rt.stuckAfter = 11 * time.Minute
	}
	rt.ctx, rt.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			rt.Close()
		}
	}()
	natsLog := rt.component("nats")
	// Start-up creation of streams and buckets logs its retries through
	// the context (natsx retries while a cluster is still starting).
	ctx = natsLog.WithContext(ctx)
	connOpts, err := o.Auth.Options()
	if err != nil {
		return nil, err
	}
	if o.InProcess != nil {
		connOpts = append(connOpts, natsx.BufferedInProcess(o.InProcess))
	}
	if rt.NC, err = natsx.Connect(o.NATSURL, "switchyard-"+o.Name, natsLog, connOpts...); err != nil {
		return nil, err
	}
	nc := rt.NC

	natsx.Joined(natsLog.Info(), nc).Int("replicas", max(o.Replicas, 1)).Msg("joined nats")
	rt.closers = append(rt.closers, func() { _ = nc.Drain() })
	rt.Health.Set("nats", func() error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("connection %s", s)
		}
		return nil
	})
	// A stage publishes asynchronously and waits for the acks itself (its
	// handler's deadline); the timeout only frees an ack that never comes
	// (its node died), which would otherwise stay pending for good.
	if rt.JS, err = jetstream.New(rt.NC, jetstream.WithPublishAsyncTimeout(asyncAckTimeout)); err != nil {
		return nil, err
	}
	// Every stream and bucket below (and any a stage creates through rt.JS)
	// takes the configured replicas.
	rt.JS = natsx.WithReplicas(rt.JS, max(o.Replicas, 1))
	if !o.Auth.Manages() {
		rt.JS = natsx.WithoutManagement(rt.JS, o.Auth.OwnStreams()...)
	}
	rt.topology.Replicas = max(o.Replicas, 1)
	if err := ensureTopologyAtStart(ctx, rt.JS, rt.topology, natsLog); err != nil {
		return nil, err
	}
	rt.Registry.MustRegister(natsx.NewCollector(rt.JS, rt.component("jetstream_metrics")))
	if rt.Policies, err = policy.OpenStore(ctx, rt.JS, "", rt.component("policy")); err != nil {
		return nil, err
	}
	if err := rt.Policies.Watch(rt.ctx, rt.Policy, nil); err != nil {
		return nil, err
	}
	if o.Features.BreakersEnabled {
		b, err := breaker.New(ctx, rt.JS, o.Features.Breaker, breaker.Deps{Log: rt.Logger(rt.name), Alert: breaker.JetStreamAlert(rt.JS)})
		if err != nil {
			return nil, fmt.Errorf("circuit breakers: %w", err)
		}
		rt.Breakers = b
		rt.closers = append(rt.closers, func() { _ = b.Close() })
	}
	if rt.Limiter, err = limiter.New(ctx, rt.JS, VendorLimits(rt.Policy)); err != nil {
		return nil, err
	}
	if rt.Budgets, err = budget.New(ctx, rt.JS, budget.Config{}, budget.Deps{Log: rt.Logger(rt.name)}); err != nil {
		return nil, err
	}
	if rt.Hedges, err = hedge.New(ctx, rt.JS, ""); err != nil {
		return nil, err
	}
	if o.Features.CacheEnabled {
		if rt.Cache, err = respcache.New(ctx, rt.JS, respcache.Config{}, rt.Logger(rt.name)); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// asyncAckTimeout bounds how long an asynchronous publish's ack is
// awaited: longer than any stage's handler timeout.
const asyncAckTimeout = time.Minute

// VendorLimits collects the vendors' rpm/tpm limits from the policy.
func VendorLimits(p *policy.Policy) map[string]limiter.Limits {
	out := map[string]limiter.Limits{}
	for name, v := range p.Vendors {
		out[name] = limiter.Limits{RPM: v.RPM, TPM: v.TPM}
	}
	return out
}

// Logger is the logger of one service of the process: the only place a
// `service` key is added, so every line carries exactly one.
func (rt *Runtime) Logger(service string) zerolog.Logger {
	return rt.log.With().Str("service", service).Logger()
}

// component logs the runtime's own collaborators under the process name
// (breakers, budgets and the cache add their component key themselves).
func (rt *Runtime) component(name string) zerolog.Logger {
	return rt.log.With().Str("service", rt.name).Str("component", name).Logger()
}

// Close stops every supervised stage (each finishes its in-flight work),
// then the shared collaborators and the connection.
func (rt *Runtime) Close() {
	if rt.cancel != nil {
		rt.cancel()
	}
	rt.wg.Wait()
	for i := len(rt.closers) - 1; i >= 0; i-- {
		rt.closers[i]()
	}
	rt.closers = nil
}

// ensureTopologyAtStart creates the streams, retrying while JetStream is
// unavailable or slow to answer (a cluster still electing its leaders, a
// node restarting) for up to natsx.ConnectTimeout, like the first connect.
func ensureTopologyAtStart(ctx context.Context, js jetstream.JetStream, topo natsx.TopologyConfig, log zerolog.Logger) error {
	deadline := time.Now().Add(natsx.ConnectTimeout)
	for {
		err := natsx.EnsureTopology(ctx, js, topo)
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) ||
			!(natsx.Unavailable(err) || errors.Is(err, context.DeadlineExceeded)) {
			return err
		}
		log.Warn().Err(err).Msg("jetstream not ready; retrying the streams")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}
