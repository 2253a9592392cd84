package alerts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
)

func TestDailySpend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, allOff+`
  daily_spend:
    total_usd: 10
    per_tenant_usd: 5
    tenant_usd: {big: 8}
`)
	d1, d2 := day, day.AddDate(0, 0, 1)
	e.insert(
		row{req: "a1", ts: at(9, 0, 0), cost: 1.5},
		row{req: "a2", ts: at(9, 30, 0), cost: 1.5},
		row{req: "b1", ts: at(10, 0, 0), tenant: "big", cost: 6},
		row{req: "y1", ts: day.Add(-time.Hour), cost: 100}, // yesterday
	)
	e.tick(0) // acme 3 ≤ 5, big 6 ≤ 8, total 9 ≤ 10

	e.insert(row{req: "a3", ts: at(11, 0, 0), cost: 2.5})
	got := e.tick(2)
	check(t, find(t, got, "tenant/acme"), alerts.KindDailySpend, "tenant/acme", alerts.SeverityWarning, 5.5, 5, d1, d2)
	check(t, find(t, got, "total"), alerts.KindDailySpend, "total", alerts.SeverityWarning, 11.5, 10, d1, d2)

	// Still over: no new alert, also not for a redelivered (duplicate) row
	// that FINAL collapses, nor from a second replica on the same tick.
	e.setNow(at(12, 0, 30))
	e.insert(row{req: "a3", ts: at(11, 0, 0), cost: 2.5})
	e.tick(0)
	e.tickWith(e.alerter(), 0) // publishes again, JetStream drops it by Nats-Msg-Id

	// A new day re-arms: nothing spent yet, then acme goes over again.
	e.setNow(at(36, 0, 0))
	e.tick(0)
	e.insert(row{req: "a4", ts: at(32, 0, 0), cost: 6})
	got = e.tick(1)
	check(t, got[0], alerts.KindDailySpend, "tenant/acme", alerts.SeverityWarning, 6, 5, d2, d2.AddDate(0, 0, 1))
	e.tick(0)
}

func TestVendorErrorRate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
alerts:
  latency_regression: {disabled: true}
  unknown_model: {disabled: true}
  vendor_error_rate: {min_attempts: 10}
`)
	var rows []row
	add := func(vendor string, n, failed int, from time.Time) {
		for i := range n {
			r := row{vendor: vendor, ts: from.Add(time.Duration(i) * 5 * time.Second), latency: 100}
			if i < failed {
				r.errc = "server_error"
			}
			rows = append(rows, r)
		}
	}
	add("openai", 20, 2, at(11, 57, 0))    // 10 % > 5 %
	add("anthropic", 20, 1, at(11, 57, 0)) // exactly 5 %: not over
	add("gemini", 5, 5, at(11, 57, 0))     // 100 % of too small a sample
	add("mistral", 20, 20, at(11, 50, 0))  // before the window
	e.insert(rows...)

	got := e.tick(1)
	check(t, got[0], alerts.KindVendorErrorRate, "openai", alerts.SeverityCritical, 0.1, 0.05, at(11, 55, 0), at(12, 0, 0))

	// The same episode on the next ticks (the window slides, the failures
	// are still in it).
	e.setNow(at(12, 0, 30))
	e.tick(0)
	e.setNow(at(12, 1, 10)) // truncated to 12:01:00
	e.tick(0)

	// The window passes without failures: cleared; then a new episode.
	e.setNow(at(12, 10, 0))
	e.tick(0)
	rows = nil
	add("openai", 20, 4, at(12, 11, 0))
	e.insert(rows...)
	e.setNow(at(12, 15, 0))
	got = e.tick(1)
	check(t, got[0], alerts.KindVendorErrorRate, "openai", alerts.SeverityCritical, 0.2, 0.05, at(12, 10, 0), at(12, 15, 0))
}

func TestLatencyRegression(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
alerts:
  vendor_error_rate: {disabled: true}
  unknown_model: {disabled: true}
  latency_regression: {window: 5m, baseline: 1h, factor: 2, min_samples: 10}
`)
	var rows []row
	add := func(vendor, model string, n int, from time.Time, step time.Duration, latency uint32, errc string) {
		for i := range n {
			rows = append(rows, row{vendor: vendor, model: model, ts: from.Add(time.Duration(i) * step), latency: latency, errc: errc})
		}
	}
	// Baselines: 100 ms every 5 s from 11:00 to 11:55.
	add("openai", "gpt-4o-mini", 660, at(11, 0, 0), 5*time.Second, 100, "")
	add("anthropic", "claude-haiku-4-5", 660, at(11, 0, 0), 5*time.Second, 100, "")
	add("openai", "gpt-4o-mini", 20, at(9, 0, 0), time.Second, 5000, "") // before the baseline
	// Recent window [11:55, 12:00).
	add("openai", "gpt-4o-mini", 10, at(11, 56, 0), 10*time.Second, 300, "")         // 3× → alert
	add("anthropic", "claude-haiku-4-5", 10, at(11, 56, 0), 10*time.Second, 200, "") // exactly 2×: not above
	add("anthropic", "claude-haiku-4-5", 5, at(11, 56, 0), 10*time.Second, 9000, "timeout")
	e.insert(rows...)

	got := e.tick(1)
	check(t, got[0], alerts.KindLatencyRegression, "openai/gpt-4o-mini", alerts.SeverityWarning, 300, 200, at(11, 55, 0), at(12, 0, 0))
	e.setNow(at(12, 0, 45))
	e.tick(0)

	// No recent samples: cleared. Then a new regression re-alerts.
	e.setNow(at(12, 10, 0))
	e.tick(0)
	rows = nil
	add("openai", "gpt-4o-mini", 10, at(12, 11, 0), 10*time.Second, 250, "")
	e.insert(rows...)
	e.setNow(at(12, 15, 0))
	got = e.tick(1)
	check(t, got[0], alerts.KindLatencyRegression, "openai/gpt-4o-mini", alerts.SeverityWarning, 250, 200, at(12, 10, 0), at(12, 15, 0))
}

func TestBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, allOff+`
  budget_usd_per_day: {acme: 10}
  budget_usd_per_month: {acme: 100}
`)
	d1, d2 := day, day.AddDate(0, 0, 1)
	m1, m2 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	e.insert(
		row{ts: at(9, 0, 0), cost: 7.5},
		row{ts: time.Date(2025, 3, 2, 8, 0, 0, 0, time.UTC), cost: 70},
		row{ts: time.Date(2025, 2, 27, 8, 0, 0, 0, time.UTC), cost: 500}, // last month
		row{ts: at(9, 0, 0), tenant: "other", cost: 500},                 // no budget
	)
	e.tick(0) // day 75 %, month 77.5 %

	e.insert(row{ts: at(10, 0, 0), cost: 0.5})
	got := e.tick(1) // day 80 % reached
	check(t, got[0], alerts.KindBudget, "acme/day/80", alerts.SeverityWarning, 8, 8, d1, d2)
	e.tick(0)

	e.insert(row{ts: at(11, 0, 0), cost: 2.5})
	got = e.tick(2) // day 105 %, month 80.5 %
	check(t, find(t, got, "acme/day/100"), alerts.KindBudget, "acme/day/100", alerts.SeverityCritical, 10.5, 10, d1, d2)
	check(t, find(t, got, "acme/month/80"), alerts.KindBudget, "acme/month/80", alerts.SeverityWarning, 80.5, 80, m1, m2)
	e.setNow(at(12, 5, 0))
	e.tick(0)

	// Next day: the daily ones re-arm, the monthly one stays.
	e.setNow(at(36, 0, 0))
	e.tick(0)
	e.insert(row{ts: at(30, 0, 0), cost: 9})
	got = e.tick(1)
	check(t, got[0], alerts.KindBudget, "acme/day/80", alerts.SeverityWarning, 9, 8, d2, d2.AddDate(0, 0, 1))
}

func TestUnknownModel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
alerts:
  vendor_error_rate: {disabled: true}
  latency_regression: {disabled: true}
  unknown_model: {window: 1h}
