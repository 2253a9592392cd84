package ledger_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"single without semicolon", "CREATE TABLE t (a UInt8) ENGINE = Memory", []string{"CREATE TABLE t (a UInt8) ENGINE = Memory"}},
		{"two statements", "SELECT 1;\nSELECT 2;\n", []string{"SELECT 1", "SELECT 2"}},
		{"semicolon in string", "SELECT 'a;b'; SELECT 2", []string{"SELECT 'a;b'", "SELECT 2"}},
		{"escaped quote", `SELECT 'it\'s;'; SELECT 'x''y;'`, []string{`SELECT 'it\'s;'`, `SELECT 'x''y;'`}},
		{"semicolon in identifiers", "SELECT `a;b`, \"c;d\"", []string{"SELECT `a;b`, \"c;d\""}},
		{"line comment", "-- one; two\nSELECT 1; -- trailing;\n", []string{"-- one; two\nSELECT 1"}},
		{"block comment", "/* x; y */ SELECT 1;", []string{"/* x; y */ SELECT 1"}},
		{"only comments", "-- nothing here;\n/* nor; here */\n;", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ledger.SplitStatements(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"SELECT 'open", "SELECT 1 /* open"} {
		if _, err := ledger.SplitStatements(bad); err == nil {
			t.Errorf("SplitStatements(%q): want an error", bad)
		}
	}
}

// tableSwap reports the statements of a table rebuild (007): a copy, which
// only adds rows FINAL collapses, and a RENAME the migrator accepts as
// applied when its target exists.
func tableSwap(stmt string) bool {
	s := strings.ToUpper(strings.TrimSpace(stmt))
	return strings.HasPrefix(s, "RENAME TABLE") || strings.HasPrefix(s, "INSERT INTO") && strings.Contains(s, "SELECT")
}

func TestEmbeddedMigrations(t *testing.T) {
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, m := range migs {
		names = append(names, m.Name)
		if m.Version != uint32(i+1) {
			t.Errorf("migration %s has version %d, want %d (no gaps)", m.Name, m.Version, i+1)
		}
		for _, s := range m.Statements {
			if !strings.Contains(s, ledger.DatabasePlaceholder) {
				t.Errorf("%s: statement does not name its database with %s", m.Name, ledger.DatabasePlaceholder)
			}
			// 18.16 has no ADD COLUMN IF NOT EXISTS: one ADD COLUMN per
			// statement, and the migrator accepts "already exists".
			if !strings.Contains(s, "IF NOT EXISTS") && strings.Count(strings.ToUpper(s), "ADD COLUMN") != 1 &&
				!strings.Contains(s, "DROP TABLE IF EXISTS") && !tableSwap(s) {
				t.Errorf("%s: statement is not idempotent (no IF [NOT] EXISTS, not a single ADD COLUMN)", m.Name)
			}
		}
	}
	want := []string{"001_schema_migrations.sql", "002_attempts.sql", "003_requests.sql", "004_daily_rollup.sql", "005_accounting.sql", "006_daily_rollup_calls.sql", "007_requests_by_tenant.sql", "008_ttft.sql"}
	if !slices.Equal(names, want) {
		t.Fatalf("migrations %q, want %q", names, want)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*ledger.Config)
		errs   []string
	}{
		{"defaults", func(*ledger.Config) {}, nil},
		{"bad database", func(c *ledger.Config) { c.ClickHouseDatabase = "x; DROP" }, []string{"CLICKHOUSE_DATABASE"}},
		{"batch and flush", func(c *ledger.Config) { c.BatchSize = 0; c.FlushInterval = 0 },
			[]string{"LEDGER_BATCH_SIZE", "LEDGER_FLUSH_INTERVAL"}},
		{"retry above ack wait", func(c *ledger.Config) { c.RetryMax = time.Minute }, []string{"LEDGER_RETRY_MAX"}},
		{"cluster with two addresses", func(c *ledger.Config) {
			c.ClickHouseAddr, c.ClickHouseCluster = "10.0.0.1:9000, 10.0.0.2:9000", "switchyard"
		}, nil},
		{"bad cluster name", func(c *ledger.Config) { c.ClickHouseCluster = "a b" }, []string{"CLICKHOUSE_CLUSTER"}},
		{"address without port in a list", func(c *ledger.Config) { c.ClickHouseAddr = "10.0.0.1:9000,10.0.0.2" }, []string{"CLICKHOUSE_ADDR"}},
		{"only commas", func(c *ledger.Config) { c.ClickHouseAddr = " , " }, []string{"CLICKHOUSE_ADDR"}},
		{"everything", func(c *ledger.Config) { *c = ledger.Config{} }, []string{
			"CLICKHOUSE_ADDR", "CLICKHOUSE_DATABASE", "CLICKHOUSE_USER", "LEDGER_BATCH_SIZE", "LEDGER_CONSUMER",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ledger.DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, e := range tt.errs {
				if !strings.Contains(err.Error(), e) {
					t.Errorf("error %q does not mention %s", err, e)
				}
			}
		})
	}
}

