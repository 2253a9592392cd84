package report_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

// TestReportQueriesRunOnCurrentClickHouse runs every report query over the
// seed data on chdb (the current ClickHouse engine as a library) and checks
// it returns the rows the same query returns on the 18.16 server.
func TestReportQueriesRunOnCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	conn, db := seed(t)
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var setup []string
	for _, m := range migs {
		for _, s := range m.Statements {
			setup = append(setup, strings.ReplaceAll(s, ledger.DatabasePlaceholder, "report_chdb"))
		}
	}
	ts := func(t time.Time) string { return "toDateTime('" + t.UTC().Format(time.DateTime) + "', 'UTC')" }
	var vals []string
	for _, a := range attempts {
		outcome := a.outcome
		if outcome == "" {
			outcome = "ok"
			if a.errClass != "" {
				outcome = "error"
			}
		}
		vals = append(vals, fmt.Sprintf("('%s', '%s', %s, '%s', '%s', '%s', '%s', '%s', '%s', %d, %d, %d, %v, %d, %d)",
			a.req, a.id, ts(a.ts), a.tenant, a.route, a.vendor, a.model, outcome, a.errClass, a.in, a.out, a.reasoning, a.cost, a.known, a.latency))
	}
	setup = append(setup, "INSERT INTO report_chdb.attempts (request_id, attempt_id, ts, tenant, route, vendor, model, outcome, error_class, "+
		"input_tokens, output_tokens, reasoning_tokens, cost_usd, price_known, latency_ms) VALUES "+strings.Join(vals, ", "))
	vals = nil
	for _, r := range requests {
		vals = append(vals, fmt.Sprintf("('%s', %s, %s, '%s', '%s', '%s', '%s', %d, '%s')", r.req, ts(r.ts), ts(r.ts), r.tenant, r.route, r.vendor, r.model, r.fallback, r.reason))
	}
	setup = append(setup, "INSERT INTO report_chdb.requests (request_id, ts, finished_at, tenant, route, vendor, model, fallback, fallback_reason) VALUES "+strings.Join(vals, ", "))

	type run struct {
		kind string
		q    report.Query
		rows int // on 18.16
	}
	fns := map[string]func(context.Context, string, report.Query) (*report.Table, error){
		"cost": func(ctx context.Context, db string, q report.Query) (*report.Table, error) {
			return report.Cost(ctx, conn, db, q)
		},
		"errors": func(ctx context.Context, db string, q report.Query) (*report.Table, error) {
			return report.Errors(ctx, conn, db, q)
		},
		"latency": func(ctx context.Context, db string, q report.Query) (*report.Table, error) {
			return report.Latency(ctx, conn, db, q)
		},
		"models": func(ctx context.Context, db string, q report.Query) (*report.Table, error) {
			return report.Models(ctx, conn, db, q)
		},
		"tenants": func(ctx context.Context, db string, q report.Query) (*report.Table, error) {
			return report.Tenants(ctx, conn, db, q)
		},
	}
	var runs []run
	var queries []string
	for _, kind := range []string{"cost", "errors", "latency", "models", "tenants"} {
		for _, q := range []report.Query{{}, {By: []string{"tenant", "day"}, Since: day1.Truncate(24 * time.Hour), Until: day2.Add(24 * time.Hour)}} {
			tbl, err := fns[kind](context.Background(), db, q)
			if err != nil {
				t.Fatal(err)
			}
			sql, args, err := report.SQLFor(kind, "report_chdb", q)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range args {
				sql = strings.Replace(sql, "?", strconv.FormatInt(a.(int64), 10), 1)
			}
			runs = append(runs, run{kind, q, len(tbl.Rows)})
			queries = append(queries, sql)
		}
	}
	version, results := chtest.RunChdb(t, "report_chdb", setup, queries)
	t.Logf("chdb ClickHouse %s", version)
	for i, r := range runs {
		got := 0
		if i < len(results) && results[i] != "" {
			got = len(strings.Split(results[i], "\n"))
		}
		if got != r.rows {
			t.Errorf("%s %+v: %d row(s) on chdb, %d on 18.16:\n%s\n%s", r.kind, r.q, got, r.rows, queries[i], results[i])
		}
	}
}
