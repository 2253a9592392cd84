package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
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
	gcPercent, gcLimit := cfg.GC.Apply(os.Getenv)
	log.Debug().Str("service", "switchyard").Int("gc_percent", gcPercent).Int64("gc_memory_limit_mib", gcLimit).Msg("garbage collector (-2, -1: GOGC, GOMEMLIMIT decide)")
	if cfg.NATSURL == "" && cfg.NATSAuth == app.AuthOff {
		log.Warn().Str("service", "switchyard").Msg("SWITCHYARD_NATS_AUTH=off: ANY client of NATS can read every tenant's prompts and replies, forge work and rewrite the policy; use it only for a throwaway dev run")
		fmt.Fprintln(errOut, "WARNING: NATS authentication is OFF (SWITCHYARD_NATS_AUTH=off): every client may read and forge everything on the bus.")
	}
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
	if sys.Auth != nil {
		credsDir := natsauth.CredsDir(cfg.DataDir)
		fmt.Fprintf(out, "NATS authentication on. Operator credentials: %s (the switchyard CLI finds them when run here;\n", sys.OperatorCreds)
		fmt.Fprintf(out, "  elsewhere: SWITCHYARD_NATS_CREDS=%s, or nats --creds %s)\n", sys.OperatorCreds, sys.OperatorCreds)
		fmt.Fprintf(out, "  service processes: SWITCHYARD_NATS_CREDS=%s/<service>.creds (executor-<vendor>.creds for executors)\n", credsDir)
		fmt.Fprintln(out, "  a tenant: switchyard tenants create acme --out acme.creds, then nats --creds acme.creds pub llm.requests ... (Go: nats.UserCredentials(\"acme.creds\"))")
	}
	<-ctx.Done()
	log.Info().Str("service", "switchyard").Msg("shutting down: draining stages")
	sys.Stop()
	return nil
}
