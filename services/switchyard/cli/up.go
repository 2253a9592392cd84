package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/kelseyhightower/envconfig"

	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

func loadAppConfig() (app.Config, error) {
	var cfg app.Config
	if err := envconfig.Process("SWITCHYARD", &cfg); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

func runUp(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("up", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadAppConfig()
	if err != nil {
		return err
	}
	log := logger(errOut, "switchyard", cfg.LogLevel)
	sys, err := app.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info().Str("nats", sys.NATSURL).Str("sim", sys.SimURL).Msg("switchyard is up; publish to llm.requests")
	fmt.Fprintf(out, "switchyard up: NATS %s", sys.NATSURL)
	if sys.SimURL != "" {
		fmt.Fprintf(out, ", simulator %s", sys.SimURL)
	}
	fmt.Fprintln(out, " (Ctrl-C to stop)")
	<-ctx.Done()
	log.Info().Msg("shutting down: draining stages")
	sys.Stop()
	return nil
}
