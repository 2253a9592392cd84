package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// chCluster is scripts/clickhouse-cluster.sh running: ZooKeeper and two
// clickhouse-server replicas of one shard, driven through the script's
// stdin ("stop N", "start N").
type chCluster struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	env    map[string]string
	stderr *strings.Builder
}

// startCHCluster runs the cluster script and waits until it is ready. When
// the script cannot start the cluster (packages missing and not
// installable), the test fails if CI is set and is skipped otherwise.
func startCHCluster(t *testing.T) *chCluster {
	t.Helper()
	c := &chCluster{t: t, lines: make(chan string, 64), env: map[string]string{}, stderr: &strings.Builder{}}
	c.cmd = exec.Command("bash", "../scripts/clickhouse-cluster.sh")
	c.cmd.Stderr = &lockedWriter{w: c.stderr}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	// Closing stdin makes the script stop everything it started.
	t.Cleanup(func() {
		_ = c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = c.cmd.Process.Kill()
			t.Errorf("cluster script did not stop within 60s")
		}
	})
	timeout := time.After(3 * time.Minute) // an apt-get install may run first
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				msg := fmt.Sprintf("clickhouse-cluster.sh exited before it was ready:\n%s", c.stderr)
				if os.Getenv("CI") != "" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			if l == "ready" {
				t.Logf("ZooKeeper and two ClickHouse replicas ready in %s", time.Since(started).Round(time.Millisecond))
				return c
			}
			if k, v, ok := strings.Cut(l, "="); ok {
				c.env[k] = v
			}
		case <-timeout:
			t.Fatalf("clickhouse-cluster.sh not ready after 3 minutes:\n%s", c.stderr)
		}
	}
}

// do sends one command to the script and waits for its "ok".
func (c *chCluster) do(command string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, command+"\n"); err != nil {
		c.t.Fatalf("%s: %v", command, err)
	}
	select {
	case l := <-c.lines:
		if l != "ok" {
			c.t.Fatalf("%s: %s\n%s", command, l, c.stderr)
		}
	case <-time.After(90 * time.Second):
		c.t.Fatalf("%s: no answer within 90s\n%s", command, c.stderr)
	}
}

