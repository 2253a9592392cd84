package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// loadAppConfig reads SWITCHYARD_* variables only (never a plain NATS_URL).
func loadAppConfig() (app.Config, error) { return app.LoadConfig(os.LookupEnv) }

func runUp(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("up", errOut)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadAppConfig()
	if err != nil {
		return err
	}
	// No service key here: each stage's lines carry their own, once.
	log := logger(errOut, "", cfg.LogLevel)
	sys, err := app.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info().Str("service", "switchyard").Str("nats", sys.NATSURL).Str("sim", sys.SimURL).Msg("switchyard is up; publish to llm.requests")
	fmt.Fprintf(out, "switchyard up: NATS %s", sys.NATSURL)
	if sys.SimURL != "" {
		fmt.Fprintf(out, ", simulator %s", sys.SimURL)
	}
	fmt.Fprintln(out, " (Ctrl-C to stop)")
	<-ctx.Done()
	log.Info().Str("service", "switchyard").Msg("shutting down: draining stages")
	sys.Stop()
	return nil
}
