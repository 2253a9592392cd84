package report_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

var (
	day1 = time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	day2 = time.Date(2025, 3, 15, 10, 0, 0, 0, time.UTC)
)

type attemptRow struct {
	req, id       string
	ts            time.Time
	tenant, route string
	vendor, model string
	errClass      string
	in, out       uint32
	cost          float64
	known         uint8
	latency       uint32
	outcome       string // default ok, or error with an error class
	reasoning     uint32
}

type requestRow struct {
	req           string
	ts            time.Time
	tenant, route string
	vendor, model string
	fallback      uint8
	reason        string
}

// Known data. The last row of each table repeats an earlier one, as a
// redelivery would: reports read with FINAL and must count it once.
var (
	attempts = []attemptRow{
		{"r1", "r1#1", day1, "acme", "summarize", "openai", "gpt-4o-mini", "", 1000, 100, 0.001, 1, 100, "", 60},
		{"r2", "r2#1", day1, "acme", "summarize", "openai", "gpt-4o-mini", "rate_limited", 0, 0, 0, 1, 30, "", 0},
		{"r2", "r2#2", day1, "acme", "summarize", "anthropic", "claude-haiku-4-5", "", 500, 200, 0.0015, 1, 800, "", 0},
		{"r3", "r3#1", day1, "globex", "extract", "openai", "gpt-4o-mini", "timeout", 0, 0, 0, 1, 5000, "", 0},
		{"r3", "r3#2", day1, "globex", "extract", "anthropic", "claude-haiku-4-5", "", 500, 200, 0.0015, 1, 1200, "", 0},
		{"r4", "r4#1", day2, "globex", "extract", "gemini", "mystery", "", 100, 10, 0, 0, 300, "", 0},
		// Rows that are not vendor failures: skipped targets (an old
		// executor recorded them), a hedge loser cut short, and a call
		// whose executor died (started, never finished).
		{"r6", "r6#1", day1, "acme", "summarize", "openai", "gpt-4o-mini", "saturated", 0, 0, 0, 1, 0, "", 0},
		{"r6", "r6#2", day1, "acme", "summarize", "anthropic", "claude-haiku-4-5", "circuit_open", 0, 0, 0, 1, 0, "", 0},
		{"r3", "r3#3", day1, "globex", "extract", "openai", "gpt-4o-mini", "cancelled", 0, 0, 0, 1, 40, "", 0},
		{"r7", "r7#1", day1, "globex", "extract", "anthropic", "claude-haiku-4-5", "", 0, 0, 0, 1, 0, "started", 0},
		{"r2", "r2#2", day1, "acme", "summarize", "anthropic", "claude-haiku-4-5", "", 500, 200, 0.0015, 1, 800, "", 0},
	}
	requests = []requestRow{
		{"r1", day1, "acme", "summarize", "openai", "gpt-4o-mini", 0, ""},
		{"r2", day1, "acme", "summarize", "anthropic", "claude-haiku-4-5", 1, "rate_limited"},
		{"r3", day1, "globex", "extract", "anthropic", "claude-haiku-4-5", 1, "timeout"},
		{"r4", day2, "globex", "extract", "gemini", "mystery", 0, ""},
		{"r5", day1, "acme", "summarize", "openai", "gpt-4o-mini", 1, "rate_limited"},
		{"r2", day1, "acme", "summarize", "anthropic", "claude-haiku-4-5", 1, "rate_limited"},
	}
)

