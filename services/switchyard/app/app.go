// Package app boots the whole pipeline in one process: an embedded NATS
// JetStream server (or an external one), the vendor simulator when no real
// vendor keys are configured, and every stage. `switchyard up`, the demo,
// the benchmark and the integration tests all start the system through it.
// Each stage is assembled by the same function its own binary uses
// (router.FromRuntime, executor.FromRuntime, …) on one svc.Runtime, so the
// in-process system and the multi-process deployment behave alike.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/limiter"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/edge"
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

// Ledger is the ledger's configuration, embedded in Config under this name.
type Ledger = ledger.Config

// Config is the configuration of `switchyard up`. Every field is read from
// its SWITCHYARD_ name only (see LoadConfig); the shared settings
// (features, stage configs, ClickHouse) have the same names as in the
// service binaries.
type Config struct {
	DataDir  string `envconfig:"DATA_DIR" default:"data"`
	NATSURL  string `envconfig:"NATS_URL"` // empty: run an embedded server
	NATSPort int    `envconfig:"NATS_PORT" default:"4222"`
	// NATSHost is the embedded server's interface: 0.0.0.0 (or one
	// address) serves executors of other machines, only with auth on.
	NATSHost string `envconfig:"NATS_HOST" default:"127.0.0.1"`
	// NATSAuth "on" runs the embedded server with the JWT identities of
	// docs/security.md; "off" lets any client do anything (dev only).
	NATSAuth string `envconfig:"NATS_AUTH" default:"on"`
	// With the embedded server, NATS_TLS_CERT/KEY are its certificate
	// (NATS_TLS_CA verifies it for the in-process client); with an
	// external one, NATS_CREDS and NATS_TLS_* are the client's.
	natsx.ClientAuth
	// NATSInProcess connects `up`'s own stages to the embedded server
	// without a socket (natsx.BufferedInProcess); false uses loopback TCP
	// like every other client.
	NATSInProcess    bool   `envconfig:"NATS_IN_PROCESS" default:"true"`
	NATSReplicas     int    `envconfig:"NATS_REPLICAS" default:"1"` // 3 against a 3-node cluster
	PolicyFile       string `envconfig:"POLICY" default:"deployments/policy.yaml"`
	Sim              string `envconfig:"SIM" default:"auto"`
	SimAddr          string `envconfig:"SIM_ADDR" default:"127.0.0.1:8089"`
	ExecutorReplicas int    `envconfig:"EXECUTOR_REPLICAS" default:"1"`
	HTTPAddr         string `envconfig:"HTTP_ADDR" default:"127.0.0.1:9090"`
	// Pprof serves Go's profiler at /debug/pprof/ on HTTP_ADDR (docs/performance.md).
	Pprof    bool   `envconfig:"PPROF" default:"false"`
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`
	// Ledger off runs the pipeline without ClickHouse (telemetry then waits
	// in JetStream until a ledger runs).
	LedgerEnabled bool `envconfig:"LEDGER" default:"true"`
	svc.Features
	// GC is the process's garbage collector (SWITCHYARD_GC_PERCENT,
	// SWITCHYARD_GC_MEMORY_LIMIT_MIB), applied by `up` unless GOGC or
	// GOMEMLIMIT is set.
	svc.GC

	Intake   intake.Config   `envconfig:"INTAKE"`
	Router   router.Config   `envconfig:"ROUTER"`
	Executor executor.Config `envconfig:"EXECUTOR"`
	Gate     gate.Config     `envconfig:"GATE"`
	// Ledger is embedded, so its settings keep the ledger binary's names
	// (SWITCHYARD_CLICKHOUSE_*, SWITCHYARD_LEDGER_BATCH_SIZE …) and `up`
	// writes where `report` reads.
	Ledger
	Alerts alerts.Config `envconfig:"ALERTS"`
	// Edge is the HTTP API (SWITCHYARD_EDGE_ADDR empty: none).
	Edge edge.Config `envconfig:"EDGE"`

	// ExternalExecutors names vendors whose executors run as processes of
	// their own; `up` starts none for them.
	ExternalExecutors []string `envconfig:"EXTERNAL_EXECUTORS"`

	// Topology and Policy may be set by tests; zero values use defaults.
	Topology *natsx.TopologyConfig `ignored:"true"`
	Policy   *policy.Policy        `ignored:"true"`
	Scenario *sim.Scenario         `ignored:"true"`
}

// LoadConfig reads `up`'s configuration through lookup (os.LookupEnv in the
// command): SWITCHYARD_ names only, so a natscli user's NATS_URL does not
// turn `up` into a client of another server.
func LoadConfig(lookup envcfg.Lookup) (Config, error) {
	var cfg Config
	if err := envcfg.LoadFrom(lookup, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
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
	switch c.NATSAuth {
	case AuthOn, AuthOff:
	default:
		errs = append(errs, fmt.Errorf("SWITCHYARD_NATS_AUTH: %q is not one of on, off", c.NATSAuth))
	}
	if c.NATSURL == "" && c.NATSAuth == AuthOff && !isLoopback(c.NATSHost) {
		errs = append(errs, fmt.Errorf("SWITCHYARD_NATS_HOST: %s serves other machines: only with SWITCHYARD_NATS_AUTH=on", c.NATSHost))
	}
	errs = append(errs, c.ClientAuth.Validate())
	switch c.Sim {
	case SimAuto, SimOn, SimOff:
	default:
		errs = append(errs, fmt.Errorf("SWITCHYARD_SIM: %q is not one of auto, on, off", c.Sim))
	}
	errs = append(errs, svc.ValidateReplicas(c.NATSReplicas))
	if c.ExecutorReplicas < 1 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_REPLICAS: must be at least 1"))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("SWITCHYARD_LOG_LEVEL: %w", err))
	}
	errs = append(errs, c.Intake.Validate(), c.Router.Validate(), c.Gate.Validate(), c.Features.Validate(), c.GC.Validate())
	// The executor's vendor is filled per instance; check the rest.
	ex := c.Executor
	ex.Vendor = "any"
	errs = append(errs, ex.Validate())
	if c.LedgerEnabled {
		errs = append(errs, c.Ledger.Validate(), c.Alerts.Validate())
	}
	if c.Edge.Addr != "" {
		errs = append(errs, c.Edge.Validate())
	}
	return errors.Join(errs...)
}

// SWITCHYARD_NATS_AUTH values.
const (
	AuthOn  = "on"
	AuthOff = "off"
)

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// System is a running pipeline.
type System struct {
	Log     zerolog.Logger
	NATS    *server.Server // nil with an external NATS
	NATSURL string
	// Auth is the embedded server's identity authority (nil with auth off
	// or an external NATS); OperatorCreds the in-process user's file.
	Auth          *natsauth.Authority
	OperatorCreds string
	// ClientAuth is how the in-process connection authenticated and
	// checked the server (its TLS CA serves other clients too).
	ClientAuth natsx.ClientAuth
	NC         *nats.Conn
	JS         jetstream.JetStream
	Policy     *policy.Policy // the file policy the system started with
	// Policies follows `switchyard policy apply`: every stage reads the
	// version in force through it.
	Policies *policy.Store
	Sim      *sim.Server // nil when vendors are real
	SimURL   string
	Registry *prometheus.Registry
	Health   *obs.Health
	Breakers *breaker.Breakers // nil when disabled
	Limiter  *limiter.Limiter  // vendor rpm/tpm windows shared by all executors
	Cache    *respcache.Cache  // nil when disabled
	Budgets  *budget.Budgets   // tenant budgets and quotas
	Hedges   *hedge.Tracker    // branches of hedged requests
	// Runtime is what every stage shares (the same as in a service binary).
	Runtime *svc.Runtime
	// HTTPAddr is where /healthz and /metrics listen ("" when off).
	HTTPAddr string
	// EdgeAddr is where the HTTP API listens ("" when off).
	EdgeAddr string

	cfg       Config
	mu        sync.Mutex
	executors map[string][]replica
	stops     []func()
}

// Start boots everything and returns once every stage is consuming. The
// logger should carry no `service` key: each stage adds its own.
func Start(ctx context.Context, cfg Config, log zerolog.Logger) (_ *System, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &System{Log: log, cfg: cfg, executors: map[string][]replica{}}
	defer func() {
		if err != nil {
			s.Stop() // undo whatever started before the failure
		}
	}()
	// Listen first: a taken address fails the start with "address already
	// in use" before anything else runs.
	ln, err := obs.Listen(cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	if ln != nil {
		s.HTTPAddr = ln.Addr().String()
		s.stops = append(s.stops, func() { _ = ln.Close() })
	}
	pol := cfg.Policy
	if pol == nil {
		if pol, err = policy.Load(cfg.PolicyFile); err != nil {
			return nil, err
		}
	}
	s.Policy = pol

	clientAuth := cfg.ClientAuth
	if cfg.NATSURL == "" {
		nopts := natsserver.Options{Host: cfg.NATSHost, Port: cfg.NATSPort, StoreDir: filepath.Join(cfg.DataDir, "jetstream")}
		if cfg.NATSAuth == AuthOn {
			if nopts.Auth, err = s.authority(cfg.DataDir, pol); err != nil {
				return nil, err
			}
			clientAuth.Creds = s.OperatorCreds
		}
		if cfg.TLSCert != "" {
			if nopts.TLS, clientAuth, err = serverTLS(cfg.ClientAuth, clientAuth); err != nil {
				return nil, err
			}
		}
		ns, err := natsserver.Start(nopts)
		if err != nil {
			return nil, err
		}
		s.NATS = ns
		s.NATSURL = ns.ClientURL()
		s.stops = append(s.stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
	} else {
		s.NATSURL = cfg.NATSURL
	}
	if cfg.Sim == SimOn || cfg.Sim == SimAuto && !anyVendorKey(pol) {
		if err := s.startSim(cfg); err != nil {
			return nil, err
		}
	}
	s.ClientAuth = clientAuth
	rt, err := svc.Open(ctx, svc.Options{Name: "switchyard", NATSURL: s.NATSURL, Auth: clientAuth, Replicas: cfg.NATSReplicas, Policy: s.Policy, Log: log,
		Features: cfg.Features, Topology: cfg.Topology, InProcess: s.inProcess()})
	if err != nil {
		return nil, err
	}
	s.Runtime = rt
	s.stops = append(s.stops, rt.Close)
	s.NC, s.JS, s.Policies, s.Registry, s.Health = rt.NC, rt.JS, rt.Policies, rt.Registry, rt.Health
	s.Breakers, s.Limiter, s.Budgets, s.Hedges, s.Cache = rt.Breakers, rt.Limiter, rt.Budgets, rt.Hedges, rt.Cache
	if err := s.startStages(); err != nil {
		return nil, err
	}
	if ln != nil {
		httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			log := rt.Logger("switchyard")
			if err := obs.Serve(httpCtx, log, ln, s.Registry, s.Health, obs.WithPprof(cfg.Pprof)); err != nil {
				log.Error().Err(err).Msg("http server stopped")
			}
		}()
		s.stops = append(s.stops, func() { stopHTTP(); <-done })
	}
	return s, nil
}

// inProcess is the embedded server when the stages should reach it without
// a socket, else nil.
func (s *System) inProcess() nats.InProcessConnProvider {
	if s.NATS == nil || !s.cfg.NATSInProcess {
		return nil
	}
	return s.NATS
}

// authority loads (or, the first time, generates) the data directory's
// keys, writes the operator's and the services' credentials and returns
// what the embedded server trusts.
func (s *System) authority(dataDir string, pol *policy.Policy) (*natsserver.Auth, error) {
	a, err := natsauth.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	if err := a.WriteServiceCreds(pol.VendorNames()); err != nil {
		return nil, fmt.Errorf("nats auth: %w", err)
	}
	op, err := a.OperatorClaims()
	if err != nil {
		return nil, err
	}
	accounts, err := a.AccountJWTs()
	if err != nil {
		return nil, err
	}
	s.Auth, s.OperatorCreds = a, natsauth.CredsFile(dataDir, natsauth.OperatorUser)
	return &natsserver.Auth{Operator: op, SystemAccount: a.SystemAccount(), ResolverDir: natsauth.ResolverDir(dataDir), Accounts: accounts}, nil
}

// serverTLS is the embedded server's TLS from SWITCHYARD_NATS_TLS_CERT/KEY;
// the in-process client verifies it with SWITCHYARD_NATS_TLS_CA, or with
// the certificate itself (self-signed) when no CA is given.
func serverTLS(c, client natsx.ClientAuth) (*tls.Config, natsx.ClientAuth, error) {
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, client, fmt.Errorf("SWITCHYARD_NATS_TLS_CERT/KEY: %w", err)
	}
	client.TLSCert, client.TLSKey = "", "" // the server's, not a client's
	if client.TLSCA == "" {
		client.TLSCA = c.TLSCert
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, client, nil
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
	s.Log.Info().Str("service", "switchyard").Str("addr", addr).Msg("vendor simulator serving every vendor")
	return nil
}

// VendorLimits collects the vendors' rpm/tpm limits from the policy.
func VendorLimits(p *policy.Policy) map[string]limiter.Limits { return svc.VendorLimits(p) }

func anyVendorKey(p *policy.Policy) bool {
	for _, v := range p.Vendors {
		if v.APIKeyEnv != "" && os.Getenv(v.APIKeyEnv) != "" {
			return true
		}
	}
	return false
}

// startStages assembles each stage with the function its own binary uses.
func (s *System) startStages() error {
	rt := s.Runtime
	in, err := intake.FromRuntime(rt, s.cfg.Intake)
	if err != nil {
		return err
	}
	r, err := router.FromRuntime(rt, s.cfg.Router)
	if err != nil {
		return err
	}
	g, err := gate.FromRuntime(rt, s.cfg.Gate)
	if err != nil {
		return err
	}
	rt.Go(in.Stage())
	rt.Go(r.Stage())
	rt.Go(g.Stage())
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
		rt.Go(ledger.FromRuntime(rt, s.cfg.Ledger, s.cfg.Alerts))
	}
	if s.cfg.Edge.Addr != "" {
		e, err := edge.FromRuntime(context.Background(), rt, s.cfg.Edge)
		if err != nil {
			return err
		}
		s.EdgeAddr = e.Addr()
		stopEdge := rt.Go(e.Stage())
		// Stopped first (stops run last to first), while the pipeline still
		// runs: requests in flight get their answers before the stages stop.
		s.stops = append(s.stops, func() { stopEdge(); e.Wait() })
	}
	return nil
}

// AddExecutor starts one more executor replica of a vendor.
func (s *System) AddExecutor(vendorName string) error {
	cfg := s.cfg.Executor
	cfg.Vendor = vendorName
	ex, err := executor.FromRuntime(s.Runtime, cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.executors[vendorName])
	cancel := s.Runtime.Go(ex.Stage(n))
	s.executors[vendorName] = append(s.executors[vendorName], replica{ex: ex, stop: cancel})
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

// Stop shuts down gracefully: stages stop taking work and finish what is in
// flight, then NATS, the simulator and the embedded server stop.
func (s *System) Stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}
