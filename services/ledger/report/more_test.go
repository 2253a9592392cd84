package report_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger/report"
)

// testPolicy is a fixed catalog and route table (implements
// report.RoutePolicy).
type testPolicy struct {
	models map[policy.Key]*policy.Model
	routes map[string]*policy.Route
}

func (p testPolicy) Model(v, m string) (*policy.Model, bool) {
	x, ok := p.models[policy.Key{Vendor: v, Model: m}]
	return x, ok
}

func (p testPolicy) Route(name string) (*policy.Route, bool) {
	r, ok := p.routes[name]
	return r, ok
}

var pol = testPolicy{
	models: map[policy.Key]*policy.Model{
		{Vendor: "openai", Model: "gpt-4o-mini"}: {Vendor: "openai", Model: "gpt-4o-mini",
			Price: policy.Price{InputPerMTok: 0.15, OutputPerMTok: 0.60, CachedPerMTok: 0.075}},
		{Vendor: "anthropic", Model: "claude-haiku-4-5"}: {Vendor: "anthropic", Model: "claude-haiku-4-5",
			Price: policy.Price{InputPerMTok: 1, OutputPerMTok: 5}},
	},
	routes: map[string]*policy.Route{
		"summarize": {Name: "summarize", Chain: []policy.Target{
			{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}}},
		"extract": {Name: "extract", Chain: []policy.Target{
			{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}, {Vendor: "gemini", Model: "mystery"}}},
		"unpriced": {Name: "unpriced", Chain: []policy.Target{{Vendor: "gemini", Model: "mystery"}}},
	},
}

