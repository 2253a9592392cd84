// Command ledger runs the cost ledger on its own: it migrates ClickHouse,
// then stores LLM_TELEMETRY events until SIGTERM, finishing the batch in
// hand before it exits. Configuration comes from SWITCHYARD_* variables.
package main

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
)

type config struct {
	svc.Common
	ledger.Config
	Alerts alerts.Config `envconfig:"ALERTS"`
}

func (c config) Validate() error {
	return errors.Join(c.Common.Validate(), c.Config.Validate(), c.Alerts.Validate())
}

func main() {
	var cfg config
	if err := svc.Load(&cfg); err != nil {
		svc.Fatal("ledger", err)
	}
	ctx, stop := svc.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		svc.Fatal("ledger", err)
	}
}

func run(ctx context.Context, cfg config) error {
	env, err := svc.Setup(ctx, "ledger", cfg.Common)
	if err != nil {
		return err
	}
	defer env.Close()
	conn, err := ledger.Open(ctx, cfg.Config)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, env.Log); err != nil {
		return err
	}
	reg := obs.NewRegistry()
	l, err := ledger.New(cfg.Config, ledger.Deps{Log: env.Log, JS: env.JS, CH: conn, Catalog: env.Policies, Registerer: reg})
	if err != nil {
		return err
	}
	reg.MustRegister(natsx.NewCollector(env.JS, env.Log))
	run := l.Run
	if cfg.Alerts.Enabled {
		al, err := alerts.New(cfg.Alerts, alerts.Deps{Log: env.Log.With().Str("component", "alerts").Logger(),
			JS: env.JS, CH: conn, Database: cfg.ClickHouseDatabase, Policy: env.Policies})
		if err != nil {
			return err
		}
		run = func(ctx context.Context) error { return svc.RunBeside(ctx, l.Run, al.Run) }
	}
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, run)
}
