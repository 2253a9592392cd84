package edge

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/svc"
)

// ServiceConfig is the edge binary's configuration.
type ServiceConfig struct {
	svc.Common
	Edge Config `envconfig:"EDGE"`
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error {
	var errs []error
	if c.Edge.Addr == "" {
		errs = append(errs, errors.New("SWITCHYARD_EDGE_ADDR: required for the edge binary"))
	}
	return errors.Join(append(errs, c.Common.Validate(), c.Edge.Validate())...)
}

// Build assembles the edge binary's one stage.
func (c *ServiceConfig) Build(ctx context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	e, err := FromRuntime(ctx, rt, c.Edge)
	if err != nil {
		return nil, err
	}
	return []svc.Stage{e.Stage()}, nil
}

// FromRuntime builds the edge the one way every process runs it (its
// binary, `switchyard up`, the tests): on the process's NATS connection,
// policy store and metrics registry, with the key bucket.
func FromRuntime(ctx context.Context, rt *svc.Runtime, cfg Config) (*Edge, error) {
	keys, err := apikey.Open(ctx, rt.JS)
	if err != nil {
		return nil, err
	}
	return New(cfg, Deps{Log: rt.Logger("edge"), NC: rt.NC, JS: rt.JS, Policy: rt.Policies, Keys: keys, Metrics: rt.Registry})
}

// Stage is the edge under supervision (it owns no consumer).
func (e *Edge) Stage() svc.Stage { return svc.Stage{Name: "edge", Run: e.Run} }
