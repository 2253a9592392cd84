package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

func testConfig(cfg ledger.Config) ledger.Config {
	cfg.BatchSize = 50
	cfg.FlushInterval = 50 * time.Millisecond
	cfg.RetryMin = 20 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	cfg.InsertTimeout = 5 * time.Second
	cfg.ClickHouseDialTimeout = time.Second
	return cfg
}

func TestNewValidates(t *testing.T) {
	if _, err := ledger.New(ledger.Config{}, ledger.Deps{}); err == nil {
		t.Fatal("New with an empty config and no deps: want an error")
	}
}

func TestReprice(t *testing.T) {
	tests := []struct {
		name          string
		vendor, model string
		in, out, cach int
		wantUSD       float64
		wantKnown     bool
	}{
		{"known with cache", "openai", "gpt-4o-mini", 1000, 200, 400, (600*0.15 + 400*0.075 + 200*0.60) / 1e6, true},
		{"known no cache", "anthropic", "claude-haiku-4-5", 540, 180, 0, (540*1 + 180*5) / 1e6, true},
		{"unknown model", "openai", "gpt-9", 1000, 200, 0, 0, false},
		{"unknown vendor", "acme", "gpt-4o-mini", 1000, 200, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := envelope.AttemptEvent{Vendor: tt.vendor, Model: tt.model, InputTokens: tt.in,
				OutputTokens: tt.out, CachedTokens: tt.cach, CostUSD: 42, PriceKnown: true}
			known := ledger.Reprice(testCatalog, &e)
			if known != tt.wantKnown || e.PriceKnown != tt.wantKnown || math.Abs(e.CostUSD-tt.wantUSD) > 1e-12 {
				t.Fatalf("got cost %v known %v, want %v %v", e.CostUSD, known, tt.wantUSD, tt.wantKnown)
			}
		})
	}
}

