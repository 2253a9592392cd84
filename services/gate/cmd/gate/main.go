// Command gate runs the gate stage on its own.
package main

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/gate"
)

type config struct {
	svc.Common
	Stage gate.Config `envconfig:"GATE"`
}

func (c config) Validate() error { return errors.Join(c.Common.Validate(), c.Stage.Validate()) }

func main() {
	var cfg config
	if err := svc.Load(&cfg); err != nil {
		svc.Fatal("gate", err)
	}
	ctx, stop := svc.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		svc.Fatal("gate", err)
	}
}

func run(ctx context.Context, cfg config) error {
	env, err := svc.Setup(ctx, "gate", cfg.Common)
	if err != nil {
		return err
	}
	defer env.Close()
	reg := obs.NewRegistry()
	st, err := gate.New(cfg.Stage, gate.Deps{Log: env.Log, NC: env.NC, JS: env.JS, Policy: env.Policies, Metrics: reg})
	if err != nil {
		return err
	}
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, st.Run)
}
