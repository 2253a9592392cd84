package ledger_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

// storedAttempt is what the accounting columns of one attempts row hold.
type storedAttempt struct {
	Outcome    string
	Cost       float64
	Source     string
	Known      uint8
	CacheHit   uint8
	Reasoning  uint32
	OutputToks uint32
}

// TestLedgerAccounting checks what the attempts and requests rows say
// about spend: a started attempt is replaced by its finished event in
// either arrival order (also within one batch) and stays visible when it
// is never finished; cache_hit follows the cached tokens whatever the
// publisher set; reasoning tokens are stored; a vendor-reported cost is
// the stored cost and says so.
func TestLedgerAccounting(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	db := cfg.ClickHouseDatabase

	started := func(req string, n int) envelope.AttemptEvent {
		e := attemptEvent(req, n, "openai", "gpt-4o-mini")
		e.Outcome = envelope.OutcomeStarted
		e.SetUsage(envelope.Usage{})
		e.LatencyMS, e.CostUSD = 0, 0
		return e
	}
	pub := func(e envelope.AttemptEvent, tag string) {
		publish(t, js, natsx.SubjectAttempt, e.AttemptID+"-"+tag, e)
	}

	// a: started, then finished. b: finished, then a redelivered started,
	// both before the ledger runs, so they share a batch. c: started only
	// (the executor died). d: a vendor prompt-cache hit the publisher did
	// not flag, with reasoning tokens. e: no cache, flagged anyway. f: a
	// vendor-reported cost (OpenRouter) for a model the catalog lacks.
	pub(started("a", 1), "s")
	pub(attemptEvent("a", 1, "openai", "gpt-4o-mini"), "f")
	pub(attemptEvent("b", 1, "openai", "gpt-4o-mini"), "f")
	pub(started("b", 1), "s")
	pub(started("c", 1), "s")
	d := attemptEvent("d", 1, "openai", "gpt-4o-mini")
	d.SetUsage(envelope.Usage{InputTokens: 1000, OutputTokens: 500, CachedTokens: 400, ReasoningTokens: 300})
	d.CacheHit = false
	d.TTFTMS = 137 // a streamed attempt
	pub(d, "f")
	e := attemptEvent("e", 1, "openai", "gpt-4o-mini")
	e.SetUsage(envelope.Usage{InputTokens: 1000, OutputTokens: 200})
	e.CacheHit = true
	pub(e, "f")
	f := attemptEvent("f", 1, "openrouter", "meta-llama/llama-3.3-70b-instruct")
	f.SetUsage(envelope.Usage{InputTokens: 1000, OutputTokens: 200, VendorCostUSD: 0.0042, VendorCostReported: true})
	pub(f, "f")
	rq := requestEvent("d")
	rq.ReasoningTokens = 300
	publish(t, js, natsx.SubjectRequest, "d-req", rq)

	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	testkit.Eventually(t, 30*time.Second, "first round stored", func() bool { return r.L.Stats().Acked == 9 })
	// A started event of a finished attempt arriving late, in a batch of
	// its own: the finished row must still win.
	pub(started("a", 1), "s2")
	testkit.Eventually(t, 30*time.Second, "late started stored", func() bool { return r.L.Stats().Acked == 10 })

	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT request_id, outcome, cost_usd, cost_source, price_known, cache_hit, reasoning_tokens, output_tokens "+
		"FROM `"+db+"`.attempts FINAL ORDER BY request_id")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]storedAttempt{}
	for rows.Next() {
		var id string
		var s storedAttempt
		if err := rows.Scan(&id, &s.Outcome, &s.Cost, &s.Source, &s.Known, &s.CacheHit, &s.Reasoning, &s.OutputToks); err != nil {
			t.Fatal(err)
		}
		got[id] = s
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	plain, _ := pricing.Cost(testCatalog, "openai", "gpt-4o-mini", envelope.Usage{InputTokens: 1000, OutputTokens: 200, CachedTokens: 400})
	dCost, _ := pricing.Cost(testCatalog, "openai", "gpt-4o-mini", d.Usage())
	eCost, _ := pricing.Cost(testCatalog, "openai", "gpt-4o-mini", e.Usage())
	want := map[string]storedAttempt{
		"a": {"ok", plain, "catalog", 1, 1, 0, 200},
		"b": {"ok", plain, "catalog", 1, 1, 0, 200},
		"c": {"started", 0, "none", 1, 0, 0, 0},
		"d": {"ok", dCost, "catalog", 1, 1, 300, 500},
		"e": {"ok", eCost, "catalog", 1, 0, 0, 200},
		"f": {"ok", 0.0042, "vendor", 1, 0, 0, 200},
	}
	if len(got) != len(want) {
		t.Errorf("attempts FINAL has %d rows %v, want %d", len(got), got, len(want))
	}
	for id, w := range want {
		g := got[id]
		if g.Outcome != w.Outcome || math.Abs(g.Cost-w.Cost) > 1e-12 || g.Source != w.Source || g.Known != w.Known ||
			g.CacheHit != w.CacheHit || g.Reasoning != w.Reasoning || g.OutputToks != w.OutputToks {
			t.Errorf("attempt %s: got %+v, want %+v", id, g, w)
		}
	}
	var reasoning uint32
	if err := conn.QueryRow(ctx, "SELECT reasoning_tokens FROM `"+db+"`.requests FINAL WHERE request_id = 'd'").Scan(&reasoning); err != nil {
		t.Fatal(err)
	}
	if reasoning != 300 {
		t.Errorf("requests.reasoning_tokens = %d, want 300", reasoning)
	}
	var ttft uint32
	if err := conn.QueryRow(ctx, "SELECT ttft_ms FROM `"+db+"`.attempts FINAL WHERE request_id = 'd'").Scan(&ttft); err != nil {
		t.Fatal(err)
	}
	if ttft != 137 {
		t.Errorf("attempts.ttft_ms = %d, want 137", ttft)
	}
}
