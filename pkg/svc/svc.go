// Package svc holds the configuration every service binary shares and the
// start-up steps around it (logger, NATS, topology, policy), so each main.go
// stays a few lines long.
package svc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// Prefix is the environment prefix of every setting.
const Prefix = "SWITCHYARD"

// Common is configuration shared by every service.
type Common struct {
	NATSURL    string        `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	PolicyFile string        `envconfig:"POLICY" default:"deployments/policy.yaml"`
	HTTPAddr   string        `envconfig:"HTTP_ADDR" default:"127.0.0.1:0"`
	LogLevel   string        `envconfig:"LOG_LEVEL" default:"info"`
	Shutdown   time.Duration `envconfig:"SHUTDOWN_GRACE" default:"15s"`
}

// Validate reports every problem at once.
func (c Common) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("SWITCHYARD_NATS_URL: required"))
	}
	if c.PolicyFile == "" {
		errs = append(errs, errors.New("SWITCHYARD_POLICY: required"))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("SWITCHYARD_LOG_LEVEL: %w", err))
	}
	if c.Shutdown <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_SHUTDOWN_GRACE: must be positive"))
	}
	return errors.Join(errs...)
}

// Validator is a config that can check itself.
type Validator interface{ Validate() error }

// Load fills cfg from the environment and validates it; a mistyped value
// fails loudly here rather than misbehaving later.
func Load(cfg Validator) error {
	if err := envconfig.Process(Prefix, cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config:\n%w", err)
	}
	return nil
}

// Env is what a standalone service binary builds before New.
type Env struct {
	Log    zerolog.Logger
	NC     *nats.Conn
	JS     jetstream.JetStream
	Policy *policy.Policy // the file policy
	// Policies follows `switchyard policy apply`, falling back to the file
	// until a version is applied. Stages take it as their policy.Source.
	Policies *policy.Store
}

// Setup connects to NATS, ensures the topology and loads the policy.
func Setup(ctx context.Context, service string, c Common) (*Env, error) {
	log, err := obs.NewLogger(os.Stderr, service, c.LogLevel)
	if err != nil {
		return nil, err
	}
	pol, err := policy.Load(c.PolicyFile)
	if err != nil {
		return nil, err
	}
	nc, err := natsx.Connect(c.NATSURL, "switchyard-"+service)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := natsx.EnsureTopology(ctx, js, natsx.DefaultTopology()); err != nil {
		nc.Close()
		return nil, err
	}
	store, err := policy.OpenStore(ctx, js, "", log)
	if err == nil {
		err = store.Watch(ctx, pol, nil)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Env{Log: log, NC: nc, JS: js, Policy: pol, Policies: store}, nil
}

// Close drains the NATS connection.
func (e *Env) Close() {
	if e.NC != nil {
		_ = e.NC.Drain()
	}
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

// RunWithHTTP serves /healthz and /metrics beside run, ready once run has
// started, and returns when run returns.
func RunWithHTTP(ctx context.Context, log zerolog.Logger, addr string, reg *prometheus.Registry, run func(context.Context) error) error {
	h := &obs.Health{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	httpErr := make(chan error, 1)
	go func() { httpErr <- obs.Serve(ctx, log, addr, reg, h) }()
	h.SetReady(true)
	err := run(ctx)
	cancel()
	if herr := <-httpErr; err == nil {
		err = herr
	}
	return err
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
