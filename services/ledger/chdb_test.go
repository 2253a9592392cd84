package ledger_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

// chdbScript runs every statement on a chdb session (an embedded, current
// ClickHouse) and then reads each table and view, so a view's SELECT is
// analysed too. It prints the server version.
const chdbScript = `
const chdb = require('chdb');
const stmts = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const s = new chdb.Session();
try {
  s.query("CREATE DATABASE IF NOT EXISTS switchyard_chdb", "CSV");
  for (const q of stmts) s.query(q, "CSV");
  s.query("INSERT INTO switchyard_chdb.attempts (request_id, attempt_id, ts, tenant, vendor, model, input_tokens, cost_usd, price_known) " +
    "VALUES ('r1', 'r1#1', toDateTime('2025-03-14 10:00:00', 'UTC'), 'acme', 'openai', 'gpt-4o-mini', 10, 0.5, 1)", "CSV");
  s.query("INSERT INTO switchyard_chdb.attempts (request_id, attempt_id, ts, tenant, vendor, model, input_tokens, cost_usd, price_known) " +
    "VALUES ('r1', 'r1#1', toDateTime('2025-03-14 10:00:00', 'UTC'), 'acme', 'openai', 'gpt-4o-mini', 10, 0.5, 1)", "CSV");
  const out = {
    version: String(s.query("SELECT version()", "TSV")).trim(),
    rollup: String(s.query("SELECT toString(day), tenant, attempts, cost_usd, requests FROM switchyard_chdb.daily_rollup", "TSV")).trim(),
    migrations: String(s.query("SELECT count() FROM switchyard_chdb.schema_migrations FINAL", "TSV")).trim(),
    accounting: String(s.query("SELECT cost_source, reasoning_tokens, ttft_ms FROM switchyard_chdb.attempts FINAL", "TSV")).trim(),
  };
  console.log(JSON.stringify(out));
} finally {
  s.cleanup();
}
`

// TestMigrationsRunOnCurrentClickHouse applies every embedded migration on
// chdb, the current ClickHouse engine as a library: the DDL must stay valid
// on current releases as well as on the 18.16 server the other tests use.
func TestMigrationsRunOnCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	dir := chtest.ChdbDir(t)
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for _, m := range migs {
		for _, s := range m.Statements {
			stmts = append(stmts, strings.ReplaceAll(s, ledger.DatabasePlaceholder, "switchyard_chdb"))
		}
	}
	stmts = append(stmts, "INSERT INTO switchyard_chdb.schema_migrations (version, name) VALUES (1, 'x'), (1, 'x')")
	tmp := t.TempDir()
	b, _ := json.Marshal(stmts)
	in := filepath.Join(tmp, "stmts.json")
	script := filepath.Join(tmp, "run.js")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(chdbScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script, in)
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
	var res struct{ Version, Rollup, Migrations, Accounting string }
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("chdb output %q: %v", out, err)
	}
	t.Logf("chdb ClickHouse %s", res.Version)
	// The duplicate attempt counts once through the view's FINAL.
	if want := "2025-03-14\tacme\t1\t0.5\t0"; res.Rollup != want {
		t.Errorf("daily_rollup on chdb = %q, want %q", res.Rollup, want)
	}
	// A row written without the accounting columns reads their defaults.
	if want := "catalog\t0\t0"; res.Accounting != want {
		t.Errorf("attempts cost_source, reasoning_tokens, ttft_ms on chdb = %q, want %q", res.Accounting, want)
	}
	if res.Migrations != "1" {
		t.Errorf("schema_migrations FINAL on chdb = %q, want 1", res.Migrations)
	}
}
