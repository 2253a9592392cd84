// Command ledger runs the cost ledger on its own: it migrates ClickHouse,
// then stores LLM_TELEMETRY events until SIGTERM, finishing the batch in
// hand before it exits. Configuration comes from SWITCHYARD_* variables.
package main

import (
	"context"
	"errors"

	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/ledger"
)

type config struct {
	svc.Common
	ledger.Config
}

func (c config) Validate() error { return errors.Join(c.Common.Validate(), c.Config.Validate()) }

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
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, l.Run)
}
