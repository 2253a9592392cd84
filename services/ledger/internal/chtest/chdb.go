package chtest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ChdbDir returns a directory whose node_modules holds the npm package chdb
// (the current ClickHouse engine as a library), installing it once into the
// user cache (or SWITCHYARD_CHDB_DIR). It skips the test when node, npm or
// the package is unavailable, and fails it instead when CI is set.
func ChdbDir(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("chdb (npm) is needed when CI is set: "+format, a...)
		}
		t.Skipf("skipping the current-ClickHouse check: chdb (npm) unavailable: "+format, a...)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable("%s is not installed", tool)
		}
	}
	dir := os.Getenv("SWITCHYARD_CHDB_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir = filepath.Join(cache, "switchyard", "chdb")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "chdb", "package.json")); err == nil {
		return dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		unavailable("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--prefix", dir, "chdb")
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable("npm install chdb: %v\n%s", err, out)
	}
	return dir
}

// chdbQueries runs setup statements then queries on one chdb session and
// prints {version, results} (each result as TSV) as its last line.
const chdbQueries = `
const chdb = require('chdb');
const in_ = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const s = new chdb.Session();
try {
  s.query("CREATE DATABASE IF NOT EXISTS " + in_.database, "CSV");
  for (const q of in_.setup) s.query(q, "CSV");
  const out = {version: String(s.query("SELECT version()", "TSV")).trim(), results: []};
  for (const q of in_.queries) out.results.push(String(s.query(q, "TSV")).trim());
  console.log(JSON.stringify(out));
} finally {
  s.cleanup();
}
`

// RunChdb runs the setup statements and then each query on chdb (the
// current ClickHouse engine) in database, and returns the engine's version
// and each query's result as trimmed TSV.
func RunChdb(t *testing.T, database string, setup, queries []string) (version string, results []string) {
	t.Helper()
	dir := ChdbDir(t)
	in, err := json.Marshal(map[string]any{"database": database, "setup": setup, "queries": queries})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "in.json"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "run.js"), []byte(chdbQueries), 0o644); err != nil {
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
		var ee *exec.ExitError
		if errors.As(err, &ee) {
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
	return res.Version, res.Results
}
