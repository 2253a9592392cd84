package chtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