func TestConsumerConfig(t *testing.T) {
	c := ledger.DefaultConfig()
	cc := c.ConsumerConfig()
	if cc.MaxDeliver != -1 || cc.AckWait != 60*time.Second || cc.MaxAckPending < 2*c.BatchSize ||
		cc.FilterSubject != "llm.telemetry.>" || cc.Durable != "ledger" {
		t.Fatalf("consumer config %+v", cc)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	cfg := chtest.Config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := ledger.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	first, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"001_schema_migrations.sql", "002_attempts.sql", "003_requests.sql", "004_daily_rollup.sql", "005_accounting.sql", "006_daily_rollup_calls.sql", "007_requests_by_tenant.sql", "008_ttft.sql"}
	if !slices.Equal(first, want) {
		t.Fatalf("first run applied %q, want %q", first, want)
	}
	second, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 0 {
		t.Fatalf("second run applied %q, want nothing", second)
	}
	db := cfg.ClickHouseDatabase
	if n := chtest.Count(t, conn, "SELECT count() FROM `"+db+"`.schema_migrations FINAL"); n != uint64(len(want)) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(want))
	}
	// A crash after the DDL and before its record: every migration runs
	// again over the existing tables and columns and must succeed.
	if err := conn.Exec(ctx, "DROP TABLE `"+db+"`.schema_migrations"); err != nil {
		t.Fatal(err)
	}
	again, err := ledger.Migrate(ctx, conn, cfg.ClickHouseDatabase, zerolog.Nop())
	if err != nil {
		t.Fatalf("re-running applied migrations: %v", err)
	}
	if !slices.Equal(again, want) {
		t.Fatalf("re-run applied %q, want %q", again, want)
	}
	for _, table := range []string{"attempts", "requests"} {
		if n := chtest.Count(t, conn, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = '"+table+"'"); n != 1 {
			t.Errorf("table %s missing", table)
		}
	}
	if _, err := ledger.Migrate(ctx, conn, "bad-name", zerolog.Nop()); err == nil {
		t.Error("Migrate with an invalid database name: want an error")
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	fsys := fstest.MapFS{"clickhouse/x.sql": {Data: []byte("SELECT 1")}}
	if _, err := ledger.LoadMigrations(fsys, "clickhouse"); err == nil {
		t.Fatal("want an error for a migration without a version prefix")
	}
	fsys = fstest.MapFS{
		"clickhouse/001_a.sql": {Data: []byte("SELECT 1")},
		"clickhouse/001_b.sql": {Data: []byte("SELECT 2")},
	}
	if _, err := ledger.LoadMigrations(fsys, "clickhouse"); err == nil {
		t.Fatal("want an error for two migrations with one version")
	}
}
