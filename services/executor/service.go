package executor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/svc"
)

// ServiceConfig is the executor binary's configuration.
type ServiceConfig struct {
	svc.Common
	Executor Config `envconfig:"EXECUTOR"`
	// Vendor is read as SWITCHYARD_VENDOR, as the contract names it.
	Vendor string `envconfig:"VENDOR"` // required: Validate says so
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error {
	ex := c.Executor
	ex.Vendor = c.Vendor
	return errors.Join(c.Common.Validate(), ex.Validate())
}

// Build assembles the executor binary's stages: one replica of its vendor.
func (c *ServiceConfig) Build(_ context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	cfg := c.Executor
	cfg.Vendor = c.Vendor
	e, err := FromRuntime(rt, cfg)
	if err != nil {
		return nil, err
	}
	return []svc.Stage{e.Stage(0)}, nil
}

// FromRuntime builds one replica of cfg.Vendor's executor the one way
// every process runs it: with the process's breakers, vendor limits and
// hedge tracker, and the adapter the policy names (its key from the
// environment variable the policy names).
func FromRuntime(rt *svc.Runtime, cfg Config) (*Executor, error) {
	adapter, err := AdapterFor(rt.Policy, cfg.Vendor, os.Getenv)
	if err != nil {
		return nil, err
	}
	// No vendor key on the logger: the executor writes it on each line
	// about a call, and a second one would duplicate it.
	return New(cfg, Deps{Log: rt.Logger("executor"), NC: rt.NC, JS: rt.JS,
		Policy: rt.Policies, Adapter: adapter, Breakers: rt.Breakers, Limiter: rt.Limiter, Hedges: rt.Hedges, Metrics: rt.Registry})
}

// Stage is replica i of the executor under supervision; all replicas of a
// vendor share one consumer.
func (e *Executor) Stage(i int) svc.Stage {
	return svc.Stage{Name: fmt.Sprintf("executor %s/%d", e.cfg.Vendor, i), Run: e.Run,
		Stream: natsx.StreamPipeline, Consumer: e.ConsumerConfig().Durable}
}
