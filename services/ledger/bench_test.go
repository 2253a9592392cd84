package ledger_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chtest"
)

// BenchmarkIngest measures end-to-end ingestion: b.N attempt events already
// in JetStream, stored in ClickHouse and acked. It reports rows/s.
func BenchmarkIngest(b *testing.B) {
	conn, cfg := chtest.Migrated(b)
	cfg.BatchSize = 1000
	_, js := startJetStream(b)

	futures := make([]jetstream.PubAckFuture, 0, b.N)
	for i := range b.N {
		a := attemptEvent(fmt.Sprintf("bench_%d", i), 1, "openai", "gpt-4o-mini")
		data, err := json.Marshal(a)
		if err != nil {
			b.Fatal(err)
		}
		m := &nats.Msg{Subject: natsx.SubjectAttempt, Data: data, Header: nats.Header{}}
		m.Header.Set(natsx.HeaderMsgID, a.AttemptID)
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing did not complete")
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			b.Fatal(err)
		default:
		}
	}

	b.ResetTimer()
	start := time.Now()
	r := startLedger(b, cfg, ledger.Deps{JS: js, CH: conn})
	testkit.Eventually(b, 5*time.Minute, "all rows acked", func() bool { return r.L.Stats().Acked == uint64(b.N) })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
}
