package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

const chdbScript = `
const chdb = require('chdb');
const in_ = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const s = new chdb.Session();
try {
  s.query("CREATE DATABASE IF NOT EXISTS report_chdb", "CSV");
  for (const q of in_.setup) s.query(q, "CSV");
  const out = {version: String(s.query("SELECT version()", "TSV")).trim(), results: []};
  for (const q of in_.queries) out.results.push(String(s.query(q, "TSV")).trim());
  console.log(JSON.stringify(out));
} finally {
  s.cleanup();
}
`

// TestReportQueriesRunOnCurrentClickHouse runs every report query over the
// seed data on chdb (the current ClickHouse engine as a library) and checks
// it returns the rows the same query returns on the 18.16 server.
func TestReportQueriesRunOnCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	dir := chtest.ChdbDir(t)
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
	in, _ := json.Marshal(map[string][]string{"setup": setup, "queries": queries})
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "in.json"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "run.js"), []byte(chdbScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(tmp, "run.js"), filepath.Join(tmp, "in.json"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	cmd.Dir = tmp
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chdb: %v\n%s\n%s", err, out, stderr)
	}
	var res struct {
		Version string
		Results []string
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("chdb output %q: %v", out, err)
	}
	t.Logf("chdb ClickHouse %s", res.Version)
	for i, r := range runs {
		got := 0
		if i < len(res.Results) && res.Results[i] != "" {
			got = len(strings.Split(res.Results[i], "\n"))
		}
		if got != r.rows {
			t.Errorf("%s %+v: %d row(s) on chdb, %d on 18.16:\n%s\n%s", r.kind, r.q, got, r.rows, queries[i], res.Results[i])
		}
	}
}
