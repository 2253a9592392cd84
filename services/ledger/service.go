package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
)

// ServiceConfig is the ledger binary's configuration. The ClickHouse and
// batch settings are read under the same names by `switchyard up` and by
// `switchyard report` (SWITCHYARD_CLICKHOUSE_*, SWITCHYARD_LEDGER_*).
type ServiceConfig struct {
	svc.Common
	// Config is embedded: its variables keep their own names.
	Config
	Alerts alerts.Config `envconfig:"ALERTS"`
}

// Validate reports every problem at once.
func (c ServiceConfig) Validate() error {
	return errors.Join(c.Common.Validate(), c.Config.Validate(), c.Alerts.Validate())
}

// Build assembles the ledger binary's stages.
func (c *ServiceConfig) Build(_ context.Context, rt *svc.Runtime) ([]svc.Stage, error) {
	return []svc.Stage{FromRuntime(rt, c.Config, c.Alerts)}, nil
}

// clickHouseRetry is how long the ledger waits between attempts to reach
// ClickHouse at start.
const clickHouseRetry = 2 * time.Second

// FromRuntime is the ledger (and the alerter beside it, when enabled) the
// one way every process runs it: it waits for ClickHouse, migrates, then
// stores telemetry. Until ClickHouse answers, telemetry waits in JetStream
// and /healthz says the ledger's consumer is not created yet.
func FromRuntime(rt *svc.Runtime, cfg Config, al alerts.Config) svc.Stage {
	log := rt.Logger("ledger")
	run := func(ctx context.Context) error {
		for {
			conn, err := Open(ctx, cfg)
			if err == nil {
				if _, err = MigrateFor(ctx, conn, cfg, log); err == nil {
					defer conn.Close()
					l, err := New(cfg, Deps{Log: log, JS: rt.JS, CH: conn, Catalog: rt.Policies, Registerer: rt.Registry})
					if err != nil {
						return err
					}
					if !al.Enabled {
						return l.Run(ctx)
					}
					a, err := alerts.New(al, alerts.Deps{Log: rt.Logger("alerts"), JS: rt.JS, CH: conn, Database: cfg.ClickHouseDatabase, Policy: rt.Policies})
					if err != nil {
						return err
					}
					return svc.RunBeside(ctx, l.Run, a.Run)
				}
				_ = conn.Close()
			}
			log.Warn().Err(err).Msg("clickhouse not ready; telemetry is kept in JetStream, retrying")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(clickHouseRetry):
			}
		}
	}
	return svc.Stage{Name: "ledger", Run: run, Stream: natsx.StreamTelemetry, Consumer: cfg.Consumer}
}
