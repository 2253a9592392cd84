package ledger

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of the ledger's counters since it was created.
type Stats struct {
	AttemptRows          uint64 // attempt rows ClickHouse accepted (duplicates included)
	RequestRows          uint64 // request rows ClickHouse accepted (duplicates included)
	InsertFailures       uint64 // failed batch inserts (each retry counts)
	UnknownModelAttempts uint64 // attempts whose model is not in the catalog
	DeadLetters          uint64 // messages sent to llm.dlq.ledger
	Acked                uint64 // messages acknowledged after their batch was stored
}

type metrics struct {
	rows         *prometheus.CounterVec
	failures     *prometheus.CounterVec
	unknownModel prometheus.Counter
	deadLetters  *prometheus.CounterVec
	batchSeconds prometheus.Histogram

	attemptRows, requestRows, insertFailures, unknown, dead, acked atomic.Uint64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchyard", Subsystem: "ledger", Name: "rows_inserted_total",
			Help: "Rows ClickHouse accepted, by table (redelivered duplicates included).",
		}, []string{"table"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchyard", Subsystem: "ledger", Name: "insert_failures_total",
			Help: "Failed batch inserts into ClickHouse, by table; every retry counts.",
		}, []string{"table"}),
		unknownModel: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchyard", Subsystem: "ledger", Name: "unknown_model_attempts_total",
			Help: "Attempts whose vendor/model is not in the pricing catalog (stored with price_known=0, cost 0).",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchyard", Subsystem: "ledger", Name: "dead_letters_total",
			Help: "Telemetry messages dead-lettered to llm.dlq.ledger, by reason.",
		}, []string{"reason"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "switchyard", Subsystem: "ledger", Name: "batch_store_seconds",
			Help:    "Time from fetching a batch to acknowledging it, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	for _, c := range []prometheus.Collector{m.rows, m.failures, m.unknownModel, m.deadLetters, m.batchSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) insertedRows(table string, n int) {
	m.rows.WithLabelValues(table).Add(float64(n))
	if table == tableAttempts {
		m.attemptRows.Add(uint64(n))
	} else {
		m.requestRows.Add(uint64(n))
	}
}

func (m *metrics) insertFailed(table string) {
	m.failures.WithLabelValues(table).Inc()
	m.insertFailures.Add(1)
}

func (m *metrics) unknownModelAttempt() {
	m.unknownModel.Inc()
	m.unknown.Add(1)
}

func (m *metrics) deadLettered(reason string) {
	m.deadLetters.WithLabelValues(reason).Inc()
	m.dead.Add(1)
}

func (m *metrics) snapshot() Stats {
	return Stats{
		AttemptRows:          m.attemptRows.Load(),
		RequestRows:          m.requestRows.Load(),
		InsertFailures:       m.insertFailures.Load(),
		UnknownModelAttempts: m.unknown.Load(),
		DeadLetters:          m.dead.Load(),
		Acked:                m.acked.Load(),
	}
}
