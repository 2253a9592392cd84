package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

var (
	rday1 = time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	rday2 = time.Date(2025, 3, 15, 10, 0, 0, 0, time.UTC)
	rday3 = time.Date(2025, 3, 16, 10, 0, 0, 0, time.UTC)
)

type seedAttempt struct {
	req, id                 string
	ts                      time.Time
	tenant, tag, pv         string
	vendor, model, errClass string
	in, out, cached         uint32
	cost                    float64
	known                   uint8
}

type seedRequest struct {
	req             string
	ts              time.Time
	tenant, tag, pv string
	vendor, model   string
	fallback        uint8
	cost            float64
}

// insertRows inserts each row in its own batch (as redeliveries arrive),
// with ingested_at one second apart starting at base.
func insertRows(t *testing.T, conn driver.Conn, db string, base time.Time, as []seedAttempt, rs []seedRequest) {
	t.Helper()
	ctx := context.Background()
	q := "`" + db + "`"
	for i, a := range as {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+q+".attempts (request_id, attempt_id, ts, tenant, endpoint_tag, prompt_version, "+
			"vendor, model, error_class, input_tokens, output_tokens, cached_tokens, cost_usd, price_known, latency_ms, ingested_at)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(a.req, a.id, a.ts, a.tenant, a.tag, a.pv, a.vendor, a.model, a.errClass, a.in, a.out, a.cached,
			a.cost, a.known, uint32(100+i), base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range rs {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+q+".requests (request_id, ts, finished_at, tenant, endpoint_tag, prompt_version, "+
			"vendor, model, fallback, cost_usd, ingested_at)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(r.req, r.ts, r.ts, r.tenant, r.tag, r.pv, r.vendor, r.model, r.fallback, r.cost,
			base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
}

// queryStrings runs a query and formats every value of every row.
func queryStrings(t *testing.T, conn driver.Conn, sql string) [][]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		types := rows.ColumnTypes()
		dest := make([]any, len(types))
		for i, ct := range types {
			switch ct.DatabaseTypeName() {
			case "String":
				dest[i] = new(string)
			case "Float64":
				dest[i] = new(float64)
			case "UInt8":
				dest[i] = new(uint8)
			default:
				dest[i] = new(uint64)
			}
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			switch v := d.(type) {
			case *string:
				row[i] = *v
			case *float64:
				row[i] = strconv.FormatFloat(*v, 'f', -1, 64)
			case *uint8:
				row[i] = strconv.Itoa(int(*v))
			case *uint64:
				row[i] = strconv.FormatUint(*v, 10)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDailyRollupCountsDuplicatesOnce(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	db := cfg.ClickHouseDatabase
	as := []seedAttempt{
		{"r1", "r1#1", rday1, "acme", "chat", "v1", "openai", "gpt-4o-mini", "", 1000, 100, 200, 0.001, 1},
		{"r2", "r2#1", rday1, "acme", "chat", "v1", "openai", "gpt-4o-mini", "rate_limited", 0, 0, 0, 0, 1},
		{"r2", "r2#2", rday1, "acme", "chat", "v1", "anthropic", "claude-haiku-4-5", "", 500, 200, 0, 0.0015, 1},
		{"r3", "r3#1", rday2, "globex", "", "v2", "gemini", "mystery", "", 100, 10, 0, 0, 0},
		// redeliveries
		{"r1", "r1#1", rday1, "acme", "chat", "v1", "openai", "gpt-4o-mini", "", 1000, 100, 200, 0.001, 1},
		{"r2", "r2#2", rday1, "acme", "chat", "v1", "anthropic", "claude-haiku-4-5", "", 500, 200, 0, 0.0015, 1},
		{"r2", "r2#2", rday1, "acme", "chat", "v1", "anthropic", "claude-haiku-4-5", "", 500, 200, 0, 0.0015, 1},
	}
	rs := []seedRequest{
		{"r1", rday1, "acme", "chat", "v1", "openai", "gpt-4o-mini", 0, 0.001},
		{"r2", rday1, "acme", "chat", "v1", "anthropic", "claude-haiku-4-5", 1, 0.0015},
		{"r3", rday2, "globex", "", "v2", "gemini", "mystery", 0, 0},
		{"r2", rday1, "acme", "chat", "v1", "anthropic", "claude-haiku-4-5", 1, 0.0015},
		{"r1", rday1, "acme", "chat", "v1", "openai", "gpt-4o-mini", 0, 0.001},
	}
	insertRows(t, conn, db, rday3, as, rs)
	sql := "SELECT toString(day), tenant, vendor, model, endpoint_tag, prompt_version, attempts, round(cost_usd, 6), " +
		"unpriced_attempts, input_tokens, output_tokens, cached_tokens, requests, fallbacks FROM `" + db + "`.daily_rollup %s " +
		"ORDER BY day, tenant, vendor, model"
	tests := []struct {
		name, where string
		want        [][]string
	}{
		{"all", "", [][]string{
			{"2025-03-14", "acme", "anthropic", "claude-haiku-4-5", "chat", "v1", "1", "0.0015", "0", "500", "200", "0", "1", "1"},
			{"2025-03-14", "acme", "openai", "gpt-4o-mini", "chat", "v1", "2", "0.001", "0", "1000", "100", "200", "1", "0"},
			{"2025-03-15", "globex", "gemini", "mystery", "", "v2", "1", "0", "1", "100", "10", "0", "1", "0"},
		}},
		{"one day", "WHERE day = toDate('2025-03-15')", [][]string{
			{"2025-03-15", "globex", "gemini", "mystery", "", "v2", "1", "0", "1", "100", "10", "0", "1", "0"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := queryStrings(t, conn, fmt.Sprintf(sql, tt.where))
			if !slices.EqualFunc(got, tt.want, slices.Equal[[]string]) {
				t.Fatalf("rollup\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
	// Totals match the tables read with FINAL, before and after a merge.
	for _, phase := range []string{"before merge", "after OPTIMIZE FINAL"} {
		if phase != "before merge" {
			for _, tbl := range []string{"attempts", "requests"} {
				if err := conn.Exec(context.Background(), "OPTIMIZE TABLE `"+db+"`."+tbl+" FINAL"); err != nil {
					t.Fatal(err)
				}
			}
		}
		got := queryStrings(t, conn, "SELECT sum(attempts), sum(requests), sum(fallbacks) FROM `"+db+"`.daily_rollup")
		if want := [][]string{{"4", "3", "1"}}; !slices.EqualFunc(got, want, slices.Equal[[]string]) {
			t.Fatalf("%s: totals %q, want %q", phase, got, want)
		}
	}
}

func TestRepriceRange(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	db := cfg.ClickHouseDatabase
	// testCatalog: gpt-4o-mini $0.15 in / $0.60 out / $0.075 cached;
	// claude-haiku-4-5 $1 / $5; "mystery" is not in it.
	as := []seedAttempt{
		{"r1", "r1#1", rday1, "acme", "", "", "openai", "gpt-4o-mini", "", 1000, 100, 0, 0.001, 1},         // -> 0.00021
		{"r2", "r2#1", rday1, "acme", "", "", "openai", "gpt-4o-mini", "rate_limited", 0, 0, 0, 0, 1},      // unchanged
		{"r2", "r2#2", rday1, "acme", "", "", "anthropic", "claude-haiku-4-5", "", 500, 200, 0, 0.0015, 1}, // unchanged
		{"r3", "r3#1", rday1, "globex", "", "", "gemini", "mystery", "", 100, 10, 0, 0.002, 1},             // -> 0, unknown
		{"r4", "r4#1", rday3, "globex", "", "", "openai", "gpt-4o-mini", "", 1000, 0, 0, 0.5, 1},           // outside the range
		{"r5", "r5#1", rday1, "acme", "", "", "openai", "gpt-4o-mini", "", 2000, 0, 1000, 0, 0},            // -> 0.000225, known
		{"r1", "r1#1", rday1, "acme", "", "", "openai", "gpt-4o-mini", "", 1000, 100, 0, 0.001, 1},         // redelivery
	}
	rs := []seedRequest{
		{"r1", rday1, "acme", "", "", "openai", "gpt-4o-mini", 0, 0.001},
		{"r2", rday1, "acme", "", "", "anthropic", "claude-haiku-4-5", 1, 0.0015},
		{"r3", rday1, "globex", "", "", "gemini", "mystery", 0, 0.002},
		{"r4", rday3, "globex", "", "", "openai", "gpt-4o-mini", 0, 0.5},
		{"r5", rday1, "acme", "", "", "openai", "gpt-4o-mini", 0, 0},
	}
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	insertRows(t, conn, db, base, as, rs)
	q := "`" + db + "`"
	attemptsSQL := "SELECT attempt_id, round(cost_usd, 9), price_known FROM " + q + ".attempts FINAL ORDER BY attempt_id"
	requestsSQL := "SELECT request_id, round(cost_usd, 9) FROM " + q + ".requests FINAL ORDER BY request_id"
	beforeA, beforeR := queryStrings(t, conn, attemptsSQL), queryStrings(t, conn, requestsSQL)

	round9 := func(f float64) string {
		return strconv.FormatFloat(float64(int64(f*1e9+copysign(f)*0.5))/1e9, 'f', -1, 64)
	}
	type result struct {
		scanned, attempts, requests int
		attemptDelta, requestDelta  string
	}
	ctx := context.Background()
	tests := []struct {
		name         string
		since, until time.Time
		dryRun       bool
		want         result
	}{
		{"dry run", rday1.Truncate(24 * time.Hour), rday2.Truncate(24 * time.Hour), true, result{5, 3, 3, "-0.002565", "-0.002565"}},
		{"reprice", rday1.Truncate(24 * time.Hour), rday2.Truncate(24 * time.Hour), false, result{5, 3, 3, "-0.002565", "-0.002565"}},
		{"open until also takes r4", rday1.Truncate(24 * time.Hour), time.Time{}, false, result{6, 1, 1, "-0.49985", "-0.49985"}},
		{"third time", rday1.Truncate(24 * time.Hour), time.Time{}, false, result{6, 0, 0, "0", "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ledger.RepriceRange(ctx, conn, db, testCatalog, tt.since, tt.until, time.Now(), tt.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			got := result{res.AttemptsScanned, res.AttemptsChanged, res.RequestsChanged, round9(res.AttemptCostDelta), round9(res.RequestCostDelta)}
			if got != tt.want {
				t.Fatalf("result %+v, want %+v", got, tt.want)
			}
			if tt.dryRun {
				if a, r := queryStrings(t, conn, attemptsSQL), queryStrings(t, conn, requestsSQL); !slices.EqualFunc(a, beforeA, slices.Equal[[]string]) ||
					!slices.EqualFunc(r, beforeR, slices.Equal[[]string]) {
					t.Fatalf("dry run wrote rows: %q %q", a, r)
				}
			}
			if tt.name == "reprice" {
				wantA := [][]string{{"r1#1", "0.00021", "1"}, {"r2#1", "0", "1"}, {"r2#2", "0.0015", "1"}, {"r3#1", "0", "0"},
					{"r4#1", "0.5", "1"}, {"r5#1", "0.000225", "1"}}
				if a := queryStrings(t, conn, attemptsSQL); !slices.EqualFunc(a, wantA, slices.Equal[[]string]) {
					t.Fatalf("attempts %q, want %q", a, wantA)
				}
				wantR := [][]string{{"r1", "0.00021"}, {"r2", "0.0015"}, {"r3", "0"}, {"r4", "0.5"}, {"r5", "0.000225"}}
				if r := queryStrings(t, conn, requestsSQL); !slices.EqualFunc(r, wantR, slices.Equal[[]string]) {
					t.Fatalf("requests %q, want %q", r, wantR)
				}
			}
		})
	}
	// Still one row per attempt and request.
	if n := chtest.Count(t, conn, "SELECT count() FROM "+q+".attempts FINAL"); n != 6 {
		t.Fatalf("%d attempts, want 6", n)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+q+".requests FINAL"); n != 5 {
		t.Fatalf("%d requests, want 5", n)
	}
	wantR := [][]string{{"r1", "0.00021"}, {"r2", "0.0015"}, {"r3", "0"}, {"r4", "0.00015"}, {"r5", "0.000225"}}
	if r := queryStrings(t, conn, requestsSQL); !slices.EqualFunc(r, wantR, slices.Equal[[]string]) {
		t.Fatalf("requests %q, want %q", r, wantR)
	}
}

func copysign(f float64) float64 {
	if f < 0 {
		return -1
	}
	return 1
}

func TestRepriceRangeRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := ledger.RepriceRange(ctx, nil, "x; DROP", testCatalog, rday1, time.Time{}, time.Now(), true); err == nil {
		t.Fatal("bad database: want an error")
	}
	if _, err := ledger.RepriceRange(ctx, nil, "switchyard", testCatalog, time.Time{}, time.Time{}, time.Now(), true); err == nil {
		t.Fatal("no since: want an error")
	}
	if _, err := ledger.RepriceRange(ctx, nil, "switchyard", testCatalog, rday2, rday1, time.Now(), true); err == nil {
		t.Fatal("until before since: want an error")
	}
}

// TestRepriceKeepsVendorCostAndStartedRows: a reprice never replaces what
// a vendor said it charged, leaves a started row at the lowest version (so
// its finished event still replaces it), and prices reasoning as output.
func TestRepriceKeepsVendorCostAndStartedRows(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	db := cfg.ClickHouseDatabase
	q := "`" + db + "`"
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	rows := []struct {
		req, outcome, vendor, model string
		out, reasoning              uint32
		cost                        float64
		known                       uint8
		source                      string
		ingested                    time.Time
	}{
		{"v1", "ok", "openrouter", "meta-llama/llama-3.3-70b-instruct", 100, 0, 0.0042, 1, "vendor", base},
		{"s1", "started", "openai", "gpt-4o-mini", 0, 0, 0, 1, "none", ledger.StartedVersion},
		{"c1", "ok", "openai", "gpt-4o-mini", 100, 80, 0.9, 1, "catalog", base},
	}
	for _, r := range rows {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+q+".attempts (request_id, attempt_id, ts, tenant, vendor, model, outcome, "+
			"input_tokens, output_tokens, reasoning_tokens, cost_usd, price_known, cost_source, ingested_at)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(r.req, r.req+"#1", rday1, "acme", r.vendor, r.model, r.outcome, uint32(1000), r.out, r.reasoning,
			r.cost, r.known, r.source, r.ingested); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := ledger.RepriceRange(ctx, conn, db, testCatalog, rday1.Truncate(24*time.Hour), time.Time{}, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.AttemptsScanned != 3 || res.AttemptsChanged != 1 {
		t.Fatalf("result %+v, want 3 scanned and only c1 changed", res)
	}
	got := queryStrings(t, conn, "SELECT request_id, outcome, round(cost_usd, 9), price_known, cost_source, toUInt64(toUnixTimestamp(ingested_at)) "+
		"FROM "+q+".attempts FINAL ORDER BY request_id")
	// c1: 1000 in at $0.15 + 100 out (80 of them reasoning) at $0.60.
	want := [][]string{
		{"c1", "ok", "0.00021", "1", "catalog", got[0][5]},
		{"s1", "started", "0", "1", "none", "1"},
		{"v1", "ok", "0.0042", "1", "vendor", strconv.FormatInt(base.Unix(), 10)},
	}
	if !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Fatalf("attempts %q, want %q", got, want)
	}
}

// TestDailyRollupCountsCallsAndAbandoned: the rollup's attempts are vendor
// calls (a saturated or circuit_open row was never one), it sums reasoning
// tokens and counts calls left started as abandoned.
func TestDailyRollupCountsCallsAndAbandoned(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	db := "`" + cfg.ClickHouseDatabase + "`"
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".attempts (request_id, attempt_id, ts, tenant, vendor, model, outcome, error_class, "+
		"output_tokens, reasoning_tokens, cost_usd)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		id, outcome, class string
		out, reasoning     uint32
		cost               float64
	}{
		{"a#1", "ok", "", 500, 300, 0.002},
		{"b#1", "error", "saturated", 0, 0, 0},
		{"b#2", "error", "circuit_open", 0, 0, 0},
		{"c#1", "started", "", 0, 0, 0},
		{"d#1", "error", "server_error", 0, 0, 0},
	} {
		if err := b.Append(r.id[:1], r.id, rday1, "acme", "openai", "gpt-4o-mini", r.outcome, r.class, r.out, r.reasoning, r.cost); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	got := queryStrings(t, conn, "SELECT attempts, round(cost_usd, 6), output_tokens, reasoning_tokens, abandoned FROM "+db+".daily_rollup")
	if want := [][]string{{"3", "0.002", "500", "300", "1"}}; !slices.EqualFunc(got, want, slices.Equal[[]string]) {
		t.Fatalf("rollup %q, want %q", got, want)
	}
}