// TestLedgerStoresEachEventOnce publishes every event twice under different
// message ids (what a redelivery or a re-published event looks like to the
// ledger), in separate batches, and checks each is visible exactly once.
func TestLedgerStoresEachEventOnce(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	db := cfg.ClickHouseDatabase

	const nReq = 20
	var attempts []envelope.AttemptEvent
	var requests []envelope.RequestEvent
	for i := range nReq {
		id := fmt.Sprintf("req_%03d", i)
		attempts = append(attempts, attemptEvent(id, 1, "openai", "gpt-4o-mini"))
		if i%4 == 0 { // a fallback: a second attempt on an uncatalogued model
			attempts[len(attempts)-1].Outcome, attempts[len(attempts)-1].ErrorClass = envelope.OutcomeError, "rate_limited"
			attempts = append(attempts, attemptEvent(id, 2, "mystery", "unknown-model"))
		}
		requests = append(requests, requestEvent(id))
	}
	publishAll := func(round int) {
		for _, a := range attempts {
			publish(t, js, natsx.SubjectAttempt, fmt.Sprintf("%s-r%d", a.AttemptID, round), a)
		}
		for _, q := range requests {
			publish(t, js, natsx.SubjectRequest, fmt.Sprintf("%s-r%d", q.RequestID, round), q)
		}
	}
	total := uint64(len(attempts) + len(requests))

	publishAll(1)
	testkit.Eventually(t, 30*time.Second, "first round acked", func() bool { return r.L.Stats().Acked == total })
	publishAll(2)
	testkit.Eventually(t, 30*time.Second, "second round acked", func() bool { return r.L.Stats().Acked == 2*total })

	for _, tc := range []struct {
		table string
		want  uint64
	}{{"attempts", uint64(len(attempts))}, {"requests", nReq}} {
		if got := chtest.Count(t, conn, countQ(db, tc.table, true)); got != tc.want {
			t.Errorf("%s FINAL: %d rows, want %d", tc.table, got, tc.want)
		}
		// Without FINAL the duplicates may still be there (until a merge).
		if got := chtest.Count(t, conn, countQ(db, tc.table, false)); got < tc.want || got > 2*tc.want {
			t.Errorf("%s raw: %d rows, want between %d and %d", tc.table, got, tc.want, 2*tc.want)
		}
	}
	st := r.L.Stats()
	if st.AttemptRows != 2*uint64(len(attempts)) || st.RequestRows != 2*nReq {
		t.Errorf("stats %+v: want %d attempt and %d request rows inserted", st, 2*len(attempts), 2*nReq)
	}
	if want := uint64(2 * 5); st.UnknownModelAttempts != want {
		t.Errorf("unknown-model attempts %d, want %d", st.UnknownModelAttempts, want)
	}

	// Pricing: the ledger's figure replaces the executor's; unknown models
	// are flagged, not presented as free.
	ctx := context.Background()
	wantKnown, _ := pricing.Cost(testCatalog, "openai", "gpt-4o-mini", envelope.Usage{InputTokens: 1000, OutputTokens: 200, CachedTokens: 400})
	rows, err := conn.Query(ctx, "SELECT model, price_known, cost_usd, count() FROM `"+db+"`.attempts FINAL GROUP BY model, price_known, cost_usd ORDER BY model")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type group struct {
		model string
		known uint8
		cost  float64
		n     uint64
	}
	var got []group
	for rows.Next() {
		var g group
		if err := rows.Scan(&g.model, &g.known, &g.cost, &g.n); err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	want := []group{{"gpt-4o-mini", 1, wantKnown, nReq}, {"unknown-model", 0, 0, 5}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("priced groups %v, want %v", got, want)
	}

	// Acked messages leave the work-queue stream.
	testkit.Eventually(t, 10*time.Second, "telemetry stream drained", func() bool {
		s, err := js.Stream(ctx, natsx.StreamTelemetry)
		return err == nil && s.CachedInfo().State.Msgs == 0
	})
}

func TestLedgerDeadLetters(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})

	bad := []struct {
		subject, id string
		payload     []byte
		reason      string
	}{
		{natsx.SubjectAttempt, "bad-json", []byte(`{"request_id":`), ledger.ReasonDecode},
		{natsx.SubjectRequest, "bad-type", []byte(`{"request_id": 7}`), ledger.ReasonDecode},
		{natsx.SubjectAttempt, "no-ids", []byte(`{"ts":"2025-03-14T09:00:00Z"}`), ledger.ReasonInvalidEvent},
		{natsx.SubjectRequest, "no-ts", []byte(`{"request_id":"req_x"}`), ledger.ReasonInvalidEvent},
		{"llm.telemetry.other", "other", []byte(`{}`), ledger.ReasonUnknownSubject},
	}
	for _, b := range bad {
		publish(t, js, b.subject, b.id, b.payload)
	}
	good := attemptEvent("req_good", 1, "openai", "gpt-4o-mini")
	publish(t, js, natsx.SubjectAttempt, "good", good)

	testkit.Eventually(t, 30*time.Second, "dead letters", func() bool { return r.L.Stats().DeadLetters == uint64(len(bad)) })
	testkit.Eventually(t, 30*time.Second, "good row", func() bool {
		return chtest.Count(t, conn, countQ(cfg.ClickHouseDatabase, "attempts", true)) == 1
	})

	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamDLQ, jetstream.ConsumerConfig{
		FilterSubject: natsx.DLQSubject(natsx.StageLedger), AckPolicy: jetstream.AckNonePolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(len(bad), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		b := bad[i]
		h := m.Headers()
		if string(m.Data()) != string(b.payload) {
			t.Errorf("dead letter %d payload %q, want it unchanged %q", i, m.Data(), b.payload)
		}
		for k, want := range map[string]string{
			natsx.HeaderStage: natsx.StageLedger, natsx.HeaderReason: b.reason, natsx.HeaderOrigSubject: b.subject,
		} {
			if got := h.Get(k); got != want {
				t.Errorf("dead letter %d header %s = %q, want %q", i, k, got, want)
			}
		}
		if h.Get(natsx.HeaderError) == "" {
			t.Errorf("dead letter %d has no %s header", i, natsx.HeaderError)
		}
		i++
	}
	if i != len(bad) {
		t.Fatalf("read %d dead letters, want %d", i, len(bad))
	}
}