// lockedWriter lets the script's stderr be read while it is written.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The ledger on two ClickHouse replicas (ZooKeeper, Replicated tables
// behind Distributed ones): replica 1, the one the ledger writes to, is
// killed (kill -9) mid-load and started again. Every request's rows are
// then on both replicas exactly once: no row lost, no duplicate, counted
// raw against distinct keys and with FINAL; and every report gives the
// same figures as the same rows on a single server.
func TestClickHouseCluster(t *testing.T) {
	requireClickHouse(t)
	cl := startCHCluster(t)
	addrs, cluster := cl.env["SWITCHYARD_CLICKHOUSE_ADDR"], cl.env["SWITCHYARD_CLICKHOUSE_CLUSTER"]
	replicas := []string{cl.env["CHCLUSTER_REPLICA1"], cl.env["CHCLUSTER_REPLICA2"]}
	if addrs == "" || cluster == "" || replicas[0] == "" || replicas[1] == "" {
		t.Fatalf("cluster script printed %v", cl.env)
	}
	e := start(t, func(c *app.Config) {
		c.Ledger.ClickHouseAddr = addrs
		c.Ledger.ClickHouseCluster = cluster
		// Small batches: many inserts are in flight when the replica dies.
		c.Ledger.BatchSize = 10
		c.Ledger.FlushInterval = 20 * time.Millisecond
		c.Ledger.RetryMax = time.Second
		c.Alerts.Enabled = false // evaluated by the test itself, through each replica
		// Thresholds the load crosses, so alerts fire with figures to compare.
		c.Policy.Alerts.DailySpend.TotalUSD, c.Policy.Alerts.DailySpend.PerTenantUSD = 0.001, 0.001
	})
	ctx := context.Background()
	open := func(addr string) driver.Conn {
		cfg := ledger.DefaultConfig()
		cfg.ClickHouseAddr, cfg.ClickHouseCluster, cfg.ClickHouseDatabase = addr, cluster, e.db
		var conn driver.Conn
		var err error
		waitFor(t, 60*time.Second, func() bool { conn, err = ledger.Open(ctx, cfg); return err == nil })
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	count := func(conn driver.Conn, q string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf(q, e.db)).Scan(&n); err != nil {
			return 0 // not migrated yet, or the replica is down
		}
		return n
	}
	r2 := open(replicas[1])
	storedOnR2 := func() uint64 {
		return count(r2, "SELECT count() FROM %s.requests_local FINAL WHERE tenant = '"+e.tenant+"'")
	}

	// The load starts once the ledger has migrated the cluster, so the
	// replica dies under the ledger's inserts rather than under a backlog.
	migs, err := ledger.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		return count(r2, "SELECT count() FROM %s.schema_migrations FINAL") == uint64(len(migs))
	})

	const total = 240
	col, err := e.client.Collect(e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	published := make(chan error, 1)
	loadStart := time.Now()
	go func() {
		for i := range total {
			route := []string{"chat", "summarize"}[i%2]
			r := e.request(fmt.Sprintf("c%03d", i), route, fmt.Sprintf("cluster request %d", i))
			if err := e.client.Publish(ctx, r); err != nil {
				published <- fmt.Errorf("publish %s: %w", r.ID, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		published <- nil
	}()
	waitFor(t, 60*time.Second, func() bool { return storedOnR2() >= total/4 })
	atStop := storedOnR2()
	cl.do("stop 1")
	stoppedAt := time.Since(loadStart)
	// A ledger or a report starting while a replica is down: the database
	// and the migrations are there, so it runs no distributed DDL (which
	// would wait distributed_ddl_task_timeout for the dead replica).
	func() {
		cfg := ledger.DefaultConfig()
		cfg.ClickHouseAddr, cfg.ClickHouseCluster, cfg.ClickHouseDatabase = replicas[1], cluster, e.db
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		began := time.Now()
		conn, err := ledger.Open(sctx, cfg)
		if err != nil {
			t.Fatalf("open with replica 1 down: %v", err)
		}
		defer conn.Close()
		if applied, err := ledger.MigrateFor(sctx, conn, cfg, zerolog.Nop()); err != nil || len(applied) != 0 {
			t.Fatalf("migrate with replica 1 down: applied %v, %v", applied, err)
		}
		t.Logf("open and migrate with replica 1 down: %s", time.Since(began).Round(time.Millisecond))
	}()
	// The ledger goes on storing through replica 2 while replica 1 is down.
	waitFor(t, 60*time.Second, func() bool { return storedOnR2() >= 3*total/4 })
	atStart := storedOnR2()
	cl.do("start 1")
	restartedAt := time.Since(loadStart)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := col.Wait(wctx, total); err != nil {
		t.Fatalf("replies: %v", err)
	}
	attempts := 0
	for id, rs := range col.All() {
		if len(rs) != 1 || rs[0].Status != envelope.StatusOK {
			t.Fatalf("%s: %d replies, first %+v", id, len(rs), rs[0])
		}
		attempts += len(rs[0].Attempts)
	}
	t.Logf("load: %d requests (%d attempts); replica 1 killed at %s with %d request rows on replica 2, restarted at %s with %d; %g ledger inserts failed and were retried",
		total, attempts, stoppedAt.Round(time.Millisecond), atStop, restartedAt.Round(time.Millisecond), atStart, insertFailures(t, e))

	// Catch-up: both replicas hold every row in their local tables.
	conns := []driver.Conn{open(replicas[0]), r2}
	tenant := " WHERE tenant = '" + e.tenant + "'"
	caught := time.Now()
	waitFor(t, 60*time.Second, func() bool {
		for _, c := range conns {
			if count(c, "SELECT count() FROM %s.requests_local FINAL"+tenant) != total ||
				count(c, "SELECT count() FROM %s.attempts_local FINAL"+tenant) != uint64(attempts) {
				return false
			}
		}
		return true
	})
	t.Logf("replicas caught up %s after the load was answered", time.Since(caught).Round(time.Millisecond))

	checks := []struct {
		name  string
		query string
		want  uint64
	}{
		{"requests through Distributed", "SELECT count() FROM %s.requests" + tenant, total},
		{"distinct requests through Distributed", "SELECT count(DISTINCT tenant, request_id) FROM %s.requests" + tenant, total},
		{"requests FINAL through Distributed", "SELECT count() FROM %s.requests FINAL" + tenant, total},
		{"requests on the replica", "SELECT count() FROM %s.requests_local" + tenant, total},
		{"distinct attempts through Distributed", "SELECT count(DISTINCT request_id, attempt_id) FROM %s.attempts" + tenant, uint64(attempts)},
		{"attempts FINAL through Distributed", "SELECT count() FROM %s.attempts FINAL" + tenant, uint64(attempts)},
		{"finished attempts through Distributed", "SELECT count() FROM %s.attempts" + tenant + " AND outcome != 'started'", uint64(attempts)},
		{"attempts FINAL on the replica", "SELECT count() FROM %s.attempts_local FINAL" + tenant, uint64(attempts)},
	}
	for i, c := range conns {
		for _, ch := range checks {
			if got := count(c, ch.query); got != ch.want {
				t.Errorf("replica %d: %s = %d, want %d", i+1, ch.name, got, ch.want)
			}
		}
	}

	// The same rows on the single server, migrated the single-server way:
	// every report and alert must read the same figures there.
	if _, err := ledger.Migrate(ctx, e.ch, e.db, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"attempts", "requests"} {
		q := fmt.Sprintf("INSERT INTO %[1]s.%[2]s SELECT * FROM remote('%[3]s', %[1]s, %[2]s_local)", e.db, table, replicas[1])
		if err := e.ch.Exec(ctx, q); err != nil {
			t.Fatalf("copy %s to the single server: %v", table, err)
		}
	}
	q := report.Query{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Minute), By: []string{"route", "vendor"}}
	reports := []struct {
		name string
		run  func(context.Context, driver.Conn, string, report.Query) (*report.Table, error)
	}{
		{"cost", report.Cost}, {"fallbacks", report.Fallbacks}, {"errors", report.Errors},
		{"latency", report.Latency}, {"models", report.Models}, {"tenants", report.Tenants},
	}
	for _, r := range reports {
		for i, c := range conns {
			onCluster := renderReport(t, r.run, c, e.db, q)
			single := renderReport(t, r.run, e.ch, e.db, q)
			if onCluster != single {
				t.Errorf("%s report through replica %d differs from the single server:\n%s\nsingle server:\n%s", r.name, i+1, onCluster, single)
			}
			if r.name == "cost" && i == 0 {
				t.Logf("cost report through the Distributed tables:\n%s", onCluster)
			}
		}
	}
	now := time.Now()
	single := evaluateAlerts(t, e, e.ch, now)
	for i, c := range conns {
		if got := evaluateAlerts(t, e, c, now); got != single {
			t.Errorf("alerts through replica %d:\n%s\nsingle server:\n%s", i+1, got, single)
		}
	}
	if single == "" {
		t.Error("no alert fired: the daily spend thresholds are below the load's cost")
	}
	t.Logf("alerts, the same through both replicas and on the single server:\n%s", single)
}

// evaluateAlerts runs every alert once on conn at now and renders what
// fired (kind, key, value), sorted.
func evaluateAlerts(t *testing.T, e *env, conn driver.Conn, now time.Time) string {
	t.Helper()
	a, err := alerts.New(alerts.DefaultConfig(), alerts.Deps{
		Log: zerolog.Nop(), JS: e.sys.JS, CH: conn, Database: e.db, Policy: e.sys.Policies,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	fired, err := a.Evaluate(context.Background())
	if err != nil {
		t.Fatalf("alerts: %v", err)
	}
	var out []string
	for _, f := range fired {
		out = append(out, fmt.Sprintf("%s %s %.6g", f.Kind, f.Key, f.Value))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func renderReport(t *testing.T, run func(context.Context, driver.Conn, string, report.Query) (*report.Table, error), conn driver.Conn, db string, q report.Query) string {
	t.Helper()
	tb, err := run(context.Background(), conn, db, q)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var b strings.Builder
	if err := tb.Write(&b, "table"); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// insertFailures is the ledger's switchyard_ledger_insert_failures_total,
// summed over its tables.
func insertFailures(t *testing.T, e *env) float64 {
	t.Helper()
	mfs, err := e.sys.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "switchyard_ledger_insert_failures_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
