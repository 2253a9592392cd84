package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
)

// Table names.
const (
	tableAttempts = "attempts"
	tableRequests = "requests"
)

// Dead-letter reasons (header Switchyard-Reason on llm.dlq.ledger).
const (
	ReasonDecode         = "decode_error"
	ReasonInvalidEvent   = "invalid_event"
	ReasonUnknownSubject = "unknown_subject"
)

// Deps are the ledger's collaborators.
type Deps struct {
	Log     zerolog.Logger
	JS      jetstream.JetStream
	CH      driver.Conn
	Catalog pricing.Catalog
	// Registerer receives the ledger's Prometheus metrics. Nil gives the
	// ledger a registry of its own, returned by Ledger.Registry.
	Registerer prometheus.Registerer
}

// Ledger stores telemetry events in ClickHouse.
type Ledger struct {
	cfg     Config
	log     zerolog.Logger
	js      jetstream.JetStream
	ch      driver.Conn
	catalog pricing.Catalog
	db      string
	reg     *prometheus.Registry
	m       *metrics
}

// New checks the configuration and dependencies and registers the metrics.
func New(cfg Config, d Deps) (*Ledger, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.JS == nil {
		errs = append(errs, errors.New("ledger: Deps.JS is nil"))
	}
	if d.CH == nil {
		errs = append(errs, errors.New("ledger: Deps.CH is nil"))
	}
	if d.Catalog == nil {
		errs = append(errs, errors.New("ledger: Deps.Catalog is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:     cfg,
		log:     d.Log.With().Str("component", "ledger").Logger(),
		js:      d.JS,
		ch:      d.CH,
		catalog: d.Catalog,
		db:      quoteIdent(cfg.ClickHouseDatabase),
	}
	reg := d.Registerer
	if reg == nil {
		l.reg = prometheus.NewRegistry()
		reg = l.reg
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("ledger: metrics: %w", err)
	}
	l.m = m
	return l, nil
}

// Registry is the ledger's own metrics registry, or nil when the metrics
// went to Deps.Registerer.
func (l *Ledger) Registry() *prometheus.Registry { return l.reg }

// Stats returns the ledger's counters.
func (l *Ledger) Stats() Stats { return l.m.snapshot() }

// ConsumerConfig is the durable pull consumer the ledger reads with.
// MaxDeliver is unlimited: a ClickHouse outage must never exhaust a
// message's deliveries, and undecodable messages are terminated after being
// dead-lettered rather than redelivered.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "ledger: telemetry events into ClickHouse",
		FilterSubject: natsx.SubjectTelemetry,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		MaxAckPending: max(2*c.BatchSize, 1024),
	}
}

// Run consumes LLM_TELEMETRY until ctx is cancelled. On cancellation it
// finishes the batch in hand (stores and acks it, or naks it if ClickHouse
// still refuses) and returns nil.
func (l *Ledger) Run(ctx context.Context) error {
	cons, err := l.js.CreateOrUpdateConsumer(ctx, natsx.StreamTelemetry, l.cfg.ConsumerConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ledger: consumer %s on %s: %w", l.cfg.Consumer, natsx.StreamTelemetry, err)
	}
	l.log.Info().Str("consumer", l.cfg.Consumer).Int("batch", l.cfg.BatchSize).
		Dur("flush_interval", l.cfg.FlushInterval).Msg("ledger consuming telemetry")
	fetchBackoff := l.cfg.RetryMin
	for ctx.Err() == nil {
		batch, err := cons.Fetch(l.cfg.BatchSize, jetstream.FetchMaxWait(l.cfg.FlushInterval))
		if err != nil {
			l.log.Warn().Err(err).Dur("retry_in", fetchBackoff).Msg("fetch failed")
			if !sleep(ctx, fetchBackoff) {
				break
			}
			fetchBackoff = min(2*fetchBackoff, l.cfg.RetryMax)
			continue
		}
		fetchBackoff = l.cfg.RetryMin
		msgs := make([]jetstream.Msg, 0, l.cfg.BatchSize)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			l.log.Debug().Err(err).Int("messages", len(msgs)).Msg("fetch ended early")
		}
		if len(msgs) > 0 {
			l.handle(ctx, msgs)
		}
	}
	l.log.Info().Msg("ledger stopped")
	return nil
}

