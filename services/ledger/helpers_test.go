package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/faultnet"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/ledger"
)

// catalog is a fixed pricing catalog.
type catalog map[policy.Key]*policy.Model

func (c catalog) Model(vendor, model string) (*policy.Model, bool) {
	m, ok := c[policy.Key{Vendor: vendor, Model: model}]
	return m, ok
}

var testCatalog = catalog{
	{Vendor: "openai", Model: "gpt-4o-mini"}: {Vendor: "openai", Model: "gpt-4o-mini",
		Price: policy.Price{InputPerMTok: 0.15, OutputPerMTok: 0.60, CachedPerMTok: 0.075}},
	{Vendor: "anthropic", Model: "claude-haiku-4-5"}: {Vendor: "anthropic", Model: "claude-haiku-4-5",
		Price: policy.Price{InputPerMTok: 1, OutputPerMTok: 5}},
}

// startJetStream runs an embedded NATS with the Switchyard topology.
func startJetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	return nc, js
}

// running is a ledger started in the background.
type running struct {
	L      *ledger.Ledger
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func startLedger(t testing.TB, cfg ledger.Config, d ledger.Deps) *running {
	t.Helper()
	if d.Catalog == nil {
		d.Catalog = testCatalog
	}
	if testing.Verbose() {
		d.Log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	}
	l, err := ledger.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{L: l, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = l.Run(ctx)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the ledger and waits for Run to return; it may be called
// more than once.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("ledger did not stop within 60s")
	}
}

func (r *running) stopped() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func publish(t testing.TB, js jetstream.JetStream, subject, msgID string, v any) {
	t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, msgID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

var baseTS = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func attemptEvent(req string, n int, vendor, model string) envelope.AttemptEvent {
	return envelope.AttemptEvent{
		RequestID: req, AttemptID: envelope.AttemptID(req, n), Attempt: n,
		TS: baseTS.Add(time.Duration(n) * time.Second), Tenant: "acme", UserHash: "u1",
		EndpointTag: "checkout.ai_summary", PromptVersion: "summary_v3", Environment: "prod",
		Route: "summarize", Strategy: "fallback", Vendor: vendor, Model: model, Outcome: envelope.OutcomeOK,
		InputTokens: 1000, OutputTokens: 200, CachedTokens: 400, LatencyMS: 850,
		CostUSD: 999, // the executor's figure; the ledger re-prices
	}
}

func requestEvent(req string) envelope.RequestEvent {
	return envelope.RequestEvent{
		RequestID: req, TS: baseTS, FinishedAt: baseTS.Add(2 * time.Second), Tenant: "acme",
		Route: "summarize", Strategy: "fallback", Status: envelope.StatusOK, Vendor: "openai",
		Model: "gpt-4o-mini", Attempts: 1, QualityPassed: true, CostUSD: 0.0002, LatencyMS: 900,
		InputTokens: 1000, OutputTokens: 200,
	}
}

// startProxy puts a fault-injecting proxy in front of ClickHouse.
func startProxy(t testing.TB, target string) *faultnet.Proxy {
	t.Helper()
	p, err := faultnet.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Down)
	return p
}

func countQ(db, table string, final bool) string {
	f := ""
	if final {
		f = " FINAL"
	}
	return fmt.Sprintf("SELECT count() FROM `%s`.%s%s", db, table, f)
}
