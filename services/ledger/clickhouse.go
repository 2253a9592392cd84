package ledger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/schemas"
)

// DatabasePlaceholder is how the migrations name the database. It is
// ClickHouse's query-parameter syntax, so on a current server a migration
// also runs by hand with `clickhouse-client --param_database=switchyard`;
// the migrator substitutes it itself because 18.16 has no parameters.
const DatabasePlaceholder = "{database:Identifier}"

// Open connects to ClickHouse over the native protocol, creates the
// configured database if it is missing and returns a connection pool whose
// default database is that database. With several addresses a connection
// goes to the first that answers: a stopped server costs the query that
// was on it, and the next one dials the others. In cluster mode the
// database is created on every node (ON CLUSTER) and inserts into
// Distributed tables are synchronous (see docs/ledger.md).
func Open(ctx context.Context, cfg Config) (driver.Conn, error) {
	if !ValidDatabaseName(cfg.ClickHouseDatabase) {
		return nil, fmt.Errorf("clickhouse: invalid database name %q", cfg.ClickHouseDatabase)
	}
	if cfg.ClickHouseCluster != "" && !ValidClusterName(cfg.ClickHouseCluster) {
		return nil, fmt.Errorf("clickhouse: invalid cluster name %q", cfg.ClickHouseCluster)
	}
	addrs := cfg.ClickHouseAddrs()
	opts := func(db string) *clickhouse.Options {
		dial := cfg.ClickHouseDialTimeout
		if dial <= 0 {
			dial = 5 * time.Second
		}
		o := &clickhouse.Options{
			Protocol:         clickhouse.Native,
			Addr:             addrs,
			ConnOpenStrategy: clickhouse.ConnOpenInOrder,
			Auth:             clickhouse.Auth{Database: db, Username: cfg.ClickHouseUser, Password: cfg.ClickHousePassword},
			DialTimeout:      dial,
			ClientInfo:       clickhouse.ClientInfo{Products: []struct{ Name, Version string }{{Name: "switchyard-ledger", Version: "1"}}},
		}
		if cfg.ClickHouseCluster != "" {
			// An INSERT into a Distributed table returns once the rows are
			// in a replica of every shard they belong to, not queued on the
			// node that received them: a failure reaches the ledger, which
			// keeps the batch unacked and retries it. (A numeric setting:
			// 18.16 reads those from clickhouse-go.)
			o.Settings = clickhouse.Settings{"insert_distributed_sync": 1}
		}
		return o
	}
	where := strings.Join(addrs, ",")
	// A connection whose default database does not exist is refused, so the
	// database is created over a connection to "default" first.
	boot, err := clickhouse.Open(opts("default"))
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", where, err)
	}
	err = createDatabase(ctx, boot, cfg)
	_ = boot.Close()
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: create database %s: %w", where, cfg.ClickHouseDatabase, err)
	}
	conn, err := clickhouse.Open(opts(cfg.ClickHouseDatabase))
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", where, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse %s: ping: %w", where, err)
	}
	return conn, nil
}

// createDatabase creates the configured database. In cluster mode it first
// looks whether the node it reached has it: distributed DDL waits for every
// node, so an unneeded CREATE … ON CLUSTER would hold a ledger or a report
// for distributed_ddl_task_timeout while one replica is down.
func createDatabase(ctx context.Context, conn driver.Conn, cfg Config) error {
	db := quoteIdent(cfg.ClickHouseDatabase)
	if cfg.ClickHouseCluster == "" {
		return conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", cfg.ClickHouseDatabase).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	return conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db+" ON CLUSTER "+quoteIdent(cfg.ClickHouseCluster))
}

// Migration is one embedded DDL file.
type Migration struct {
	Version    uint32
	Name       string // file name, e.g. "002_attempts.sql"
	Statements []string
}

// Migrations returns the embedded migrations ordered by version. Version 1
// must create schema_migrations: the migrator runs it before reading which
// migrations were applied.
func Migrations() ([]Migration, error) {
	return LoadMigrations(schemas.FS, schemas.ClickHouseDir)
}

// LoadMigrations reads NNN_name.sql files from dir of fsys, ordered by
// version. Migrations uses it on the embedded schemas.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	var out []Migration
	seen := map[uint32]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, fmt.Errorf("migration %s: name must be NNN_description.sql", e.Name())
		}
		if prev, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, e.Name(), v)
		}
		seen[uint32(v)] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		stmts, err := SplitStatements(string(b))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s: no statement", e.Name())
		}
		out = append(out, Migration{Version: uint32(v), Name: e.Name(), Statements: stmts})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	if len(out) == 0 || out[0].Version != 1 {
		return nil, errors.New("migrations: version 1 (schema_migrations) is missing")
	}
	return out, nil
}

// Migrate applies the embedded migrations that database has not recorded in
// schema_migrations, in version order, and returns the names of those it
// applied. Every migration is idempotent (CREATE … IF NOT EXISTS), so two
// ledgers migrating at once, or a crash between a DDL and its record, are
// harmless.
func Migrate(ctx context.Context, conn driver.Conn, database string, log zerolog.Logger) (applied []string, err error) {
	return MigrateCluster(ctx, conn, database, "", log)
}

