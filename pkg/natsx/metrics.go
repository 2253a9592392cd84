package natsx

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// ScrapeTimeout bounds the JetStream requests of one scrape of the
// collector NewCollector returns.
const ScrapeTimeout = 5 * time.Second

var (
	descConsumerPending = prometheus.NewDesc("switchyard_jetstream_consumer_pending",
		"Messages of the stream not yet delivered to the durable consumer (consumer lag).",
		[]string{"stream", "consumer"}, nil)
	descConsumerAckPending = prometheus.NewDesc("switchyard_jetstream_consumer_ack_pending",
		"Messages delivered to the durable consumer and not yet acknowledged.",
		[]string{"stream", "consumer"}, nil)
	descConsumerRedelivered = prometheus.NewDesc("switchyard_jetstream_consumer_redelivered",
		"Messages the durable consumer has redelivered and that are not yet acknowledged.",
		[]string{"stream", "consumer"}, nil)
	descDeadLetters = prometheus.NewDesc("switchyard_dlq_dead_letters",
		"Dead letters stored in LLM_DLQ, per stage (subject llm.dlq.<stage>).",
		[]string{"stage"}, nil)
	descScrapeSuccess = prometheus.NewDesc("switchyard_jetstream_scrape_success",
		"1 when the last scrape of JetStream consumer and dead-letter state succeeded, else 0.",
		nil, nil)
)

// dlqStages are the stages reported even when they have no dead letter.
var dlqStages = []string{StageIntake, StageRouter, StageExecutor, StageGate, StageLedger}

type collector struct {
	js      jetstream.JetStream
	log     zerolog.Logger
	timeout time.Duration
	streams []string
}

// NewCollector returns a Prometheus collector that reads, on every scrape
// (bounded by ScrapeTimeout), the durable consumers of the Switchyard
// streams — pending (lag), ack pending and redelivered — and the number of
// dead letters per stage in LLM_DLQ. A stream that does not exist is
// skipped; any other failure is logged, and
// switchyard_jetstream_scrape_success is 0 for that scrape.
func NewCollector(js jetstream.JetStream, log zerolog.Logger) prometheus.Collector {
	var streams []string
	for _, sc := range DefaultTopology().Streams() {
		streams = append(streams, sc.Name)
	}
	return &collector{js: js, log: log, timeout: ScrapeTimeout, streams: streams}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConsumerPending, descConsumerAckPending, descConsumerRedelivered, descDeadLetters, descScrapeSuccess} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var errs []error
	for _, name := range c.streams {
		if err := c.collectConsumers(ctx, ch, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.collectDLQ(ctx, ch); err != nil {
		errs = append(errs, err)
	}
	ok := 1.0
	if err := errors.Join(errs...); err != nil {
		ok = 0
		c.log.Warn().Err(err).Dur("timeout", c.timeout).Msg("jetstream metrics scrape failed")
	}
	ch <- prometheus.MustNewConstMetric(descScrapeSuccess, prometheus.GaugeValue, ok)
}

func (c *collector) collectConsumers(ctx context.Context, ch chan<- prometheus.Metric, name string) error {
	s, err := c.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return errors.Join(errors.New("stream "+name), err)
	}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci == nil || ci.Config.Durable == "" {
			continue
		}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name, ci.Name)
		}
		g(descConsumerPending, float64(ci.NumPending))
		g(descConsumerAckPending, float64(ci.NumAckPending))
		g(descConsumerRedelivered, float64(ci.NumRedelivered))
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return errors.Join(errors.New("consumers of "+name), err)
	}
	return nil
}

func (c *collector) collectDLQ(ctx context.Context, ch chan<- prometheus.Metric) error {
	s, err := c.js.Stream(ctx, StreamDLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return errors.Join(errors.New("stream "+StreamDLQ), err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(SubjectDLQPrefix+">"))
	if err != nil {
		return errors.Join(errors.New("stream info "+StreamDLQ), err)
	}
	counts := map[string]uint64{}
	for _, st := range dlqStages {
		counts[st] = 0
	}
	for subj, n := range info.State.Subjects {
		counts[strings.TrimPrefix(subj, SubjectDLQPrefix)] += n
	}
	for stage, n := range counts {
		ch <- prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(n), stage)
	}
	return nil
}
