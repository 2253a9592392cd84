package alerts_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

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
	version, results := chtest.RunChdb(t, "alerts_chdb", setup, queries)
	t.Logf("chdb ClickHouse %s", version)
	for i := range want {
		if i >= len(results) || results[i] != want[i] {
			t.Errorf("query %d on chdb:\n%s\n= %q, want %q", i, queries[i], results, want[i])
		}
	}
}
