package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger/alerts"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

// day is the test's reference day; every test starts at noon of it.
var day = time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)

func at(h, m, s int) time.Time {
	return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
}

// basePolicy is a minimal valid policy; the test appends its alerts section.
const basePolicy = `
version: test
default_route: chat
vendors:
  openai: {kind: openai, base_url: "http://127.0.0.1:1"}
models:
  - {vendor: openai, model: gpt-4o-mini, price: {input_per_mtok: 0.15, output_per_mtok: 0.6}}
routes:
  - name: chat
    chain: [{vendor: openai, model: gpt-4o-mini}]
`

// allOff disables every alert that is on by default; tests re-enable one.
const allOff = `
alerts:
  vendor_error_rate: {disabled: true}
  latency_regression: {disabled: true}
  unknown_model: {disabled: true}
`

type source struct{ p atomic.Pointer[policy.Policy] }

func (s *source) Current() *policy.Policy { return s.p.Load() }

// row is one attempt to insert.
type row struct {
	req     string
	ts      time.Time
	tenant  string
	vendor  string
	model   string
	errc    string
	cost    float64
	unknown bool // price_known = 0
	latency uint32
	outcome string // default "ok", or "error" when errc is set
}

type received struct {
	alerts.Alert
	msgID   string
	subject string
}

type env struct {
	t      *testing.T
	conn   driver.Conn
	db     string
	js     jetstream.JetStream
	src    *source
	now    atomic.Int64 // unix nanoseconds
	a      *alerts.Alerter
	mu     sync.Mutex
	got    []received
	seen   int
	nextID int
}

func newEnv(t *testing.T, alertsYAML string) *env {
	t.Helper()
	conn, cfg := chtest.Migrated(t)
	e := &env{t: t, conn: conn, db: cfg.ClickHouseDatabase, src: &source{}}
	e.setPolicy(alertsYAML)
	e.setNow(at(12, 0, 0))

	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureTopology(ctx, e.js, natsx.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	// Read what LLM_ALERTS stored: a duplicate Nats-Msg-Id is dropped there.
	cons, err := e.js.OrderedConsumer(ctx, natsx.StreamAlerts, jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsx.SubjectAlerts}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var al alerts.Alert
		if err := json.Unmarshal(m.Data(), &al); err != nil {
			t.Errorf("alert %s: %v", m.Data(), err)
			return
		}
		e.mu.Lock()
		e.got = append(e.got, received{Alert: al, msgID: m.Headers().Get(natsx.HeaderMsgID), subject: m.Subject()})
		e.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	e.a = e.alerter()
	return e
}

func (e *env) alerter() *alerts.Alerter {
	e.t.Helper()
	log := zerolog.Nop()
	if testing.Verbose() {
		log = zerolog.New(zerolog.NewTestWriter(e.t))
	}
	return e.alerterWithLog(log)
}

func (e *env) alerterWithLog(log zerolog.Logger) *alerts.Alerter {
	e.t.Helper()
	a, err := alerts.New(alerts.Config{}, alerts.Deps{
		Log: log, JS: e.js, CH: e.conn, Database: e.db, Policy: e.src,
		Now: func() time.Time { return time.Unix(0, e.now.Load()).UTC() },
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) setNow(t time.Time) { e.now.Store(t.UnixNano()) }

func (e *env) setPolicy(alertsYAML string) {
	e.t.Helper()
	p, err := policy.Parse([]byte(basePolicy + alertsYAML))
	if err != nil {
		e.t.Fatalf("policy: %v", err)
	}
	e.src.p.Store(p)
}

// insert stores attempts with PrepareBatch (an INSERT with arguments hangs
// on ClickHouse 18.16).
func (e *env) insert(rows ...row) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := e.conn.PrepareBatch(ctx, "INSERT INTO `"+e.db+"`.attempts "+
		"(request_id, attempt_id, attempt, ts, tenant, vendor, model, outcome, error_class, cost_usd, price_known, latency_ms)")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rows {
		if r.req == "" {
			e.nextID++
			r.req = fmt.Sprintf("r%d", e.nextID)
		}
		if r.tenant == "" {
			r.tenant = "acme"
		}
		if r.vendor == "" {
			r.vendor = "openai"
		}
		if r.model == "" {
			r.model = "gpt-4o-mini"
		}
		known := uint8(1)
		if r.unknown {
			known = 0
		}
		if r.outcome == "" {
			r.outcome = "ok"
			if r.errc != "" {
				r.outcome = "error"
			}
		}
		if err := b.Append(r.req, r.req+"#1", uint16(1), r.ts.UTC(), r.tenant, r.vendor, r.model, r.outcome, r.errc, r.cost, known, r.latency); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		e.t.Fatal(err)
	}
}

// tick evaluates once at the current time and returns the alerts LLM_ALERTS
// received since the last tick (waiting for want of them, then a little
// longer to catch any extra).
func (e *env) tick(want int) []received {
	e.t.Helper()
	return e.tickWith(e.a, want)
}

func (e *env) tickWith(a *alerts.Alerter, want int) []received {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Evaluate(ctx); err != nil {
		e.t.Fatalf("Evaluate: %v", err)
	}
	return e.collect(want)
}

func (e *env) collect(want int) []received {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		n := len(e.got) - e.seen
		e.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]received(nil), e.got[e.seen:]...)
	e.seen = len(e.got)
	if len(out) != want {
		e.t.Fatalf("got %d alert(s), want %d: %+v", len(out), want, out)
	}
	return out
}

// find returns the alert with key, failing when there is none.
func find(t *testing.T, got []received, key string) received {
	t.Helper()
	for _, r := range got {
		if r.Key == key {
			return r
		}
	}
	t.Fatalf("no alert with key %q in %+v", key, got)
	return received{}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// check verifies an alert's fields, subject and message id.
func check(t *testing.T, r received, kind, key, severity string, value, threshold float64, from, to time.Time) {
	t.Helper()
	if r.Kind != kind || r.Key != key || r.Severity != severity {
		t.Errorf("alert = %s/%s/%s, want %s/%s/%s", r.Kind, r.Key, r.Severity, kind, key, severity)
	}
	if !near(r.Value, value) || !near(r.Threshold, threshold) {
		t.Errorf("%s %s: value/threshold = %v/%v, want %v/%v", kind, key, r.Value, r.Threshold, value, threshold)
	}
	if !r.WindowStart.Equal(from) || !r.WindowEnd.Equal(to) {
		t.Errorf("%s %s: window = [%s, %s), want [%s, %s)", kind, key, r.WindowStart, r.WindowEnd, from, to)
	}
	if r.subject != "llm.alerts."+kind {
		t.Errorf("%s %s: subject %s", kind, key, r.subject)
	}
	if want := kind + ":" + key + ":" + from.UTC().Format(time.RFC3339); r.msgID != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", r.msgID, want)
	}
	if r.Message == "" || r.At.IsZero() {
		t.Errorf("%s %s: empty message or at: %+v", kind, key, r.Alert)
	}
	if !strings.Contains(r.Message, strings.Split(key, "/")[0]) && key != "total" {
		t.Errorf("%s %s: message %q does not name it", kind, key, r.Message)
	}
}
