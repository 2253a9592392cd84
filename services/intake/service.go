package intake

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/svc"
)

// ServiceConfig is the intake binary's configuration.
type ServiceConfig struct {
	svc.Common
	Intake Config `envconfig:"INTAKE"`
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error { return errors.Join(c.Common.Validate(), c.Intake.Validate()) }

// Build assembles the intake binary's stages.
func (c *ServiceConfig) Build(_ context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	in, err := FromRuntime(rt, c.Intake)
	if err != nil {
		return nil, err
	}
	return []svc.Stage{in.Stage()}, nil
}

// FromRuntime builds the intake the one way every process runs it.
func FromRuntime(rt *svc.Runtime, cfg Config) (*Intake, error) {
	v, err := envelope.NewValidator()
	if err != nil {
		return nil, err
	}
	return New(cfg, Deps{Log: rt.Logger("intake"), NC: rt.NC, JS: rt.JS, Policy: rt.Policies, Validator: v, Metrics: rt.Registry})
}

// Stage is the intake under supervision: it owns its consumer on the
// requests stream.
func (in *Intake) Stage() svc.Stage {
	return svc.Stage{Name: "intake", Run: in.Run, Stream: natsx.StreamRequests, Consumer: in.cfg.Consumer}
}