// batch is the decoded content of one fetch.
type batch struct {
	msgs     []jetstream.Msg // messages acked once the rows are stored
	attempts []*envelope.AttemptEvent
	requests []*envelope.RequestEvent
}

func (l *Ledger) handle(ctx context.Context, msgs []jetstream.Msg) {
	start := time.Now()
	b := l.decode(ctx, msgs)
	if len(b.msgs) == 0 {
		return
	}
	if !l.store(ctx, b) {
		for _, m := range b.msgs {
			if err := m.Nak(); err != nil {
				l.log.Warn().Err(err).Msg("nak failed; the message is redelivered after the ack wait")
			}
		}
		l.log.Warn().Int("messages", len(b.msgs)).Msg("stopping with an unstored batch: naked for redelivery")
		return
	}
	for _, m := range b.msgs {
		// A lost ack only means a redelivery, which the tables absorb.
		if err := m.Ack(); err != nil {
			l.log.Warn().Err(err).Msg("ack failed; the message will be redelivered and deduplicated")
			continue
		}
		l.m.acked.Add(1)
	}
	l.m.batchSeconds.Observe(time.Since(start).Seconds())
}

// decode turns messages into rows, dead-letters the ones that cannot be
// stored, re-prices attempts and drops duplicates within the batch.
func (l *Ledger) decode(ctx context.Context, msgs []jetstream.Msg) *batch {
	b := &batch{msgs: make([]jetstream.Msg, 0, len(msgs))}
	attempts := map[[2]string]int{}
	requests := map[string]int{}
	for _, m := range msgs {
		switch m.Subject() {
		case natsx.SubjectAttempt:
			var e envelope.AttemptEvent
			// go-json: the stages wrote these (see envelope.UnmarshalInternal);
			// a fraction of encoding/json's CPU (BenchmarkDecodeEvents).
			if err := envelope.UnmarshalInternal(m.Data(), &e); err != nil {
				l.deadLetter(ctx, m, ReasonDecode, "", err)
				continue
			}
			if err := validateAttempt(&e); err != nil {
				l.deadLetter(ctx, m, ReasonInvalidEvent, e.RequestID, err)
				continue
			}
			b.addAttempt(l, attempts, &e)
		case natsx.SubjectRequest:
			var e envelope.RequestEvent
			if err := envelope.UnmarshalInternal(m.Data(), &e); err != nil {
				l.deadLetter(ctx, m, ReasonDecode, "", err)
				continue
			}
			if err := validateRequest(&e); err != nil {
				l.deadLetter(ctx, m, ReasonInvalidEvent, e.RequestID, err)
				continue
			}
			b.addRequest(l, attempts, requests, &e)
		case natsx.SubjectRequestBatch:
			events, ok := l.requestBatch(ctx, m)
			if !ok {
				continue
			}
			for _, e := range events {
				b.addRequest(l, attempts, requests, e)
			}
		default:
			l.deadLetter(ctx, m, ReasonUnknownSubject, "", fmt.Errorf("no event type for subject %q", m.Subject()))
			continue
		}
		b.msgs = append(b.msgs, m)
	}
	return b
}

// addRequest adds a request row and the finished attempt rows that ride in
// its event, keeping one row per request.
func (b *batch) addRequest(l *Ledger, attempts map[[2]string]int, requests map[string]int, e *envelope.RequestEvent) {
	for i := range e.AttemptEvents {
		b.addAttempt(l, attempts, &e.AttemptEvents[i])
	}
	// Request ids are per tenant: the row's key is (tenant, request_id).
	key := e.Tenant + "\x00" + e.RequestID
	if i, dup := requests[key]; dup {
		b.requests[i] = e
	} else {
		requests[key] = len(b.requests)
		b.requests = append(b.requests, e)
	}
}