func TestMoreReports(t *testing.T) {
	conn, db := seed(t)
	savings := func(ctx context.Context, c driver.Conn, db string, q report.Query) (*report.Table, error) {
		return report.Savings(ctx, c, db, q, pol)
	}
	modelCols := []string{"attempts", "failed_attempts", "error_rate", "abandoned", "input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "unpriced_attempts", "unpriced_ratio", "p50_ms"}
	tenantCols := []string{"requests", "attempts", "input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "cost_per_request", "unpriced_attempts"}
	savingCols := []string{"attempts", "ok_attempts", "actual_usd", "baseline_usd", "savings_usd", "savings_pct", "unpriced_attempts"}
	tests := []struct {
		name string
		fn   func(context.Context, driver.Conn, string, report.Query) (*report.Table, error)
		q    report.Query
		cols []string
		rows [][]string
	}{
		// attempts are vendor calls (the skipped r6 rows are left out);
		// the error rate is failures over calls with a known outcome (not
		// the cancelled hedge loser r3#3, not the started r7#1, which is
		// counted as abandoned); p50 is over answered calls.
		{"models default", report.Models, report.Query{}, append([]string{"vendor", "model"}, modelCols...), [][]string{
			{"anthropic", "claude-haiku-4-5", "3", "0", "0", "1", "1000", "400", "0", "0.003", "0", "0", "1200"},
			{"openai", "gpt-4o-mini", "4", "2", "0.6667", "0", "1000", "100", "60", "0.001", "0", "0", "100"},
			{"gemini", "mystery", "1", "0", "0", "0", "100", "10", "0", "0", "1", "1", "300"},
		}},
		{"models by day", report.Models, report.Query{By: []string{"day"}}, append([]string{"day"}, modelCols...), [][]string{
			{"2025-03-14", "7", "2", "0.4", "1", "2000", "500", "60", "0.004", "0", "0", "800"},
			{"2025-03-15", "1", "0", "0", "0", "100", "10", "0", "0", "1", "1", "300"},
		}},
		// requests come from the requests table: acme's r5 made no
		// attempt and still is a request of acme's.
		{"tenants default", report.Tenants, report.Query{}, append([]string{"tenant"}, tenantCols...), [][]string{
			{"acme", "3", "3", "1500", "300", "60", "0.0025", "0.000833", "0"},
			{"globex", "2", "5", "600", "210", "0", "0.0015", "0.00075", "1"},
		}},
		{"tenants by day", report.Tenants, report.Query{By: []string{"day"}}, append([]string{"day"}, tenantCols...), [][]string{
			{"2025-03-14", "4", "7", "2000", "500", "60", "0.004", "0.001", "0"},
			{"2025-03-15", "1", "1", "100", "10", "0", "0", "0", "1"},
		}},
		{"tenants by route until day 2", report.Tenants, report.Query{Until: day2.Truncate(24 * time.Hour), By: []string{"route"}},
			append([]string{"route"}, tenantCols...), [][]string{
				{"summarize", "3", "3", "1500", "300", "60", "0.0025", "0.000833", "0"},
				{"extract", "1", "4", "500", "200", "0", "0.0015", "0.0015", "0"},
			}},
		// Ceiling of both routes: claude-haiku-4-5 ($1 in, $5 out per MTok).
		// OK priced attempts r1#1, r2#2, r3#2 each cost $0.0015 there;
		// r4#1 (unknown price) is left out of both sides.
		// The started r7#1 is a call but not an answered one.
		{"savings total", savings, report.Query{}, savingCols, [][]string{{"8", "4", "0.004", "0.0045", "0.0005", "11.11", "1"}}},
		{"savings by route", savings, report.Query{By: []string{"route"}}, append([]string{"route"}, savingCols...), [][]string{
			{"extract", "5", "2", "0.0015", "0.0015", "0", "0", "1"},
			{"summarize", "3", "2", "0.0025", "0.003", "0.0005", "16.67", "0"},
		}},
		{"savings by tenant,day", savings, report.Query{By: []string{"tenant", "day"}}, append([]string{"tenant", "day"}, savingCols...), [][]string{
			{"acme", "2025-03-14", "3", "2", "0.0025", "0.003", "0.0005", "16.67", "0"},
			{"globex", "2025-03-14", "4", "1", "0.0015", "0.0015", "0", "0", "0"},
			{"globex", "2025-03-15", "1", "1", "0", "0", "0", "0", "1"},
		}},
		{"savings empty range", savings, report.Query{Since: day2.Add(48 * time.Hour)}, savingCols, [][]string{{"0", "0", "0", "0", "0", "0", "0"}}},
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

func TestMoreReportsRejectBadInput(t *testing.T) {
	for _, fn := range []func(context.Context, driver.Conn, string, report.Query) (*report.Table, error){
		report.Models, report.Tenants,
		func(ctx context.Context, c driver.Conn, db string, q report.Query) (*report.Table, error) {
			return report.Savings(ctx, c, db, q, pol)
		},
	} {
		if _, err := fn(context.Background(), nil, "switchyard", report.Query{By: []string{"user_hash"}}); err == nil || !strings.Contains(err.Error(), "unknown --by") {
			t.Fatalf("error %v, want unknown --by", err)
		}
	}
	if _, err := report.Savings(context.Background(), nil, "switchyard", report.Query{}, nil); err == nil {
		t.Fatal("nil policy: want an error")
	}
}

func TestCeilingModel(t *testing.T) {
	tests := []struct {
		route, want string
		ok          bool
	}{
		{"summarize", "claude-haiku-4-5", true},
		{"extract", "claude-haiku-4-5", true},
		{"unpriced", "", false},
		{"nope", "", false},
	}
	for _, tt := range tests {
		m, ok := report.CeilingModel(pol, tt.route)
		if ok != tt.ok || (ok && m.Model != tt.want) {
			t.Errorf("CeilingModel(%q) = %v, %v; want %q, %v", tt.route, m, ok, tt.want, tt.ok)
		}
	}
}

// TestDashboardHTMLInChromium renders the page in headless Chromium and
// checks the DOM Chromium built: the three charts, their bars and points
// and the numbers.
func TestDashboardHTMLInChromium(t *testing.T) {
	conn, db := seed(t)
	d, err := report.LoadDashboard(context.Background(), conn, db, report.Query{})
	if err != nil {
		t.Fatal(err)
	}
	d.Report, err = report.Cost(context.Background(), conn, db, report.Query{By: []string{"tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := d.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script", "http://", "https://", "<link", "@import"} {
		if strings.Contains(strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
			t.Fatalf("page is not self-contained: contains %q", bad)
		}
	}
	chromium := ""
	for _, c := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(c); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (CI is set)")
		}
		t.Skip("chromium is not installed")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "out.png")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1200,1600"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, chromium, append(base, "--dump-dom", "file://"+file)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	got := string(dom)
	for _, want := range []string{
		`<svg id="chart-spend"`, `<svg id="chart-fallback-rate"`, `<svg id="chart-latency"`,
		// spend: day 1 anthropic 0.003 + openai 0.001, day 2 gemini 0
		`data-day="2025-03-14" data-vendor="anthropic" data-value="0.003"`,
		`data-day="2025-03-14" data-vendor="openai" data-value="0.001"`,
		`>0.004</text>`,
		// fallback rate: day 1 3 of 4 requests, day 2 0 of 1
		`data-day="2025-03-14" data-value="0.75"`, `data-day="2025-03-15" data-value="0"`,
		// latency
		`data-series="p95_ms" data-model="anthropic/claude-haiku-4-5" data-value="1200"`,
		`data-series="p50_ms" data-model="openai/gpt-4o-mini" data-value="100"`,
		`<table id="table-report">`, `<td>acme</td>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if n := strings.Count(got, `<rect class="bar"`); n != 2+9 {
		t.Errorf("DOM has %d bars, want 11 (2 spend, 9 latency)", n)
	}
	if n := strings.Count(got, `<circle class="point"`); n != 2 {
		t.Errorf("DOM has %d points, want 2", n)
	}
	if err := exec.CommandContext(ctx, chromium, append(base, "--screenshot="+shot, "file://"+file)...).Run(); err != nil {
		t.Fatalf("chromium --screenshot: %v", err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Fatalf("screenshot: %v %v", st, err)
	}
}
