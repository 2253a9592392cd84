package pipeline

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-llm/switchyard/pkg/obs"
)

// stageBuckets span 100 µs to ~15 s: a stage's own work is sub-millisecond,
// a vendor call seconds.
var stageBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 14)

// StageMetrics are the per-stage figures an operator reads to see where a
// request's time goes: how long a message waited in its stream before a
// handler took it, how long the handler ran, and how it was settled.
type StageMetrics struct {
	queueWait *prometheus.HistogramVec
	handle    *prometheus.HistogramVec
	settled   *prometheus.CounterVec
}

// NewStageMetrics registers the stage metrics on reg (shared by every stage
// of a process: the stage is a label). A nil reg returns metrics that are
// recorded but exported nowhere.
func NewStageMetrics(reg prometheus.Registerer) (*StageMetrics, error) {
	m := &StageMetrics{
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_stage_queue_wait_seconds",
			Help:    "Time from a message being stored in its stream to a stage's handler starting on it (queueing, pull and delivery).",
			Buckets: stageBuckets,
		}, []string{"stage"}),
		handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_stage_handle_seconds",
			Help:    "Time a stage's handler took for one message, settling (ack, nak, term) included.",
			Buckets: stageBuckets,
		}, []string{"stage"}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_stage_messages_total",
			Help: "Messages a stage handled, by how they were settled: ack, nak (handed back for redelivery) or term (dead-lettered).",
		}, []string{"stage", "outcome"}),
	}
	var err error
	if m.queueWait, err = obs.Register(reg, m.queueWait); err != nil {
		return nil, err
	}
	if m.handle, err = obs.Register(reg, m.handle); err != nil {
		return nil, err
	}
	if m.settled, err = obs.Register(reg, m.settled); err != nil {
		return nil, err
	}
	return m, nil
}

// stageObserver is one stage's curried metrics: the label lookups happen
// once per Run, not per message.
type stageObserver struct {
	queueWait, handle prometheus.Observer
	ack, nak, term    prometheus.Counter
}

func (m *StageMetrics) forStage(stage string) *stageObserver {
	if m == nil {
		return nil
	}
	return &stageObserver{
		queueWait: m.queueWait.WithLabelValues(stage),
		handle:    m.handle.WithLabelValues(stage),
		ack:       m.settled.WithLabelValues(stage, "ack"),
		nak:       m.settled.WithLabelValues(stage, "nak"),
		term:      m.settled.WithLabelValues(stage, "term"),
	}
}

// observe records one handled message. stored is when the stream stored it
// (zero when unknown); start and end bound the handler.
func (o *stageObserver) observe(d *Delivery, stored, start, end time.Time) {
	if o == nil {
		return
	}
	if !stored.IsZero() {
		o.queueWait.Observe(max(start.Sub(stored), 0).Seconds())
	}
	o.handle.Observe(end.Sub(start).Seconds())
	switch d.outcome.Load() {
	case outcomeAck:
		o.ack.Inc()
	case outcomeNak:
		o.nak.Inc()
	case outcomeTerm:
		o.term.Inc()
	}
}