// requestBatch decodes a router's batch of request events (a JSON array).
// An event that cannot be stored is dead-lettered alone, as a message of
// llm.telemetry.request, so a replay sends it back on its own and the
// others are stored; if that dead letter cannot be published, the batch is
// naked and none of it used. A batch that is not an array is dead-lettered
// whole.
func (l *Ledger) requestBatch(ctx context.Context, m jetstream.Msg) ([]*envelope.RequestEvent, bool) {
	var raws []json.RawMessage
	if err := envelope.UnmarshalInternal(m.Data(), &raws); err != nil {
		l.deadLetter(ctx, m, ReasonDecode, "", err)
		return nil, false
	}
	events := make([]*envelope.RequestEvent, 0, len(raws))
	for i, raw := range raws {
		e := new(envelope.RequestEvent)
		reason := ReasonDecode
		err := envelope.UnmarshalInternal(raw, e)
		if err == nil {
			reason, err = ReasonInvalidEvent, validateRequest(e)
		}
		if err == nil {
			events = append(events, e)
			continue
		}
		if !l.publishDeadLetter(ctx, m, natsx.SubjectRequest, raw, "-"+strconv.Itoa(i), reason, e.RequestID, err) {
			_ = m.NakWithDelay(time.Second)
			return nil, false
		}
	}
	return events, true
}

// addAttempt prices an attempt row and adds it to the batch, keeping one
// row per attempt id.
func (b *batch) addAttempt(l *Ledger, seen map[[2]string]int, e *envelope.AttemptEvent) {
	// A started event and its finished one are one call: the
	// unknown model is reported once, for the finished one.
	if !Reprice(l.catalog, e) && e.Outcome != envelope.OutcomeStarted {
		l.m.unknownModelAttempt()
		l.log.Warn().Str("vendor", e.Vendor).Str("model", e.Model).Str("request_id", e.RequestID).
			Msg("model not in the pricing catalog: stored with price_known=0")
	}
	key := [2]string{e.RequestID, e.AttemptID}
	if i, dup := seen[key]; dup {
		// A started event never replaces its finished attempt,
		// whatever order the batch holds them in.
		if e.Outcome != envelope.OutcomeStarted || b.attempts[i].Outcome == envelope.OutcomeStarted {
			b.attempts[i] = e
		}
		return
	}
	seen[key] = len(b.attempts)
	b.attempts = append(b.attempts, e)
}

// store inserts the batch, retrying with capped exponential backoff until
// ClickHouse accepts it or ctx is done. The first try runs even if ctx is
// already cancelled, so a stopping ledger flushes the batch in hand.
func (l *Ledger) store(ctx context.Context, b *batch) bool {
	attemptsDone, requestsDone := len(b.attempts) == 0, len(b.requests) == 0
	backoff := l.cfg.RetryMin
	// One version for every try: a retry sends the very block of the try
	// that failed, so a Replicated table that did store it (the answer was
	// lost with the replica) drops the copy by its block checksum
	// (insert_deduplicate) instead of keeping a second row for FINAL.
	ingested := time.Now().UTC().Truncate(time.Second)
	for try := 1; ; try++ {
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.InsertTimeout)
		var errs []error
		if !attemptsDone {
			err := l.insert(ictx, tableAttempts, attemptColumns, len(b.attempts), func(i int) []any {
				return attemptRow(b.attempts[i], ingested)
			})
			if err == nil {
				attemptsDone = true
			} else {
				errs = append(errs, err)
			}
		}
		if !requestsDone {
			err := l.insert(ictx, tableRequests, requestColumns, len(b.requests), func(i int) []any {
				return requestRow(b.requests[i], ingested)
			})
			if err == nil {
				requestsDone = true
			} else {
				errs = append(errs, err)
			}
		}
		cancel()
		if attemptsDone && requestsDone {
			if try > 1 {
				l.log.Info().Int("tries", try).Int("messages", len(b.msgs)).Msg("batch stored after retries")
			}
			return true
		}
		l.log.Error().Err(errors.Join(errs...)).Int("try", try).Int("messages", len(b.msgs)).
			Dur("retry_in", backoff).Msg("clickhouse insert failed; keeping the batch")
		if ctx.Err() != nil {
			return false
		}
		// Keep the messages ours while we wait: the ack wait restarts.
		for _, m := range b.msgs {
			_ = m.InProgress()
		}
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, l.cfg.RetryMax)
	}
}

