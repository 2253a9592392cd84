package ledger

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// recordingConn is a driver.Conn whose batches record the rows sent and
// whose first sends fail (the answer of a replica that died after storing
// the block). Only PrepareBatch is used by Ledger.store.
type recordingConn struct {
	driver.Conn
	failures int       // sends that fail before one succeeds
	sent     [][][]any // rows of every Send, successful or not
}

func (c *recordingConn) PrepareBatch(context.Context, string, ...driver.PrepareBatchOption) (driver.Batch, error) {
	return &recordingBatch{conn: c}, nil
}

type recordingBatch struct {
	driver.Batch
	conn *recordingConn
	rows [][]any
}

func (b *recordingBatch) Append(v ...any) error { b.rows = append(b.rows, v); return nil }
func (b *recordingBatch) Abort() error          { return nil }
func (b *recordingBatch) Send() error {
	b.conn.sent = append(b.conn.sent, b.rows)
	if b.conn.failures > 0 {
		b.conn.failures--
		return errors.New("read: EOF")
	}
	return nil
}

// A retried insert sends exactly the rows of the try that failed, even
// when the retry comes in a later second: a Replicated table that stored the
// first block drops the second by its checksum (insert_deduplicate) instead
// of keeping a duplicate row. Before, every try stamped ingested_at anew.
func TestRetrySendsTheSameBlock(t *testing.T) {
	conn := &recordingConn{failures: 1}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	// Past a second boundary whatever the first try's time.
	cfg.RetryMin, cfg.RetryMax = 1100*time.Millisecond, 1100*time.Millisecond
	l := &Ledger{cfg: cfg, log: zerolog.Nop(), ch: conn, db: "`db`", m: m}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := &batch{}
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		b.requests = append(b.requests, &envelope.RequestEvent{RequestID: id, Tenant: "t", TS: ts, Status: "ok"})
	}
	if !l.store(context.Background(), b) {
		t.Fatal("store gave up")
	}
	if len(conn.sent) != 2 {
		t.Fatalf("%d sends, want 2 (one failed, one retried)", len(conn.sent))
	}
	if !reflect.DeepEqual(conn.sent[0], conn.sent[1]) {
		t.Errorf("the retry sent other rows than the failed try:\nfirst: %v\nretry: %v", conn.sent[0], conn.sent[1])
	}
}