`)
	e.insert(
		row{ts: at(11, 30, 0), model: "gpt-9", unknown: true},
		row{ts: at(11, 31, 0), model: "gpt-9", unknown: true},
		row{ts: at(11, 32, 0), model: "gpt-4o-mini"},
		row{ts: at(10, 0, 0), vendor: "anthropic", model: "old", unknown: true}, // before the window
	)
	got := e.tick(1)
	check(t, got[0], alerts.KindUnknownModel, "openai/gpt-9", alerts.SeverityWarning, 2, 0, at(11, 0, 0), at(12, 0, 0))
	e.insert(row{ts: at(11, 50, 0), model: "gpt-9", unknown: true})
	e.setNow(at(12, 0, 30))
	e.tick(0)

	// An hour without unpriced attempts clears it; the next one alerts.
	e.setNow(at(13, 0, 0))
	e.tick(0)
	e.insert(row{ts: at(13, 10, 0), model: "gpt-9", unknown: true})
	e.setNow(at(13, 30, 0))
	got = e.tick(1)
	check(t, got[0], alerts.KindUnknownModel, "openai/gpt-9", alerts.SeverityWarning, 1, 0, at(12, 30, 0), at(13, 30, 0))
}

// TestRunAlertsOncePerEpisode runs the loop itself: many ticks over a
// condition that stays true publish one alert.
func TestRunAlertsOncePerEpisode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
alerts:
  vendor_error_rate: {disabled: true}
  latency_regression: {disabled: true}
`)
	e.insert(row{ts: at(11, 59, 0), model: "gpt-9", unknown: true})
	var clockReads atomic.Int64 // every evaluation reads the clock
	a, err := alerts.New(alerts.Config{Interval: 20 * time.Millisecond}, alerts.Deps{
		Log: zerolog.Nop(), JS: e.js, CH: e.conn, Database: e.db, Policy: e.src,
		Now: func() time.Time { clockReads.Add(1); return at(12, 0, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Wait for the alert, then let the loop evaluate the same condition
	// again and again before stopping it (polling, so a slow machine only
	// makes the test slower).
	until := func(cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal("condition not met within 30s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	until(func() bool { e.mu.Lock(); defer e.mu.Unlock(); return len(e.got) > e.seen })
	after := clockReads.Load()
	until(func() bool { return clockReads.Load() >= after+10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := e.collect(1)
	if got[0].Kind != alerts.KindUnknownModel || got[0].Key != "openai/gpt-9" {
		t.Errorf("alert = %+v", got[0])
	}
}

func TestNewRefusesBadDeps(t *testing.T) {
	if _, err := alerts.New(alerts.Config{}, alerts.Deps{Database: "x;drop"}); err == nil {
		t.Fatal("New accepted missing dependencies and a bad database name")
	}
}

func TestPolicyAlertDefaultsAndErrors(t *testing.T) {
	p, err := policy.Parse([]byte(basePolicy))
	if err != nil {
		t.Fatal(err)
	}
	a := p.Alerts
	if a.VendorErrorRate.Threshold != 0.05 || a.VendorErrorRate.Window.Duration != 5*time.Minute ||
		a.VendorErrorRate.MinAttempts != 20 || a.LatencyRegression.Factor != 2 ||
		a.LatencyRegression.Baseline.Duration != 24*time.Hour || a.UnknownModel.Window.Duration != time.Hour ||
		len(a.BudgetLevels) != 2 || a.BudgetLevels[0] != 0.8 || a.BudgetLevels[1] != 1 {
		t.Errorf("defaults not applied: %+v", a)
	}
	_, err = policy.Parse([]byte(basePolicy + `
alerts:
  daily_spend: {total_usd: -1}
  vendor_error_rate: {threshold: 1.5}
  latency_regression: {factor: 0.5, window: 2h, baseline: 1h}
  budget_usd_per_day: {acme: 0, "bad.name": 3}
  budget_levels: [1, 0.8]
`))
	if err == nil {
		t.Fatal("invalid alerts accepted")
	}
	for _, want := range []string{"daily_spend", "vendor_error_rate.threshold", "latency_regression.factor",
		"latency_regression.baseline", "budget_usd_per_day.acme", `"bad.name"`, "budget_levels"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// TestVendorErrorRateCountsOnlyVendorFailures: targets that were skipped
// (saturated, circuit_open), hedge losers cut short (cancelled), calls
// whose outcome is not known yet (started) and requests the vendor
// refused (4xx such as invalid_request) are not the vendor failing. A
// limiter spill once raised "openai failed 9014 of 19120 (47%)" while
// OpenAI never failed.
func TestVendorErrorRateCountsOnlyVendorFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `
alerts:
  latency_regression: {disabled: true}
  unknown_model: {disabled: true}
  vendor_error_rate: {min_attempts: 10}
`)
	var rows []row
	add := func(vendor string, n int, errc, outcome string) {
		for i := range n {
			rows = append(rows, row{vendor: vendor, ts: at(11, 57, i), latency: 100, errc: errc, outcome: outcome})
		}
	}
	// openai: 1 vendor failure in 25 calls with a known outcome (4 %).
	add("openai", 19, "", "")
	add("openai", 1, "server_error", "")
	add("openai", 5, "invalid_request", "")
	add("openai", 20, "saturated", "")
	add("openai", 10, "circuit_open", "")
	add("openai", 5, "cancelled", "")
	add("openai", 10, "", "started")
	// anthropic: 2 overloaded in 20 calls (10 %), plus a spill.
	add("anthropic", 18, "", "")
	add("anthropic", 2, "overloaded", "")
	add("anthropic", 30, "saturated", "")
	e.insert(rows...)

	got := e.tick(1)
	check(t, got[0], alerts.KindVendorErrorRate, "anthropic", alerts.SeverityCritical, 0.1, 0.05, at(11, 55, 0), at(12, 0, 0))
	if !strings.Contains(got[0].Message, "failed 2 of 20") {
		t.Errorf("message %q, want the vendor's failures of its calls", got[0].Message)
	}
}

// TestAlertLogKeepsLogLevel: an alert's log line has one "level" key, the
// log level; the budget level is logged as budget_level.
func TestAlertLogKeepsLogLevel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, allOff+`
  budget_usd_per_day: {acme: 10}
`)
	var buf syncBuffer
	a := e.alerterWithLog(zerolog.New(&buf))
	e.insert(row{ts: at(9, 0, 0), cost: 8.5})
	e.tickWith(a, 1)
	var lines int
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.Contains(line, `"message":"alert"`) {
			continue
		}
		lines++
		if n := strings.Count(line, `"level":`); n != 1 {
			t.Errorf("alert log line has %d level keys: %s", n, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["level"] != "warn" || m["budget_level"] != 0.8 || m["severity"] != "warning" {
			t.Errorf("alert log line %s: want level warn, budget_level 0.8, severity warning", line)
		}
	}
	if lines != 1 {
		t.Fatalf("%d alert log lines, want 1: %s", lines, buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