func seed(t *testing.T) (driver.Conn, string) {
	t.Helper()
	conn, cfg := chtest.Migrated(t)
	db := "`" + cfg.ClickHouseDatabase + "`"
	ctx := context.Background()
	// One batch per row so the duplicates land in separate parts, as
	// redeliveries do.
	for i, a := range attempts {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".attempts (request_id, attempt_id, ts, tenant, route, vendor, model, "+
			"outcome, error_class, input_tokens, output_tokens, reasoning_tokens, cost_usd, price_known, latency_ms, ingested_at)")
		if err != nil {
			t.Fatal(err)
		}
		outcome := a.outcome
		if outcome == "" {
			outcome = "ok"
			if a.errClass != "" {
				outcome = "error"
			}
		}
		if err := b.Append(a.req, a.id, a.ts, a.tenant, a.route, a.vendor, a.model, outcome, a.errClass, a.in, a.out, a.reasoning,
			a.cost, a.known, a.latency, day2.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range requests {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".requests (request_id, ts, finished_at, tenant, route, vendor, model, "+
			"fallback, fallback_reason, ingested_at)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(r.req, r.ts, r.ts, r.tenant, r.route, r.vendor, r.model, r.fallback, r.reason,
			day2.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	return conn, cfg.ClickHouseDatabase
}

type reportFunc func(context.Context, driver.Conn, string, report.Query) (*report.Table, error)

func TestReports(t *testing.T) {
	conn, db := seed(t)
	costCols := []string{"attempts", "requests", "input_tokens", "output_tokens", "reasoning_tokens", "cached_tokens", "cost_usd", "unpriced_attempts"}
	tests := []struct {
		name string
		fn   reportFunc
		q    report.Query
		cols []string
		rows [][]string
	}{
		// attempts are vendor calls: the skipped r6 rows are not, the
		// cancelled r3#3 and the started r7#1 are (their cost unknown).
		{"cost total", report.Cost, report.Query{}, costCols, [][]string{{"8", "5", "2100", "510", "60", "0", "0.004", "1"}}},
		{"cost by vendor,model", report.Cost, report.Query{By: []string{"vendor", "model"}},
			append([]string{"vendor", "model"}, costCols...), [][]string{
				{"anthropic", "claude-haiku-4-5", "3", "3", "1000", "400", "0", "0", "0.003", "0"},
				{"openai", "gpt-4o-mini", "4", "3", "1000", "100", "60", "0", "0.001", "0"},
				{"gemini", "mystery", "1", "1", "100", "10", "0", "0", "0", "1"},
			}},
		{"cost by day", report.Cost, report.Query{By: []string{"day"}},
			append([]string{"day"}, costCols...), [][]string{
				{"2025-03-14", "7", "4", "2000", "500", "60", "0", "0.004", "0"},
				{"2025-03-15", "1", "1", "100", "10", "0", "0", "0", "1"},
			}},
		{"cost since day 2", report.Cost, report.Query{Since: day2.Truncate(24 * time.Hour), By: []string{"tenant"}},
			append([]string{"tenant"}, costCols...), [][]string{{"globex", "1", "1", "100", "10", "0", "0", "0", "1"}}},
		{"cost until day 2", report.Cost, report.Query{Until: day2.Truncate(24 * time.Hour), By: []string{"tenant"}},
			append([]string{"tenant"}, costCols...), [][]string{
				{"acme", "3", "2", "1500", "300", "60", "0", "0.0025", "0"},
				{"globex", "4", "2", "500", "200", "0", "0", "0.0015", "0"},
			}},
		{"fallbacks total", report.Fallbacks, report.Query{},
			[]string{"requests", "fallbacks", "fallback_rate", "fallback_reasons"},
			[][]string{{"5", "3", "0.6", "rate_limited=2; timeout=1"}}},
		{"fallbacks by route", report.Fallbacks, report.Query{By: []string{"route"}},
			[]string{"route", "requests", "fallbacks", "fallback_rate", "fallback_reasons"}, [][]string{
				{"summarize", "3", "2", "0.6667", "rate_limited=2"},
				{"extract", "2", "1", "0.5", "timeout=1"},
			}},
		{"fallbacks by vendor,model", report.Fallbacks, report.Query{By: []string{"vendor", "model"}},
			[]string{"vendor", "model", "requests", "fallbacks", "fallback_rate", "fallback_reasons"}, [][]string{
				{"anthropic", "claude-haiku-4-5", "2", "2", "1", "rate_limited=1; timeout=1"},
				{"openai", "gpt-4o-mini", "2", "1", "0.5", "rate_limited=1"},
				{"gemini", "mystery", "1", "0", "0", ""},
			}},
		{"fallback reasons by tenant", report.FallbackReasons, report.Query{By: []string{"tenant"}},
			[]string{"tenant", "reason", "requests"}, [][]string{
				{"acme", "rate_limited", "2"},
				{"globex", "timeout", "1"},
			}},
		// Skipped targets and the hedge loser are not errors; the call
		// left started is counted as abandoned.
		{"errors by vendor/model", report.Errors, report.Query{},
			[]string{"vendor", "model", "error_class", "attempts"}, [][]string{
				{"anthropic", "claude-haiku-4-5", "abandoned", "1"},
				{"openai", "gpt-4o-mini", "rate_limited", "1"},
				{"openai", "gpt-4o-mini", "timeout", "1"},
			}},
		{"errors by tenant", report.Errors, report.Query{By: []string{"tenant"}},
			[]string{"tenant", "error_class", "attempts"}, [][]string{
				{"acme", "rate_limited", "1"},
				{"globex", "abandoned", "1"},
				{"globex", "timeout", "1"},
			}},
		{"latency by vendor/model", report.Latency, report.Query{},
			[]string{"vendor", "model", "attempts", "p50_ms", "p95_ms", "p99_ms", "max_ms"}, [][]string{
				{"anthropic", "claude-haiku-4-5", "2", "1200", "1200", "1200", "1200"},
				{"gemini", "mystery", "1", "300", "300", "300", "300"},
				{"openai", "gpt-4o-mini", "1", "100", "100", "100", "100"},
			}},
		{"empty range", report.Cost, report.Query{Since: day2.Add(48 * time.Hour), By: []string{"vendor"}},
			append([]string{"vendor"}, costCols...), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.fn(context.Background(), conn, db, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Columns, tt.cols) {
				t.Fatalf("columns %q, want %q", got.Columns, tt.cols)
			}
			if !slices.EqualFunc(got.Rows, tt.rows, slices.Equal[[]string]) {
				t.Fatalf("rows\n%q\nwant\n%q", got.Rows, tt.rows)
			}
		})
	}
}

func TestReportRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		db   string
		q    report.Query
		want string
	}{
		{"unknown dimension", "switchyard", report.Query{By: []string{"vendor", "user_hash"}}, "unknown --by"},
		{"injection", "switchyard", report.Query{By: []string{"vendor) FROM system.users --"}}, "unknown --by"},
		{"duplicate dimension", "switchyard", report.Query{By: []string{"model", "model"}}, "twice"},
		{"bad database", "switchyard; DROP", report.Query{}, "invalid database"},
		{"until before since", "switchyard", report.Query{Since: day2, Until: day1}, "not after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The checks run before any query: a nil connection is never used.
			for _, fn := range []reportFunc{report.Cost, report.Fallbacks, report.FallbackReasons, report.Errors, report.Latency} {
				_, err := fn(context.Background(), nil, tt.db, tt.q)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one containing %q", err, tt.want)
				}
			}
		})
	}
}

func TestParseBy(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"vendor,model", []string{"vendor", "model"}, false},
		{"vendor, day", []string{"vendor", " day"}, false},
		{"vendor,cost", nil, true},
	}
	for _, tt := range tests {
		got, err := report.ParseBy(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseBy(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !slices.Equal(got, tt.want) {
			t.Errorf("ParseBy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
