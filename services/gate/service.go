package gate

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/svc"
)

// ServiceConfig is the gate binary's configuration.
type ServiceConfig struct {
	svc.Common
	Gate Config `envconfig:"GATE"`
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error { return errors.Join(c.Common.Validate(), c.Gate.Validate()) }

// Build assembles the gate binary's stages.
func (c *ServiceConfig) Build(_ context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	g, err := FromRuntime(rt, c.Gate)
	if err != nil {
		return nil, err
	}
	return []svc.Stage{g.Stage()}, nil
}

// FromRuntime builds the gate the one way every process runs it. The gate
// only judges, so it needs no breakers, budgets, hedges or cache.
func FromRuntime(rt *svc.Runtime, cfg Config) (*Gate, error) {
	return New(cfg, Deps{Log: rt.Logger("gate"), NC: rt.NC, JS: rt.JS, Policy: rt.Policies, Metrics: rt.Registry})
}

// Stage is the gate under supervision.
func (g *Gate) Stage() svc.Stage {
	return svc.Stage{Name: "gate", Run: g.Run, Stream: natsx.StreamPipeline, Consumer: g.cfg.Consumer}
}
