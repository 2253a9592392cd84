package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/kelseyhightower/envconfig"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

func runReport(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		return usageErr("report cost|fallbacks|latency [flags]")
	}
	kind, args := args[0], args[1:]
	fs := newFlags("report "+kind, errOut)
	since := fs.String("since", "24h", "start: a duration ago (24h) or an RFC 3339 time")
	until := fs.String("until", "", "end: a duration ago or an RFC 3339 time (default now)")
	by := fs.String("by", "", "group by: comma-separated vendor, model, endpoint_tag, tenant, prompt_version, route, day")
	format := fs.String("format", "table", "table, json, csv or html")
	if err := parse(fs, args); err != nil {
		return err
	}
	q, err := reportQuery(*since, *until, *by)
	if err != nil {
		return usageErr("%v", err)
	}
	var cfg ledger.Config
	if err := envconfig.Process("SWITCHYARD", &cfg); err != nil {
		return err
	}
	conn, err := ledger.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("clickhouse at %s: %w", cfg.ClickHouseAddr, err)
	}
	defer conn.Close()
	t, err := runReportKind(ctx, kind, conn, cfg.ClickHouseDatabase, q)
	if err != nil {
		return err
	}
	return t.Write(out, *format)
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
	switch kind {
	case "cost":
		return report.Cost(ctx, conn, db, q)
	case "fallbacks":
		return report.Fallbacks(ctx, conn, db, q)
	case "latency":
		return report.Latency(ctx, conn, db, q)
	default:
		return nil, usageErr("unknown report %q (cost, fallbacks, latency)", kind)
	}
}
