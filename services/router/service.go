package router

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/svc"
)

// ServiceConfig is the router binary's configuration.
type ServiceConfig struct {
	svc.Common
	Router Config `envconfig:"ROUTER"`
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error { return errors.Join(c.Common.Validate(), c.Router.Validate()) }

// Build assembles the router binary's stages.
func (c *ServiceConfig) Build(_ context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	r, err := FromRuntime(rt, c.Router)
	if err != nil {
		return nil, err
	}
	return []svc.Stage{r.Stage()}, nil
}

// FromRuntime builds the router the one way every process runs it (the
// router binary, `switchyard up`, the tests): with the process's breakers,
// hedge tracker, budgets and cache.
func FromRuntime(rt *svc.Runtime, cfg Config) (*Router, error) {
	return New(cfg, Deps{Log: rt.Logger("router"), NC: rt.NC, JS: rt.JS, Policy: rt.Policies,
		Breakers: rt.Breakers, Hedges: rt.Hedges, Budgets: rt.Budgets, Cache: rt.Cache, Metrics: rt.Registry})
}

// Stage is the router under supervision: it owns its consumer on the
// pipeline stream.
func (r *Router) Stage() svc.Stage {
	return svc.Stage{Name: "router", Run: r.Run, Stream: natsx.StreamPipeline, Consumer: r.cfg.Consumer}
}