// A router's batch of request events (llm.telemetry.requests) gives a row
// per event; an event in it that cannot be stored is dead-lettered alone,
// as a message of llm.telemetry.request that a replay sends back on its
// own, and the others are stored; a batch that is not an array is
// dead-lettered whole.
func TestLedgerRequestBatch(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})

	first, err := json.Marshal(requestEvent("req_batch1"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := json.Marshal(requestEvent("req_batch2"))
	if err != nil {
		t.Fatal(err)
	}
	invalid := []byte(`{"request_id":"req_no_ts"}`)
	publish(t, js, natsx.SubjectRequestBatch, "batch", []byte("["+string(first)+","+string(invalid)+","+string(second)+"]"))
	notArray := []byte(`{"request_id":"req_x"}`)
	publish(t, js, natsx.SubjectRequestBatch, "not-an-array", notArray)

	testkit.Eventually(t, 30*time.Second, "rows of the batch's good events", func() bool {
		return chtest.Count(t, conn, countQ(cfg.ClickHouseDatabase, "requests", true)) == 2
	})
	testkit.Eventually(t, 30*time.Second, "dead letters", func() bool { return r.L.Stats().DeadLetters == 2 })

	cons, err := js.CreateOrUpdateConsumer(context.Background(), natsx.StreamDLQ, jetstream.ConsumerConfig{
		FilterSubject: natsx.DLQSubject(natsx.StageLedger), AckPolicy: jetstream.AckNonePolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{} // payload -> original subject
	for m := range fetched.Messages() {
		got[string(m.Data())] = m.Headers().Get(natsx.HeaderOrigSubject)
	}
	want := map[string]string{string(invalid): natsx.SubjectRequest, string(notArray): natsx.SubjectRequestBatch}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dead letters (payload: subject) %v, want %v", got, want)
	}
}

// TestLedgerSurvivesClickHouseOutage points the ledger at a proxy that is
// down, stops one ledger mid-outage, starts another, brings ClickHouse back
// and checks every row arrives exactly once.
func TestLedgerSurvivesClickHouseOutage(t *testing.T) {
	direct, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	db := cfg.ClickHouseDatabase
	px := startProxy(t, cfg.ClickHouseAddr)
	pcfg := cfg
	pcfg.ClickHouseAddr = px.Addr()
	ctx := context.Background()
	conn, err := ledger.Open(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, js := startJetStream(t)

	px.Down()
	first := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	const n = 30
	for i := range n {
		id := fmt.Sprintf("req_out_%03d", i)
		publish(t, js, natsx.SubjectAttempt, id+"#1", attemptEvent(id, 1, "anthropic", "claude-haiku-4-5"))
		publish(t, js, natsx.SubjectRequest, id, requestEvent(id))
	}
	testkit.Eventually(t, 30*time.Second, "insert failures", func() bool { return first.L.Stats().InsertFailures >= 3 })
	if got := chtest.Count(t, direct, countQ(db, "attempts", false)); got != 0 {
		t.Fatalf("%d attempt rows during the outage, want 0", got)
	}
	if first.L.Stats().Acked != 0 {
		t.Fatal("messages acked while ClickHouse was down")
	}
	// Stopping mid-outage returns promptly and hands the batch back.
	stopAt := time.Now()
	first.stop(t)
	if d := time.Since(stopAt); d > 15*time.Second {
		t.Errorf("stopping took %s", d)
	}
	s, err := js.Stream(ctx, natsx.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := s.CachedInfo().State.Msgs; msgs != 2*n {
		t.Fatalf("telemetry stream holds %d messages after the stop, want %d", msgs, 2*n)
	}

	second := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	testkit.Eventually(t, 30*time.Second, "second ledger failing too", func() bool { return second.L.Stats().InsertFailures >= 2 })
	if err := px.Up(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, "all rows after recovery", func() bool { return second.L.Stats().Acked == 2*n })
	for _, table := range []string{"attempts", "requests"} {
		if got := chtest.Count(t, direct, countQ(db, table, true)); got != n {
			t.Errorf("%s FINAL: %d rows, want %d", table, got, n)
		}
		if got := chtest.Count(t, direct, "SELECT uniqExact(request_id) FROM `"+db+"`."+table+" FINAL"); got != n {
			t.Errorf("%s: %d distinct requests, want %d", table, got, n)
		}
	}
	if second.stopped() {
		t.Fatal("ledger stopped on its own")
	}
}

// TestLedgerRestart stops a ledger between two publishes: the durable
// consumer resumes where it left off and nothing is lost or doubled.
func TestLedgerRestart(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	db := cfg.ClickHouseDatabase

	first := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	for i := range 10 {
		id := fmt.Sprintf("req_a_%d", i)
		publish(t, js, natsx.SubjectRequest, id, requestEvent(id))
	}
	testkit.Eventually(t, 30*time.Second, "first batch", func() bool { return first.L.Stats().Acked == 10 })
	first.stop(t)
	for i := range 10 {
		id := fmt.Sprintf("req_b_%d", i)
		publish(t, js, natsx.SubjectRequest, id, requestEvent(id))
	}
	second := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	testkit.Eventually(t, 30*time.Second, "second batch", func() bool { return second.L.Stats().Acked == 10 })
	if got := chtest.Count(t, conn, countQ(db, "requests", true)); got != 20 {
		t.Fatalf("requests FINAL: %d, want 20", got)
	}
}

// TestRequestsKeyedByTenant: request ids are per tenant, so two tenants'
// requests with the same id are two rows (003 kept one of them).
func TestRequestsKeyedByTenant(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	// One at a time, so the rows land in separate inserts and only the
	// table's sorting key decides whether both are kept.
	for i, tenant := range []string{"acme", "globex"} {
		ev := requestEvent("r1")
		ev.Tenant = tenant
		publish(t, js, natsx.SubjectRequest, tenant+".r1:request", ev)
		testkit.Eventually(t, 30*time.Second, tenant+" acked", func() bool { return r.L.Stats().Acked == uint64(i+1) })
	}
	q := "SELECT count() FROM `" + cfg.ClickHouseDatabase + "`.requests FINAL WHERE request_id = 'r1'"
	if got := chtest.Count(t, conn, q); got != 2 {
		t.Fatalf("requests FINAL with id r1: %d rows, want 2 (one per tenant)", got)
	}
}

// A request event carries its finished attempt rows: the ledger stores the
// request row and every attempt row from that one message, replacing the
// executor's started rows and never replaced by one, and a redelivered or
// re-published event (here: twice, in separate batches, under different
// message ids) leaves one row of each.
func TestLedgerStoresAttemptRowsCarriedByTheRequestEvent(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	db := cfg.ClickHouseDatabase

	const nReq = 10
	var requests []envelope.RequestEvent
	var started []envelope.AttemptEvent
	rows := 0
	for i := range nReq {
		id := fmt.Sprintf("carried_%03d", i)
		q := requestEvent(id)
		for n := 1; n <= 1+i%2; n++ {
			a := attemptEvent(id, n, "openai", "gpt-4o-mini")
			s := a
			s.Outcome, s.InputTokens, s.OutputTokens, s.CachedTokens = envelope.OutcomeStarted, 0, 0, 0
			started = append(started, s)
			q.AttemptEvents = append(q.AttemptEvents, a)
			rows++
		}
		q.Attempts = len(q.AttemptEvents)
		requests = append(requests, q)
	}
	var msgs uint64
	for _, s := range started {
		publish(t, js, natsx.SubjectAttempt, s.AttemptID+":started", s)
		msgs++
	}
	for round := 1; round <= 2; round++ {
		for _, q := range requests {
			publish(t, js, natsx.SubjectRequest, fmt.Sprintf("%s-r%d", q.RequestID, round), q)
			msgs++
		}
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("round %d acked", round), func() bool { return r.L.Stats().Acked == msgs })
	}
	// A started row redelivered after its finished row: still finished.
	publish(t, js, natsx.SubjectAttempt, started[0].AttemptID+":started-again", started[0])
	msgs++
	testkit.Eventually(t, 30*time.Second, "late started row acked", func() bool { return r.L.Stats().Acked == msgs })

	for _, tc := range []struct {
		name, query string
		want        uint64
	}{
		{"request rows", countQ(db, "requests", true), nReq},
		{"attempt rows", countQ(db, "attempts", true), uint64(rows)},
		{"finished attempt rows", "SELECT count() FROM `" + db + "`.attempts FINAL WHERE outcome = 'ok' AND cost_usd > 0", uint64(rows)},
	} {
		if got := chtest.Count(t, conn, tc.query); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A request event carrying an attempt row that cannot be stored is
// dead-lettered whole: the request row is never stored without its
// attempts.
func TestLedgerDeadLettersRequestEventWithBadAttemptRow(t *testing.T) {
	conn, cfg := chtest.Migrated(t)
	cfg = testConfig(cfg)
	_, js := startJetStream(t)
	r := startLedger(t, cfg, ledger.Deps{JS: js, CH: conn})
	q := requestEvent("bad_carried")
	bad := attemptEvent("bad_carried", 1, "openai", "gpt-4o-mini")
	bad.AttemptID = ""
	q.AttemptEvents = []envelope.AttemptEvent{bad}
	publish(t, js, natsx.SubjectRequest, "bad_carried", q)
	testkit.Eventually(t, 30*time.Second, "dead-lettered", func() bool { return r.L.Stats().DeadLetters == 1 })
	if got := chtest.Count(t, conn, countQ(cfg.ClickHouseDatabase, "requests", true)); got != 0 {
		t.Fatalf("request rows = %d, want 0", got)
	}
}