func (l *Ledger) insert(ctx context.Context, table, columns string, n int, row func(int) []any) error {
	bt, err := l.ch.PrepareBatch(ctx, "INSERT INTO "+l.db+"."+table+" ("+columns+")")
	if err != nil {
		l.m.insertFailed(table)
		return fmt.Errorf("%s: prepare: %w", table, err)
	}
	for i := range n {
		if err := bt.Append(row(i)...); err != nil {
			_ = bt.Abort()
			l.m.insertFailed(table)
			return fmt.Errorf("%s: append: %w", table, err)
		}
	}
	if err := bt.Send(); err != nil {
		l.m.insertFailed(table)
		return fmt.Errorf("%s: send: %w", table, err)
	}
	l.m.insertedRows(table, n)
	return nil
}

// deadLetter republishes m unchanged to llm.dlq.ledger with the reason in
// headers and terminates it. If the dead letter cannot be published the
// message is naked instead, so it is never lost.
func (l *Ledger) deadLetter(ctx context.Context, m jetstream.Msg, reason, requestID string, cause error) {
	if !l.publishDeadLetter(ctx, m, m.Subject(), m.Data(), "", reason, requestID, cause) {
		_ = m.NakWithDelay(time.Second)
		return
	}
	if err := m.Term(); err != nil {
		l.log.Warn().Err(err).Str("subject", m.Subject()).Msg("term failed after dead-lettering")
	}
}

// publishDeadLetter publishes data, from m (all of it, or one event of a
// batch: idSuffix names which), to llm.dlq.ledger with the reason in
// headers and subject as the one a replay sends it back to. It reports
// whether the dead letter is stored.
func (l *Ledger) publishDeadLetter(ctx context.Context, m jetstream.Msg, subject string, data []byte, idSuffix, reason, requestID string, cause error) bool {
	h := nats.Header{}
	for k, v := range m.Headers() {
		// Nats-* headers (message id, expectations) belong to the original
		// publish and would make the dead letter's publish misbehave.
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	msgID := ""
	deliveries := uint64(0)
	if md, err := m.Metadata(); err == nil {
		msgID = "ledger-dlq-" + strconv.FormatUint(md.Sequence.Stream, 10)
		deliveries = md.NumDelivered
	}
	if msgID != "" {
		h.Set(natsx.HeaderMsgID, msgID+idSuffix)
	}
	errText := cause.Error()
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	h.Set(natsx.HeaderStage, natsx.StageLedger)
	h.Set(natsx.HeaderReason, reason)
	h.Set(natsx.HeaderError, errText)
	h.Set(natsx.HeaderOrigSubject, subject)
	h.Set(natsx.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(natsx.HeaderDeliveries, strconv.FormatUint(deliveries, 10))
	if requestID != "" {
		h.Set(natsx.HeaderRequestID, requestID)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	log := l.log.With().Str("reason", reason).Str("subject", subject).Str("error", errText).Logger()
	if _, err := l.js.PublishMsg(pctx, &nats.Msg{Subject: natsx.DLQSubject(natsx.StageLedger), Header: h, Data: data}); err != nil {
		log.Error().Err(err).Msg("dead letter publish failed; message naked")
		return false
	}
	l.m.deadLettered(reason)
	log.Warn().Msg("telemetry message dead-lettered")
	return true
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
