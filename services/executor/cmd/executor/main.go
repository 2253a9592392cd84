// Command executor runs one vendor's executor; SWITCHYARD_VENDOR names the
// vendor (a key of the policy's vendors), whose kind picks the adapter. Run
// N copies with the same SWITCHYARD_VENDOR to scale that vendor.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/switchyard-llm/switchyard/pkg/limiter"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
)

type config struct {
	svc.Common
	Stage executor.Config `envconfig:"EXECUTOR"`
	// Vendor is read as SWITCHYARD_VENDOR, as the contract names it.
	Vendor string `envconfig:"VENDOR" required:"true"`
}

func (c config) Validate() error {
	stage := c.Stage
	stage.Vendor = c.Vendor
	return errors.Join(c.Common.Validate(), stage.Validate())
}

func main() {
	var cfg config
	if err := svc.Load(&cfg); err != nil {
		svc.Fatal("executor", err)
	}
	cfg.Stage.Vendor = cfg.Vendor
	ctx, stop := svc.SignalContext()
	defer stop()
	if err := run(ctx, cfg); err != nil {
		svc.Fatal("executor", err)
	}
}

func run(ctx context.Context, cfg config) error {
	env, err := svc.Setup(ctx, "executor", cfg.Common)
	if err != nil {
		return err
	}
	defer env.Close()
	adapter, err := executor.AdapterFor(env.Policy, cfg.Vendor, os.Getenv)
	if err != nil {
		return err
	}
	v := env.Policy.Vendors[cfg.Vendor]
	lim, err := limiter.New(ctx, env.JS, map[string]limiter.Limits{cfg.Vendor: {RPM: v.RPM, TPM: v.TPM}})
	if err != nil {
		return err
	}
	reg := obs.NewRegistry()
	st, err := executor.New(cfg.Stage, executor.Deps{Log: env.Log.With().Str("vendor", cfg.Vendor).Logger(), NC: env.NC, JS: env.JS, Policy: env.Policies, Adapter: adapter, Limiter: lim, Metrics: reg})
	if err != nil {
		return err
	}
	return svc.RunWithHTTP(ctx, env.Log, cfg.HTTPAddr, reg, st.Run)
}
