package ledger

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster mode (SWITCHYARD_CLICKHOUSE_CLUSTER set): the same migration files
// run as distributed DDL. Every MergeTree table T becomes
//
//   - T_local, a Replicated…MergeTree on every node (ZooKeeper path
//     /clickhouse/tables/{shard}/<database>/T_local, replica {replica}: the
//     server's macros), with the same columns, version or sum columns,
//     partitioning and sorting key, and
//   - T, a Distributed table over T_local sharded by a hash of the sorting
//     key, so the rows ReplacingMergeTree collapses always share a shard and
//     FINAL through T stays exact.
//
// Queries keep their table names: the writer inserts into T (synchronously,
// see Open) and reports and alerts read T, through every shard. Views are
// created on every node and read the Distributed tables.

// LocalSuffix names the replicated table behind a Distributed one.
const LocalSuffix = "_local"

var (
	createTableRE = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+` + regexp.QuoteMeta(DatabasePlaceholder) + `\.(\w+)\s*\(`)
	engineRE      = regexp.MustCompile(`(?is)\)\s*ENGINE\s*=\s*(\w*MergeTree)\b(\s*\()?`)
	orderByRE     = regexp.MustCompile(`(?is)\bORDER\s+BY\s+(\([^)]*\)|[\w]+)`)
	createViewRE  = regexp.MustCompile(`(?is)^(CREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\s+` + regexp.QuoteMeta(DatabasePlaceholder) + `\.\w+)(\s+AS\s)`)
	dropTableRE   = regexp.MustCompile(`(?is)^DROP\s+TABLE\s+IF\s+EXISTS\s+` + regexp.QuoteMeta(DatabasePlaceholder) + `\.(\w+)$`)
	alterTableRE  = regexp.MustCompile(`(?is)^ALTER\s+TABLE\s+` + regexp.QuoteMeta(DatabasePlaceholder) + `\.(\w+)\s+(ADD|DROP|MODIFY)\s+COLUMN\s`)
	renameRE      = regexp.MustCompile(`(?is)^RENAME\s+TABLE\s+(.+)$`)
	renamePairRE  = regexp.MustCompile(`(?is)^\s*` + regexp.QuoteMeta(DatabasePlaceholder) + `\.(\w+)\s+TO\s+` + regexp.QuoteMeta(DatabasePlaceholder) + `\.(\w+)\s*$`)
	insertRE      = regexp.MustCompile(`(?is)^INSERT\s+INTO\s`)
)

// clusterSchema tracks, while the migrations are rewritten in order, the
// sharding key of every table so that a later DROP or RENAME knows whether
// a name is a Distributed table over a local one, or a view.
type clusterSchema struct {
	database, cluster string
	shardKey          map[string]string // table name → sharding expression
}

// ClusterMigrations rewrites migrations for cluster: each statement becomes
// the distributed DDL that does the same thing on every node. Statements
// the rewrite does not know are refused, so a new migration cannot silently
// create a table on one node only.
func ClusterMigrations(migs []Migration, database, cluster string) ([]Migration, error) {
	if !ValidDatabaseName(database) {
		return nil, fmt.Errorf("cluster migrations: invalid database name %q", database)
	}
	if !ValidClusterName(cluster) {
		return nil, fmt.Errorf("cluster migrations: invalid cluster name %q", cluster)
	}
	s := &clusterSchema{database: database, cluster: cluster, shardKey: map[string]string{}}
	out := make([]Migration, 0, len(migs))
	for _, m := range migs {
		cm := Migration{Version: m.Version, Name: m.Name}
		for i, stmt := range m.Statements {
			rewritten, err := s.rewrite(stmt)
			if err != nil {
				return nil, fmt.Errorf("migration %s statement %d: cluster mode: %w", m.Name, i+1, err)
			}
			cm.Statements = append(cm.Statements, rewritten...)
		}
		out = append(out, cm)
	}
	return out, nil
}

func (s *clusterSchema) onCluster() string { return " ON CLUSTER " + quoteIdent(s.cluster) }

func (s *clusterSchema) table(name string) string { return DatabasePlaceholder + "." + name }

// distributed is the CREATE of Distributed table name over name_local.
func (s *clusterSchema) distributed(name string) string {
	return "CREATE TABLE IF NOT EXISTS " + s.table(name) + s.onCluster() + " AS " + s.table(name+LocalSuffix) +
		" ENGINE = Distributed('" + s.cluster + "', '" + s.database + "', '" + name + LocalSuffix + "', " + s.shardKey[name] + ")"
}

func (s *clusterSchema) rewrite(stmt string) ([]string, error) {
	stmt = withoutLeadingComments(stmt)
	switch {
	case createTableRE.MatchString(stmt):
		return s.createTable(stmt)
	case createViewRE.MatchString(stmt):
		return []string{createViewRE.ReplaceAllString(stmt, "${1}"+s.onCluster()+"${2}")}, nil
	case dropTableRE.MatchString(stmt):
		name := dropTableRE.FindStringSubmatch(stmt)[1]
		out := []string{"DROP TABLE IF EXISTS " + s.table(name) + s.onCluster()}
		if _, ok := s.shardKey[name]; ok {
			out = append(out, "DROP TABLE IF EXISTS "+s.table(name+LocalSuffix)+s.onCluster())
			delete(s.shardKey, name)
		}
		return out, nil
	case alterTableRE.MatchString(stmt):
		m := alterTableRE.FindStringSubmatchIndex(stmt)
		name, rest := stmt[m[2]:m[3]], stmt[m[3]:]
		if _, ok := s.shardKey[name]; !ok {
			return nil, fmt.Errorf("ALTER of %s, which no earlier migration created as a table", name)
		}
		// The replicated table is altered once per shard (its replicas
		// follow through ZooKeeper). ClickHouse refuses ALTER … ON CLUSTER
		// of a Distributed table on a replicated cluster, and a Distributed
		// table holds no rows (inserts are synchronous), so it is created
		// again with the new columns.
		return []string{
			"ALTER TABLE " + s.table(name+LocalSuffix) + s.onCluster() + rest,
			"DROP TABLE IF EXISTS " + s.table(name) + s.onCluster(),
			s.distributed(name),
		}, nil
	case renameRE.MatchString(stmt):
		return s.rename(renameRE.FindStringSubmatch(stmt)[1])
	case insertRE.MatchString(stmt):
		// Runs once, through the Distributed tables (inserts are synchronous).
		return []string{stmt}, nil
	}
	first, _, _ := strings.Cut(stmt, "\n")
	return nil, fmt.Errorf("no cluster form for %q", first)
}

// createTable turns CREATE TABLE … ENGINE = XMergeTree(args) into the
// replicated local table and the Distributed table over it.
func (s *clusterSchema) createTable(stmt string) ([]string, error) {
	name := createTableRE.FindStringSubmatch(stmt)[1]
	loc := engineRE.FindAllStringSubmatchIndex(stmt, -1)
	if len(loc) != 1 {
		return nil, fmt.Errorf("table %s: want exactly one ENGINE = …MergeTree", name)
	}
	m := loc[0]
	engine := stmt[m[2]:m[3]]
	args, rest := "", stmt[m[1]:]
	if m[4] >= 0 { // ENGINE = XMergeTree(args)
		argsEnd := closingParen(stmt, m[1])
		if argsEnd < 0 {
			return nil, fmt.Errorf("table %s: unbalanced engine arguments", name)
		}
		args, rest = strings.TrimSpace(stmt[m[1]:argsEnd]), stmt[argsEnd+1:]
	}
	ob := orderByRE.FindStringSubmatch(rest)
	if ob == nil {
		return nil, fmt.Errorf("table %s: no ORDER BY to shard by", name)
	}
	key := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(ob[1], "("), ")"))
	s.shardKey[name] = "cityHash64(" + key + ")"
	zkPath := "'/clickhouse/tables/{shard}/" + s.database + "/" + name + LocalSuffix + "', '{replica}'"
	if args != "" {
		zkPath += ", " + args
	}
	// Columns: from after the table name to the engine's closing ")" of the
	// column list (m[0] points at it).
	head := createTableRE.FindString(stmt) // ends with "("
	columns := stmt[len(head)-1 : m[0]+1]
	local := "CREATE TABLE IF NOT EXISTS " + s.table(name+LocalSuffix) + s.onCluster() + "\n" + columns +
		"\nENGINE = Replicated" + engine + "(" + zkPath + ")" + rest
	return []string{local, s.distributed(name)}, nil
}

// rename swaps tables: the replicated tables are renamed, then the
// Distributed tables of every name involved are dropped and created again
// over the renamed local tables (a Distributed table names its local table,
// so renaming it would leave it pointing at the wrong one).
func (s *clusterSchema) rename(pairs string) ([]string, error) {
	var locals []string
	var from, to []string
	for _, p := range strings.Split(pairs, ",") {
		m := renamePairRE.FindStringSubmatch(p)
		if m == nil {
			return nil, fmt.Errorf("RENAME pair %q: want {database}.a TO {database}.b", strings.TrimSpace(p))
		}
		if _, ok := s.shardKey[m[1]]; !ok {
			return nil, fmt.Errorf("RENAME of %s, which no earlier migration created as a table", m[1])
		}
		locals = append(locals, s.table(m[1]+LocalSuffix)+" TO "+s.table(m[2]+LocalSuffix))
		from, to = append(from, m[1]), append(to, m[2])
	}
	keys := map[string]string{}
	for i := range from {
		keys[to[i]] = s.shardKey[from[i]]
	}
	for _, f := range from {
		delete(s.shardKey, f)
	}
	for t, k := range keys {
		s.shardKey[t] = k
	}
	out := []string{"RENAME TABLE " + strings.Join(locals, ", ") + s.onCluster()}
	seen := map[string]bool{}
	for _, n := range append(append([]string{}, from...), to...) {
		if !seen[n] {
			seen[n] = true
			out = append(out, "DROP TABLE IF EXISTS "+s.table(n)+s.onCluster())
		}
	}
	for _, t := range to {
		out = append(out, s.distributed(t))
	}
	return out, nil
}

// closingParen returns the index of the ")" closing the parenthesis opened
// just before start, skipping quoted strings; -1 if there is none.
func closingParen(s string, start int) int {
	depth := 1
	for i := start; i < len(s); i++ {
		switch s[i] {
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return -1
			}
			i += j + 1
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// withoutLeadingComments drops the comments (and blanks) a statement starts
// with: SplitStatements keeps a file's header comment on its first one.
func withoutLeadingComments(stmt string) string {
	for {
		stmt = strings.TrimSpace(stmt)
		switch {
		case strings.HasPrefix(stmt, "--"):
			_, rest, ok := strings.Cut(stmt, "\n")
			if !ok {
				return ""
			}
			stmt = rest
		case strings.HasPrefix(stmt, "/*"):
			_, rest, ok := strings.Cut(stmt, "*/")
			if !ok {
				return stmt
			}
			stmt = rest
		default:
			return stmt
		}
	}
}