// MigrateFor applies the migrations where cfg says: a single server, or
// cfg.ClickHouseCluster.
func MigrateFor(ctx context.Context, conn driver.Conn, cfg Config, log zerolog.Logger) (applied []string, err error) {
	return MigrateCluster(ctx, conn, cfg.ClickHouseDatabase, cfg.ClickHouseCluster, log)
}

// MigrateCluster is Migrate on cluster (empty: a single server): each
// migration runs as the distributed DDL ClusterMigrations makes of it.
func MigrateCluster(ctx context.Context, conn driver.Conn, database, cluster string, log zerolog.Logger) (applied []string, err error) {
	if !ValidDatabaseName(database) {
		return nil, fmt.Errorf("migrate: invalid database name %q", database)
	}
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	if cluster != "" {
		if migs, err = ClusterMigrations(migs, database, cluster); err != nil {
			return nil, err
		}
	}
	db := quoteIdent(database)
	run := func(m Migration) error {
		for i, s := range m.Statements {
			q := strings.ReplaceAll(s, DatabasePlaceholder, db)
			if err := conn.Exec(ctx, q); err != nil && !columnExists(q, err) && !renamedAlready(q, err) {
				return fmt.Errorf("migration %s statement %d: %w", m.Name, i+1, err)
			}
		}
		return nil
	}
	readApplied := func() (map[uint32]bool, error) {
		done := map[uint32]bool{}
		rows, err := conn.Query(ctx, "SELECT version FROM "+db+".schema_migrations FINAL")
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var v uint32
			if err := rows.Scan(&v); err != nil {
				_ = rows.Close()
				return nil, err
			}
			done[v] = true
		}
		return done, errors.Join(rows.Err(), rows.Close())
	}
	// Version 1 creates schema_migrations itself; it is idempotent and runs
	// every time so the table can be read. On a cluster it runs only when
	// the table is not there yet: distributed DDL waits for every node, and
	// a ledger must start while a replica is down.
	done, err := map[uint32]bool(nil), error(nil)
	if cluster != "" {
		done, err = readApplied()
	}
	if cluster == "" || err != nil {
		if err := run(migs[0]); err != nil {
			return nil, err
		}
		if done, err = readApplied(); err != nil {
			return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
		}
	}
	for i, m := range migs {
		if done[m.Version] {
			continue
		}
		if i > 0 {
			if err := run(m); err != nil {
				return applied, err
			}
		}
		if err := record(ctx, conn, db, m); err != nil {
			return applied, fmt.Errorf("migration %s: record: %w", m.Name, err)
		}
		applied = append(applied, m.Name)
		log.Info().Str("migration", m.Name).Str("database", database).Str("cluster", cluster).Msg("clickhouse migration applied")
	}
	return applied, nil
}

// errColumnExists is ClickHouse's ILLEGAL_COLUMN, which ADD COLUMN returns
// for a column the table already has (18.16 and current releases alike).
const errColumnExists = 44

// columnExists reports whether err is an ADD COLUMN finding its column
// already there: the statement was applied by an earlier, interrupted run.
// ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS, so migrations add one
// column per statement and rely on this.
func columnExists(stmt string, err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == errColumnExists &&
		strings.Contains(strings.ToUpper(stmt), "ADD COLUMN") && strings.Contains(ex.Message, "already exists")
}

// errTableExists is ClickHouse's TABLE_ALREADY_EXISTS.
const errTableExists = 57

// renamedAlready reports a RENAME whose target exists: a re-run of a
// table-swapping migration (007) that crashed after its RENAME.
func renamedAlready(stmt string, err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == errTableExists && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(stmt)), "RENAME TABLE")
}

// record notes a migration in schema_migrations. It uses a batch insert:
// 18.16 does not answer an INSERT … VALUES sent with bound arguments.
func record(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

// quoteIdent backquotes a ClickHouse identifier.
func quoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}

// SplitStatements splits SQL text on the semicolons that end statements,
// ignoring those inside quotes, backquotes and comments. Statements that
// hold only whitespace and comments are dropped.
func SplitStatements(sql string) ([]string, error) {
	var (
		out     []string
		start   int
		hasCode bool
	)
	flush := func(end int) {
		if hasCode {
			out = append(out, strings.TrimSpace(sql[start:end]))
		}
		start, hasCode = end+1, false
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			nl := strings.IndexByte(sql[i:], '\n')
			if nl < 0 {
				i = len(sql)
			} else {
				i += nl
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += end + 3
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for ; j < len(sql); j++ {
				if sql[j] == '\\' {
					j++
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c { // doubled quote
						j++
						continue
					}
					break
				}
			}
			if j >= len(sql) {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			i, hasCode = j, true
		case c == ';':
			flush(i)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			hasCode = true
		}
	}
	flush(len(sql))
	return out, nil
}
