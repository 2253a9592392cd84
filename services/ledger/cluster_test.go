package ledger_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

// clusterStatements rewrites the embedded migrations for cluster c of
// database db, with the database substituted.
func clusterStatements(t *testing.T) []string {
	t.Helper()
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	cm, err := ledger.ClusterMigrations(migs, "db", "c")
	if err != nil {
		t.Fatal(err)
	}
	if len(cm) != len(migs) {
		t.Fatalf("%d cluster migrations, want %d", len(cm), len(migs))
	}
	var out []string
	for i, m := range cm {
		if m.Version != migs[i].Version || m.Name != migs[i].Name {
			t.Fatalf("cluster migration %d is %s, want %s", i, m.Name, migs[i].Name)
		}
		for _, s := range m.Statements {
			out = append(out, strings.ReplaceAll(s, ledger.DatabasePlaceholder, "`db`"))
		}
	}
	return out
}

func TestClusterMigrations(t *testing.T) {
	stmts := clusterStatements(t)
	all := strings.Join(stmts, ";\n")
	for _, s := range stmts {
		if !strings.HasPrefix(s, "INSERT") && !strings.Contains(s, "ON CLUSTER `c`") {
			t.Errorf("statement runs on one node only:\n%s", s)
		}
		if strings.Contains(s, "ENGINE = ReplacingMergeTree") {
			t.Errorf("a table is not replicated:\n%s", s)
		}
	}
	tests := []struct{ name, want string }{
		{"attempts replicated, version column kept",
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/attempts_local', '{replica}', ingested_at)\nPARTITION BY toYYYYMM(ts)\nORDER BY (request_id, attempt_id)"},
		{"attempts distributed, sharded by the sorting key",
			"CREATE TABLE IF NOT EXISTS `db`.attempts ON CLUSTER `c` AS `db`.attempts_local ENGINE = Distributed('c', 'db', 'attempts_local', cityHash64(request_id, attempt_id))"},
		{"schema_migrations replicated too", "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/schema_migrations_local', '{replica}', applied_at)"},
		{"view on every node", "CREATE VIEW IF NOT EXISTS `db`.daily_rollup ON CLUSTER `c` AS"},
		{"column added to the replicated table", "ALTER TABLE `db`.attempts_local ON CLUSTER `c` ADD COLUMN reasoning_tokens UInt32 AFTER cache_write_tokens"},
		{"Distributed table made again after an ALTER", "ALTER TABLE `db`.requests_local ON CLUSTER `c` ADD COLUMN reasoning_tokens UInt32 AFTER cached_tokens;\n" +
			"DROP TABLE IF EXISTS `db`.requests ON CLUSTER `c`;\n" +
			"CREATE TABLE IF NOT EXISTS `db`.requests ON CLUSTER `c` AS `db`.requests_local ENGINE = Distributed('c', 'db', 'requests_local', cityHash64(request_id))"},
		{"007 swaps the replicated tables", "RENAME TABLE `db`.requests_local TO `db`.requests_before_007_local, `db`.requests_by_tenant_local TO `db`.requests_local ON CLUSTER `c`"},
		{"007's requests sharded by its new key", "CREATE TABLE IF NOT EXISTS `db`.requests ON CLUSTER `c` AS `db`.requests_local ENGINE = Distributed('c', 'db', 'requests_local', cityHash64(tenant, request_id))"},
		{"007 keeps the old table readable", "CREATE TABLE IF NOT EXISTS `db`.requests_before_007 ON CLUSTER `c` AS `db`.requests_before_007_local ENGINE = Distributed('c', 'db', 'requests_before_007_local', cityHash64(request_id))"},
		{"007 copies through the Distributed tables", "INSERT INTO `db`.requests (request_id,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(all, tt.want) {
				t.Errorf("rewritten migrations lack\n%s\n\nthey are:\n%s", tt.want, all)
			}
		})
	}
}

// Engines with arguments of their own keep them after the ZooKeeper path,
// and what the rewrite does not know is refused rather than run on one node.
func TestClusterMigrationsEdgeCases(t *testing.T) {
	const first = "CREATE TABLE IF NOT EXISTS {database:Identifier}.schema_migrations (version UInt32) ENGINE = ReplacingMergeTree ORDER BY version"
	tests := []struct {
		name, sql, want, err string
	}{
		{"summing with a tuple of columns",
			"CREATE TABLE IF NOT EXISTS {database:Identifier}.sums (d Date, k String, a UInt64, b UInt64) ENGINE = SummingMergeTree((a, b)) ORDER BY (d, k)",
			"ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db/sums_local', '{replica}', (a, b)) ORDER BY (d, k)", ""},
		{"engine without arguments", "CREATE TABLE IF NOT EXISTS {database:Identifier}.p (k String) ENGINE = MergeTree() ORDER BY k",
			"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/p_local', '{replica}') ORDER BY k", ""},
		{"unknown statement", "OPTIMIZE TABLE {database:Identifier}.schema_migrations FINAL", "", "no cluster form"},
		{"alter of an unknown table", "ALTER TABLE {database:Identifier}.nope ADD COLUMN x UInt8", "", "no earlier migration created"},
		{"materialized view", "CREATE MATERIALIZED VIEW IF NOT EXISTS {database:Identifier}.mv AS SELECT 1", "", "no cluster form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{
				"m/001_schema_migrations.sql": {Data: []byte(first)},
				"m/002_x.sql":                 {Data: []byte(tt.sql)},
			}
			migs, err := ledger.LoadMigrations(fsys, "m")
			if err != nil {
				t.Fatal(err)
			}
			cm, err := ledger.ClusterMigrations(migs, "db", "c")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cm[1].Statements, "\n"); !strings.Contains(got, tt.want) {
				t.Errorf("got\n%s\nwant it to contain\n%s", got, tt.want)
			}
		})
	}
	if _, err := ledger.ClusterMigrations(nil, "db", "bad name"); err == nil {
		t.Error("a cluster name that is not an identifier was accepted")
	}
}

// Current ClickHouse (chdb) parses every cluster-mode statement, and still
// knows insert_distributed_sync, the setting the ledger's inserts rely on.
// chdb has no ZooKeeper and no remote servers, so the statements are
// parsed (EXPLAIN AST), not run; they run on 18.16 in the integration test.
func TestClusterMigrationsParseOnCurrentClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	stmts := clusterStatements(t)
	queries := []string{"SELECT 1 SETTINGS insert_distributed_sync = 1"}
	for _, s := range stmts {
		queries = append(queries, "EXPLAIN AST "+s)
	}
	version, results := chtest.RunChdb(t, "db", []string{}, queries)
	t.Logf("chdb ClickHouse %s parsed %d cluster statements", version, len(stmts))
	if results[0] != "1" {
		t.Errorf("insert_distributed_sync on ClickHouse %s: %q, want 1 setting", version, results[0])
	}
	for i, r := range results[1:] {
		if r == "" {
			t.Errorf("no AST for\n%s", stmts[i])
		}
	}
}
