// Package app boots the whole pipeline in one process: an embedded NATS
// JetStream server (or an external one), the vendor simulator when no real
// vendor keys are configured, and every stage. `switchyard up`, the demo,
// the benchmark and the integration tests all start the system through it.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/limiter"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
	"github.com/switchyard-llm/switchyard/services/gate"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
	"github.com/switchyard-llm/switchyard/services/router"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// Simulator modes.
const (
	SimAuto = "auto" // run it when no vendor API key is set
	SimOn   = "on"
	SimOff  = "off"
)

// Config is the configuration of `switchyard up` (env prefix SWITCHYARD_).
type Config struct {
	DataDir          string `envconfig:"DATA_DIR" default:"data"`
	NATSURL          string `envconfig:"NATS_URL"` // empty: run an embedded server
	NATSPort         int    `envconfig:"NATS_PORT" default:"4222"`
	PolicyFile       string `envconfig:"POLICY" default:"deployments/policy.yaml"`
	Sim              string `envconfig:"SIM" default:"auto"`
	SimAddr          string `envconfig:"SIM_ADDR" default:"127.0.0.1:8089"`
	ExecutorReplicas int    `envconfig:"EXECUTOR_REPLICAS" default:"1"`
	HTTPAddr         string `envconfig:"HTTP_ADDR" default:"127.0.0.1:9090"`
	LogLevel         string `envconfig:"LOG_LEVEL" default:"info"`
	// Ledger off runs the pipeline without ClickHouse (telemetry then waits
	// in JetStream until a ledger runs).
	LedgerEnabled bool `envconfig:"LEDGER" default:"true"`

	Intake   intake.Config   `envconfig:"INTAKE"`
	Router   router.Config   `envconfig:"ROUTER"`
	Executor executor.Config `envconfig:"EXECUTOR"`
	Gate     gate.Config     `envconfig:"GATE"`
	Ledger   ledger.Config
	Alerts   alerts.Config `envconfig:"ALERTS"`
	// Breakers are shared by every router and executor through a KV bucket.
	BreakersEnabled bool `envconfig:"BREAKERS" default:"true"`
	// CacheEnabled runs the response cache for routes that set a cache TTL.
	CacheEnabled bool           `envconfig:"CACHE" default:"true"`
	Breaker      breaker.Config `envconfig:"BREAKER"`

	// ExternalExecutors names vendors whose executors run as processes of
	// their own; `up` starts none for them.
	ExternalExecutors []string `envconfig:"EXTERNAL_EXECUTORS"`

	// Topology and Policy may be set by tests; zero values use defaults.
	Topology *natsx.TopologyConfig `ignored:"true"`
	Policy   *policy.Policy        `ignored:"true"`
	Scenario *sim.Scenario         `ignored:"true"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("SWITCHYARD_DATA_DIR: required for the embedded NATS server"))
	}
	if c.Policy == nil && c.PolicyFile == "" {
		errs = append(errs, errors.New("SWITCHYARD_POLICY: required"))
	}
	switch c.Sim {
	case SimAuto, SimOn, SimOff:
	default:
		errs = append(errs, fmt.Errorf("SWITCHYARD_SIM: %q is not one of auto, on, off", c.Sim))
	}
	if c.ExecutorReplicas < 1 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_REPLICAS: must be at least 1"))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("SWITCHYARD_LOG_LEVEL: %w", err))
	}
	errs = append(errs, c.Intake.Validate(), c.Router.Validate(), c.Gate.Validate())
	// The executor's vendor is filled per instance; check the rest.
	ex := c.Executor
	ex.Vendor = "any"
	errs = append(errs, ex.Validate())
	if c.LedgerEnabled {
		errs = append(errs, c.Ledger.Validate(), c.Alerts.Validate())
	}
	if c.BreakersEnabled {
		errs = append(errs, c.Breaker.Validate())
	}
	return errors.Join(errs...)
}

// System is a running pipeline.
type System struct {
	Log     zerolog.Logger
	NATS    *server.Server // nil with an external NATS
	NATSURL string
	NC      *nats.Conn
	JS      jetstream.JetStream
	Policy  *policy.Policy // the file policy the system started with
	// Policies follows `switchyard policy apply`: every stage reads the
	// version in force through it.
	Policies *policy.Store
	Sim      *sim.Server // nil when vendors are real
	SimURL   string
	Registry *prometheus.Registry
	Breakers *breaker.Breakers // nil when disabled
	Limiter  *limiter.Limiter  // vendor rpm/tpm windows shared by all executors
	Cache    *respcache.Cache  // nil when disabled
	Budgets  *budget.Budgets   // tenant budgets and quotas
	Hedges   *hedge.Tracker    // branches of hedged requests

	cfg       Config
	validator *envelope.Validator
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	executors map[string][]replica
	stops     []func()
}

// Start boots everything and returns once every stage is consuming.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (_ *System, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &System{Log: log, cfg: cfg, executors: map[string][]replica{}, Registry: obs.NewRegistry()}
	defer func() {
		if err != nil {
			s.Stop() // undo whatever started before the failure
		}
	}()
	pol := cfg.Policy
	if pol == nil {
		if pol, err = policy.Load(cfg.PolicyFile); err != nil {
			return nil, err
		}
	}
	s.Policy = pol

	if cfg.NATSURL == "" {
		ns, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: cfg.NATSPort, StoreDir: filepath.Join(cfg.DataDir, "jetstream")})
		if err != nil {
			return nil, err
		}
		s.NATS = ns
		s.NATSURL = ns.ClientURL()
		s.stops = append(s.stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
	} else {
		s.NATSURL = cfg.NATSURL
	}
	if s.NC, err = natsx.Connect(s.NATSURL, "switchyard-up"); err != nil {
		return nil, err
	}
	nc := s.NC
	s.stops = append(s.stops, func() { _ = nc.Drain() })
	if s.JS, err = jetstream.New(s.NC); err != nil {
		return nil, err
	}
	s.Registry.MustRegister(natsx.NewCollector(s.JS, log.With().Str("component", "jetstream_metrics").Logger()))
	topo := natsx.DefaultTopology()
	if cfg.Topology != nil {
		topo = *cfg.Topology
	}
	if err := natsx.EnsureTopology(ctx, s.JS, topo); err != nil {
		return nil, err
	}

	if cfg.Sim == SimOn || cfg.Sim == SimAuto && !anyVendorKey(pol) {
		if err := s.startSim(cfg); err != nil {
			return nil, err
		}
	}
	if s.validator, err = envelope.NewValidator(); err != nil {
		return nil, err
	}

	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if s.Policies, err = policy.OpenStore(ctx, s.JS, "", log.With().Str("component", "policy").Logger()); err != nil {
		return nil, err
	}
	if err := s.Policies.Watch(s.ctx, s.Policy, nil); err != nil {
		return nil, err
	}
	if cfg.BreakersEnabled {
		b, err := breaker.New(ctx, s.JS, cfg.Breaker, breaker.Deps{Log: log.With().Str("component", "breaker").Logger(), Alert: breaker.JetStreamAlert(s.JS)})
		if err != nil {
			return nil, fmt.Errorf("circuit breakers: %w", err)
		}
		s.Breakers = b
		s.stops = append(s.stops, func() { _ = b.Close() })
	}
	if s.Limiter, err = limiter.New(ctx, s.JS, VendorLimits(s.Policy)); err != nil {
		return nil, err
	}
	if s.Budgets, err = budget.New(ctx, s.JS, budget.Config{}, budget.Deps{Log: log.With().Str("component", "budget").Logger()}); err != nil {
		return nil, err
	}
	if s.Hedges, err = hedge.New(ctx, s.JS, ""); err != nil {
		return nil, err
	}
	if cfg.CacheEnabled {
		if s.Cache, err = respcache.New(ctx, s.JS, respcache.Config{}, log.With().Str("component", "cache").Logger()); err != nil {
			return nil, err
		}
	}
	if err := s.startStages(ctx); err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		h := &obs.Health{}
		h.SetReady(true)
		s.spawn("http", func(ctx context.Context) error { return obs.Serve(ctx, log, cfg.HTTPAddr, s.Registry, h) })
	}
	return s, nil
}

func (s *System) startSim(cfg Config) error {
	sc := sim.Scenario{}
	if cfg.Scenario != nil {
		sc = *cfg.Scenario
	}
	srv := sim.New(sc, s.Log.With().Str("service", "sim").Logger())
	addr, err := srv.Start(cfg.SimAddr)
	if err != nil {
		return fmt.Errorf("start simulator: %w", err)
	}
	s.Sim, s.SimURL = srv, "http://"+addr
	s.stops = append(s.stops, func() { _ = srv.Close() })
	// Point every vendor at the simulator, speaking its own protocol.
	for name, v := range s.Policy.Vendors {
		v.BaseURL = sim.BaseURL(addr, v.Kind)
		v.APIKeyEnv = ""
		s.Policy.Vendors[name] = v
	}
	s.Log.Info().Str("addr", addr).Msg("vendor simulator serving every vendor")
	return nil
}

// VendorLimits collects the vendors' rpm/tpm limits from the policy.
func VendorLimits(p *policy.Policy) map[string]limiter.Limits {
	out := map[string]limiter.Limits{}
	for name, v := range p.Vendors {
		out[name] = limiter.Limits{RPM: v.RPM, TPM: v.TPM}
	}
	return out
}

func anyVendorKey(p *policy.Policy) bool {
	for _, v := range p.Vendors {
		if v.APIKeyEnv != "" && os.Getenv(v.APIKeyEnv) != "" {
			return true
		}
	}
	return false
}

func (s *System) startStages(ctx context.Context) error {
	l := func(name string) zerolog.Logger { return s.Log.With().Str("service", name).Logger() }
	in, err := intake.New(s.cfg.Intake, intake.Deps{Log: l("intake"), NC: s.NC, JS: s.JS, Policy: s.Policies, Validator: s.validator, Metrics: s.Registry})
	if err != nil {
		return err
	}
	rt, err := router.New(s.cfg.Router, router.Deps{Log: l("router"), NC: s.NC, JS: s.JS, Policy: s.Policies, Breakers: s.Breakers, Cache: s.Cache, Budgets: s.Budgets, Hedges: s.Hedges, Metrics: s.Registry})
	if err != nil {
		return err
	}
	gt, err := gate.New(s.cfg.Gate, gate.Deps{Log: l("gate"), NC: s.NC, JS: s.JS, Policy: s.Policies, Metrics: s.Registry})
	if err != nil {
		return err
	}
	s.spawn("intake", in.Run)
	s.spawn("router", rt.Run)
	s.spawn("gate", gt.Run)
	for _, name := range s.Policy.VendorNames() {
		if slices.Contains(s.cfg.ExternalExecutors, name) {
			continue
		}
		for range s.cfg.ExecutorReplicas {
			if err := s.AddExecutor(name); err != nil {
				return err
			}
		}
	}
	if s.cfg.LedgerEnabled {
		s.spawn("ledger", s.runLedger)
	}
	return nil
}

// runLedger waits for ClickHouse, migrates and runs the ledger. Until
// ClickHouse answers, telemetry waits in JetStream: nothing is lost.
func (s *System) runLedger(ctx context.Context) error {
	log := s.Log.With().Str("service", "ledger").Logger()
	var conn interface{ Close() error }
	for {
		c, err := ledger.Open(ctx, s.cfg.Ledger)
		if err == nil {
			if _, err = ledger.Migrate(ctx, c, s.cfg.Ledger.ClickHouseDatabase, log); err == nil {
				conn = c
				l, err := ledger.New(s.cfg.Ledger, ledger.Deps{Log: log, JS: s.JS, CH: c, Catalog: s.Policies, Registerer: s.Registry})
				if err != nil {
					return err
				}
				defer conn.Close()
				if !s.cfg.Alerts.Enabled {
					return l.Run(ctx)
				}
				al, err := alerts.New(s.cfg.Alerts, alerts.Deps{Log: s.Log.With().Str("service", "alerts").Logger(),
					JS: s.JS, CH: c, Database: s.cfg.Ledger.ClickHouseDatabase, Policy: s.Policies})
				if err != nil {
					return err
				}
				return svc.RunBeside(ctx, l.Run, al.Run)
			}
			_ = c.Close()
		}
		log.Warn().Err(err).Msg("clickhouse not ready; telemetry is kept in JetStream, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

// AddExecutor starts one more executor replica of a vendor.
func (s *System) AddExecutor(vendorName string) error {
	adapter, err := executor.AdapterFor(s.Policy, vendorName, os.Getenv)
	if err != nil {
		return err
	}
	cfg := s.cfg.Executor
	cfg.Vendor = vendorName
	s.mu.Lock()
	n := len(s.executors[vendorName])
	s.mu.Unlock()
	log := s.Log.With().Str("service", "executor").Str("vendor", vendorName).Int("replica", n).Logger()
	ex, err := executor.New(cfg, executor.Deps{Log: log, NC: s.NC, JS: s.JS, Policy: s.Policies, Adapter: adapter, Breakers: s.Breakers, Limiter: s.Limiter, Hedges: s.Hedges, Metrics: s.Registry})
	if err != nil {
		return err
	}
	cancel := s.spawn("executor-"+vendorName, ex.Run)
	s.mu.Lock()
	s.executors[vendorName] = append(s.executors[vendorName], replica{ex: ex, stop: cancel})
	s.mu.Unlock()
	return nil
}

type replica struct {
	ex   *executor.Executor
	stop context.CancelFunc
}

// ExecutorHandled is how many attempts one replica of a vendor performed.
func (s *System) ExecutorHandled(vendorName string, i int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if list := s.executors[vendorName]; i < len(list) {
		return list[i].ex.Handled()
	}
	return 0
}

// StopExecutor stops one replica of a vendor's executor (its in-flight work
// finishes or is handed back), as a scale-down or a crash would.
func (s *System) StopExecutor(vendorName string, replica int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if list := s.executors[vendorName]; replica < len(list) {
		list[replica].stop()
	}
}

func (s *System) spawn(name string, run func(context.Context) error) context.CancelFunc {
	ctx, cancel := context.WithCancel(s.ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			s.Log.Error().Err(err).Str("component", name).Msg("component stopped with an error")
		}
	}()
	return cancel
}

// Stop shuts down gracefully: stages stop taking work and finish what is in
// flight, then NATS, the simulator and the embedded server stop.
func (s *System) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}
