package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/kelseyhightower/envconfig"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

func runLedger(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 || args[0] != "migrate" {
		return usageErr("ledger migrate")
	}
	var cfg ledger.Config
	if err := envconfig.Process("SWITCHYARD", &cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	conn, err := ledger.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, logger(errOut, "ledger", "info"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "database %s: %d migration(s) applied %v\n", cfg.ClickHouseDatabase, len(applied), applied)
	return nil
}

func openLedger(ctx context.Context, cfg app.Config) (driver.Conn, error) {
	return ledger.Open(ctx, cfg.Ledger)
}

// waitLedger polls ClickHouse until the tenant's requests are all stored.
func waitLedger(ctx context.Context, sys *app.System, cfg app.Config, tenant string, want int) error {
	conn, err := openLedger(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Minute)
	q := fmt.Sprintf("SELECT count() FROM %s.requests FINAL WHERE tenant = ?", cfg.Ledger.ClickHouseDatabase)
	for {
		var n uint64
		err := conn.QueryRow(ctx, q, tenant).Scan(&n)
		if err == nil && int(n) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ledger stored %d of %d requests after 2 minutes (last error: %v)", n, want, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
