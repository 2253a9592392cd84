package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

func runLedger(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) > 0 && args[0] == "reprice" {
		return runLedgerReprice(ctx, args[1:], out, errOut)
	}
	const usage = "ledger migrate | ledger reprice --since … [--until …] --catalog policy.yaml [--dry-run]"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(errOut, "usage: switchyard "+usage)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "migrate" {
		return usageErr(usage)
	}
	fs := newFlags("ledger migrate", errOut)
	withUsage(fs, errOut, "ledger migrate (applies the ClickHouse migrations; SWITCHYARD_CLICKHOUSE_* pick the server)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := ledgerConfig()
	if err != nil {
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
	applied, err := ledger.MigrateFor(ctx, conn, cfg, logger(errOut, "ledger", "info"))
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

// runLedgerReprice recomputes stored attempt costs from a (new) catalog.
func runLedgerReprice(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := newFlags("ledger reprice", errOut)
	since := fs.String("since", "", "start (required): a duration ago (720h) or an RFC 3339 time")
	until := fs.String("until", "", "end: a duration ago or an RFC 3339 time (default: open)")
	catalog := fs.String("catalog", "", "policy file whose model catalog gives the new prices (required)")
	dryRun := fs.Bool("dry-run", false, "report what would change, write nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *since == "" || *catalog == "" {
		return usageErr("ledger reprice: --since and --catalog are required")
	}
	from, err := parseSince(*since)
	if err != nil {
		return usageErr("-since: %v", err)
	}
	var to time.Time
	if *until != "" {
		if to, err = parseSince(*until); err != nil {
			return usageErr("-until: %v", err)
		}
	}
	pol, err := policy.Load(*catalog)
	if err != nil {
		return fmt.Errorf("-catalog: %w", err)
	}
	cfg, err := ledgerConfig()
	if err != nil {
		return err
	}
	conn, err := ledger.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("clickhouse at %s: %w", cfg.ClickHouseAddr, err)
	}
	defer conn.Close()
	res, err := ledger.RepriceRange(ctx, conn, cfg.ClickHouseDatabase, pol, from, to, time.Now(), *dryRun)
	if err != nil {
		return err
	}
	verb := "repriced"
	if *dryRun {
		verb = "would reprice (dry run)"
	}
	fmt.Fprintf(out, "%s %d of %d attempt(s), cost delta %+.6f USD; %d request(s) re-summed, cost delta %+.6f USD\n",
		verb, res.AttemptsChanged, res.AttemptsScanned, res.AttemptCostDelta, res.RequestsChanged, res.RequestCostDelta)
	return nil
}
