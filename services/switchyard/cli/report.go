package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

func runReport(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		return usageErr("report %s [flags]", strings.Join(reportKinds, "|"))
	}
	kind, args := args[0], args[1:]
	fs := newFlags("report "+kind, errOut)
	withUsage(fs, errOut, "report "+strings.Join(reportKinds, "|")+" [flags]")
	since := fs.String("since", "24h", "start: a duration ago (24h) or an RFC 3339 time")
	until := fs.String("until", "", "end: a duration ago or an RFC 3339 time (default now)")
	by := fs.String("by", "", "group by: comma-separated vendor, model, endpoint_tag, tenant, prompt_version, route, day")
	format := fs.String("format", "table", "table, json, csv or html (a self-contained page with charts)")
	policyFile := fs.String("policy", envOr("SWITCHYARD_POLICY", "deployments/policy.yaml"), "policy file with routes and prices (savings report)")
	if isHelp(kind) {
		fs.Usage()
		return flag.ErrHelp
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q (flags: -since, -until, -by, -format, -policy)", fs.Arg(0))
	}
	q, err := reportQuery(*since, *until, *by)
	if err != nil {
		return usageErr("%v", err)
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
	var pol *policy.Policy
	if kind == "savings" {
		if pol, err = policy.Load(*policyFile); err != nil {
			return fmt.Errorf("-policy: %w", err)
		}
	}
	t, err := runReportKindPolicy(ctx, kind, conn, cfg.ClickHouseDatabase, q, pol)
	if err != nil {
		return err
	}
	if strings.EqualFold(*format, report.FormatHTML) {
		d, err := report.LoadDashboard(ctx, conn, cfg.ClickHouseDatabase, q)
		if err != nil {
			return err
		}
		d.Title = "Switchyard ledger: " + kind
		d.Report = t
		return d.WriteHTML(out)
	}
	return t.Write(out, *format)
}

// reportKinds lists the reports of `switchyard report`.
var reportKinds = []string{"cost", "fallbacks", "errors", "latency", "models", "tenants", "savings"}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func reportQuery(since, until, by string) (report.Query, error) {
	var q report.Query
	var err error
	if q.Since, err = parseSince(since); err != nil {
		return q, fmt.Errorf("-since: %w", err)
	}
	q.Until = time.Now().Add(time.Minute)
	if until != "" {
		if q.Until, err = parseSince(until); err != nil {
			return q, fmt.Errorf("-until: %w", err)
		}
	}
	if by != "" {
		for _, f := range strings.Split(by, ",") {
			q.By = append(q.By, strings.TrimSpace(f))
		}
	}
	return q, nil
}

func runReportKind(ctx context.Context, kind string, conn driver.Conn, db string, q report.Query) (*report.Table, error) {
	return runReportKindPolicy(ctx, kind, conn, db, q, nil)
}

// runReportKindPolicy runs one report; savings needs pol.
func runReportKindPolicy(ctx context.Context, kind string, conn driver.Conn, db string, q report.Query, pol *policy.Policy) (*report.Table, error) {
	switch kind {
	case "cost":
		return report.Cost(ctx, conn, db, q)
	case "fallbacks":
		return report.Fallbacks(ctx, conn, db, q)
	case "errors":
		return report.Errors(ctx, conn, db, q)
	case "latency":
		return report.Latency(ctx, conn, db, q)
	case "models":
		return report.Models(ctx, conn, db, q)
	case "tenants":
		return report.Tenants(ctx, conn, db, q)
	case "savings":
		if pol == nil {
			return nil, usageErr("report savings needs -policy")
		}
		return report.Savings(ctx, conn, db, q, pol)
	default:
		return nil, usageErr("unknown report %q (%s)", kind, strings.Join(reportKinds, ", "))
	}
}
