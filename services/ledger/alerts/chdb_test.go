package alerts_test

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
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

const chdbScript = `
const chdb = require('chdb');
const in_ = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const s = new chdb.Session();
try {
  s.query("CREATE DATABASE IF NOT EXISTS alerts_chdb", "CSV");
  for (const q of in_.setup) s.query(q, "CSV");
  const out = {version: String(s.query("SELECT version()", "TSV")).trim(), results: []};
  for (const q of in_.queries) out.results.push(String(s.query(q, "TSV")).trim());
  console.log(JSON.stringify(out));
} finally {
  s.cleanup();
}
`

// chdbDir finds (or installs once) the npm package chdb, as the ledger's
// DDL check does; it skips, or fails when CI is set, when unavailable.

// bind replaces each ? with the next argument, as the driver does.
func bind(q string, args ...int64) string {
	for _, a := range args {
		q = strings.Replace(q, "?", strconv.FormatInt(a, 10), 1)
	}
	return q
}

// TestQueriesRunOnCurrentClickHouse runs every alert query on chdb (the
// current ClickHouse engine as a library); the other tests run them on the
// 18.16 server.
func TestQueriesRunOnCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	dir := chtest.ChdbDir(t)
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var setup []string
	for _, m := range migs {
		for _, s := range m.Statements {
			setup = append(setup, strings.ReplaceAll(s, ledger.DatabasePlaceholder, "alerts_chdb"))
		}
	}
	ins := "INSERT INTO alerts_chdb.attempts (request_id, attempt_id, ts, tenant, vendor, model, error_class, cost_usd, price_known, latency_ms) VALUES "
	var vals []string
	for i := range 10 {
		errc := ""
		if i < 2 {
			errc = "timeout"
		}
		vals = append(vals, fmt.Sprintf("('r%d', 'r%d#1', toDateTime('2025-03-14 11:58:%02d', 'UTC'), 'acme', 'openai', 'gpt-4o-mini', '%s', 1.5, 1, 300)", i, i, i, errc))
		vals = append(vals, fmt.Sprintf("('b%d', 'b%d#1', toDateTime('2025-03-14 11:00:%02d', 'UTC'), 'acme', 'openai', 'gpt-4o-mini', '', 0.5, 1, 100)", i, i, i))
	}
	vals = append(vals, "('u1', 'u1#1', toDateTime('2025-03-14 11:30:00', 'UTC'), 'zeta', 'openai', 'gpt-9', '', 0, 0, 50)")
	// A redelivered duplicate, collapsed by FINAL.
	vals = append(vals, vals[0])
	setup = append(setup, ins+strings.Join(vals, ", "))

	db := "`alerts_chdb`"
	d0, d1 := at(0, 0, 0).Unix(), at(24, 0, 0).Unix()
	w, b, end := at(11, 55, 0).Unix(), at(10, 55, 0).Unix(), at(12, 0, 0).Unix()
	queries := []string{
		bind(fmt.Sprintf(alerts.SpendSQL, db)+" ORDER BY tenant", d0, d1),
		bind(fmt.Sprintf(alerts.ErrorRateSQL, db)+" ORDER BY vendor", w, end),
		bind(fmt.Sprintf(alerts.LatencySQL, db)+" ORDER BY vendor, model", w, w, w, w, b, end),
		bind(fmt.Sprintf(alerts.UnknownModelSQL, db)+" ORDER BY vendor, model", at(11, 0, 0).Unix(), end),
	}
	want := []string{
		"acme\t20\nzeta\t0",
		"openai\t10\t2",
		"openai\tgpt-4o-mini\t8\t10\t300\t100\nopenai\tgpt-9\t0\t1\t0\t50",
		"openai\tgpt-9\t1",
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
	for i := range want {
		if i >= len(res.Results) || res.Results[i] != want[i] {
			t.Errorf("query %d on chdb:\n%s\n= %q, want %q", i, queries[i], res.Results, want[i])
		}
	}
}
