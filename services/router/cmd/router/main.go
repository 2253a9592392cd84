// Command router runs the router stage on its own.
package main

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/router"
)

type config struct {
	svc.Common
	Stage router.Config `envconfig:"ROUTER"`
}

func (c config) Validate() error { return errors.Join(c.Common.Validate(), c.Stage.Validate()) }

func main() {
	var cfg config
	if err := svc.Load(&cfg); err != nil {
		svc.Fatal("router", err)
	}
	ctx, stop := svc.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		svc.Fatal("router", err)
	}
}

func run(ctx context.Context, cfg config) error {
	env, err := svc.Setup(ctx, "router", cfg.Common)
	if err != nil {
		return err
	}
	defer env.Close()
	cache, err := respcache.New(ctx, env.JS, respcache.Config{}, env.Log)
	if err != nil {
		return err
	}
	budgets, err := budget.New(ctx, env.JS, budget.Config{}, budget.Deps{Log: env.Log})
	if err != nil {
		return err
	}
	reg := obs.NewRegistry()
	st, err := router.New(cfg.Stage, router.Deps{Log: env.Log, NC: env.NC, JS: env.JS, Policy: env.Policies, Cache: cache, Budgets: budgets, Metrics: reg})
	if err != nil {
		return err
	}
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, st.Run)
}
