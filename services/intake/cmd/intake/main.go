// Command intake runs the intake/classifier stage on its own.
package main

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/intake"
)

type config struct {
	svc.Common
	Intake intake.Config `envconfig:"INTAKE"`
}

func (c config) Validate() error { return errors.Join(c.Common.Validate(), c.Intake.Validate()) }

func main() {
	var cfg config
	if err := svc.Load(&cfg); err != nil {
		svc.Fatal("intake", err)
	}
	ctx, stop := svc.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		svc.Fatal("intake", err)
	}
}

func run(ctx context.Context, cfg config) error {
	env, err := svc.Setup(ctx, "intake", cfg.Common)
	if err != nil {
		return err
	}
	defer env.Close()
	v, err := envelope.NewValidator()
	if err != nil {
		return err
	}
	reg := obs.NewRegistry()
	in, err := intake.New(cfg.Intake, intake.Deps{Log: env.Log, NC: env.NC, JS: env.JS, Policy: env.Policies, Validator: v, Metrics: reg})
	if err != nil {
		return err
	}
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, in.Run)
}
