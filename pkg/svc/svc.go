// Package svc assembles a Switchyard process: its configuration (read from
// SWITCHYARD_* variables only), its Runtime (the collaborators every stage
// shares, built once per process the same way in `switchyard up` and in
// each service binary), the supervision of its stages and /healthz.
package svc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// Load fills cfg from the process environment (SWITCHYARD_* names only)
// and validates it.
func Load(cfg Validator) error { return envcfg.Load(cfg) }

// Features are the shared collaborators a process may switch off; `up` and
// every binary read them under the same names.
type Features struct {
	// Breakers are shared by every router and executor through a KV bucket.
	BreakersEnabled bool           `envconfig:"BREAKERS" default:"true"`
	Breaker         breaker.Config `envconfig:"BREAKER"`
	// CacheEnabled runs the response cache for routes that set a cache TTL.
	CacheEnabled bool `envconfig:"CACHE" default:"true"`
	// StreamAnchors keeps an anchor in each work-queue stream a stage of
	// the process pulls from, so the stream never drains to empty
	// (natsx.KeepAnchor): off, each drain replaces a block file.
	StreamAnchors bool `envconfig:"STREAM_ANCHORS" default:"true"`
}

// Validate reports every problem at once.
func (f Features) Validate() error {
	if f.BreakersEnabled {
		return f.Breaker.Validate()
	}
	return nil
}

// Common is configuration shared by every service binary.
type Common struct {
	NATSURL string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	// NATSReplicas of every stream and KV bucket: 3 on a 3-node cluster.
	NATSReplicas int    `envconfig:"NATS_REPLICAS" default:"1"`
	PolicyFile   string `envconfig:"POLICY" default:"deployments/policy.yaml"`
	HTTPAddr     string `envconfig:"HTTP_ADDR" default:"127.0.0.1:0"`
	// Pprof serves Go's profiler at /debug/pprof/ on HTTP_ADDR (docs/performance.md).
	Pprof    bool   `envconfig:"PPROF" default:"false"`
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`
	// NATS credentials (SWITCHYARD_NATS_CREDS: `up` writes one per service
	// into <data>/creds) and TLS (SWITCHYARD_NATS_TLS_CA/CERT/KEY).
	natsx.ClientAuth
	Features
	GC
}

// Base is the common part of a binary's configuration.
func (c *Common) Base() *Common { return c }

// Validate reports every problem at once.
func (c Common) Validate() error {
	var errs []error
	if err := natsx.ValidateURLs(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("SWITCHYARD_NATS_URL: %w", err))
	}
	errs = append(errs, ValidateReplicas(c.NATSReplicas))
	if c.PolicyFile == "" {
		errs = append(errs, errors.New("SWITCHYARD_POLICY: required"))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("SWITCHYARD_LOG_LEVEL: %w", err))
	}
	errs = append(errs, c.Features.Validate(), c.ClientAuth.Validate(), c.GC.Validate())
	return errors.Join(errs...)
}

// ValidateReplicas checks SWITCHYARD_NATS_REPLICAS: JetStream allows 1 to 5.
func ValidateReplicas(n int) error {
	if n < 1 || n > 5 {
		return fmt.Errorf("SWITCHYARD_NATS_REPLICAS: %d is not between 1 and 5", n)
	}
	return nil
}

// Validator is a config that can check itself.
type Validator = envcfg.Validator

// Config is a service binary's configuration (Common plus its stage's)
// and how the binary assembles its stages on the process runtime.
type Config interface {
	Validator
	Base() *Common
	Build(ctx context.Context, rt *Runtime) ([]Stage, error)
}

// Main is every service binary's main: read cfg from the environment, run
// the service until SIGINT/SIGTERM, exit non-zero with a message on any
// error (a bad setting, NATS unreachable, an address in use).
func Main(name string, cfg Config) {
	if err := Load(cfg); err != nil {
		Fatal(name, err)
	}
	ctx, stop := SignalContext()
	defer stop()
	if err := Run(ctx, name, cfg, os.Stderr); err != nil {
		Fatal(name, err)
	}
}

// Run opens the process runtime from cfg, builds the stages, serves
// /healthz and /metrics on SWITCHYARD_HTTP_ADDR and supervises the stages
// until ctx is done.
func Run(ctx context.Context, name string, cfg Config, logOut io.Writer) error {
	c := cfg.Base()
	log, err := obs.NewLogger(logOut, "", c.LogLevel)
	if err != nil {
		return err
	}
	gcPercent, gcLimit := c.GC.Apply(os.Getenv)
	log.Debug().Str("service", name).Int("gc_percent", gcPercent).Int64("gc_memory_limit_mib", gcLimit).Msg("garbage collector (-2, -1: GOGC, GOMEMLIMIT decide)")
	ln, err := obs.Listen(c.HTTPAddr)
	if err != nil {
		return err
	}
	if ln != nil {
		defer ln.Close() // a failed start frees the address (closing twice is harmless)
	}
	pol, err := policy.Load(c.PolicyFile)
	if err != nil {
		return err
	}
	rt, err := Open(ctx, Options{Name: name, NATSURL: c.NATSURL, Auth: c.ClientAuth, Replicas: c.NATSReplicas, Policy: pol, Log: log, Features: c.Features})
	if err != nil {
		return err
	}
	defer rt.Close()
	stages, err := cfg.Build(ctx, rt)
	if err != nil {
		return err
	}
	for _, st := range stages {
		rt.Go(st)
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- obs.Serve(ctx, rt.Logger(name), ln, rt.Registry, rt.Health, obs.WithPprof(c.Pprof)) }()
	select {
	case <-ctx.Done():
	case err = <-httpErr:
		if err != nil {
			return err
		}
		<-ctx.Done() // no HTTP server (SWITCHYARD_HTTP_ADDR empty)
	}
	return nil // the deferred Close lets the stages finish their in-flight work
}

// SignalContext is cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Fatal prints err and exits non-zero: the one exit path of every main.
func Fatal(service string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
	os.Exit(1)
}

// RunBeside runs side next to main and stops it when main returns: a
// helper loop (the alerter beside the ledger) that must not outlive it.
func RunBeside(ctx context.Context, main, side func(context.Context) error) error {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = side(sctx) }()
	err := main(ctx)
	cancel()
	<-done
	return err
}
