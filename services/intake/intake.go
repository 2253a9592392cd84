// Package intake is the first stage: it validates request envelopes against
// the public schema, classifies them (task, PII, token estimate) and hands
// them to a router, directly (llm.router.route) or on llm.classified; the
// route (named, or matched on the classification) is the router's
// decision, like everything else about routing. A request it refuses gets an error reply with a stable code and
// a dead letter. Request ids are unique per tenant: the intake deduplicates
// on tenant+id.
package intake

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// Config tunes the intake consumer (env prefix SWITCHYARD_INTAKE_).
type Config struct {
	Consumer string `envconfig:"CONSUMER" default:"intake"`
	pipeline.ConsumerSettings
	DefaultTimeout time.Duration `envconfig:"DEFAULT_TIMEOUT" default:"30s"`
	// DedupeWindow is how long a tenant+id is remembered: the same request
	// published again within it is processed and replied once.
	DedupeWindow time.Duration `envconfig:"DEDUPE_WINDOW" default:"10m"`
	// DirectRouter hands classified work to a router directly
	// (llm.router.route, pipeline.DirectHandOff) and to llm.classified only
	// when no router has routed it within RouterTimeout.
	DirectRouter  bool          `envconfig:"DIRECT_ROUTER" default:"true"`
	RouterTimeout time.Duration `envconfig:"ROUTER_TIMEOUT" default:"2s"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	errs := c.ConsumerSettings.Validate("SWITCHYARD_INTAKE", c.Consumer)
	if c.DefaultTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_DEFAULT_TIMEOUT: must be positive"))
	}
	if c.DedupeWindow < time.Second {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_DEDUPE_WINDOW: must be at least 1s"))
	}
	if c.DirectRouter && c.RouterTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_ROUTER_TIMEOUT: must be positive"))
	}
	return errors.Join(errs...)
}

// Deps are the intake's collaborators.
type Deps struct {
	Log       zerolog.Logger
	NC        *nats.Conn
	JS        jetstream.JetStream
	Policy    policy.Source
	Validator *envelope.Validator
	Now       func() time.Time
	Metrics   prometheus.Registerer
}

// Intake is the intake/classifier stage.
type Intake struct {
	cfg        Config
	d          Deps
	pub        pipeline.Publisher
	dedupe     Deduper
	accepted   prometheus.Counter
	duplicates prometheus.Counter
	rejected   *prometheus.CounterVec
	// toRouter hands classified work to a router directly.
	toRouter *pipeline.DirectHandOff
}

// New builds the stage.
func New(cfg Config, d Deps) (*Intake, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Policy == nil || d.Validator == nil {
		return nil, errors.New("intake: JS, Policy and Validator are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	in := &Intake{
		cfg: cfg, d: d, pub: pipeline.Publisher{JS: d.JS, NC: d.NC},
		accepted:   prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_intake_accepted_total", Help: "Requests classified and handed to the router."}),
		rejected:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_intake_rejected_total", Help: "Requests refused, by error code."}, []string{"code"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_intake_duplicates_total", Help: "Requests dropped because the same tenant and id were accepted within the dedupe window."}),
	}
	handoffs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_intake_router_handoffs_total",
		Help: "Classified work handed to the router, by path: direct (a router routed it) or stream (llm.classified)."}, []string{"path"})
	in.toRouter = &pipeline.DirectHandOff{NC: d.NC, Subject: natsx.SubjectRouterRoute, Enabled: cfg.DirectRouter, Timeout: cfg.RouterTimeout, Paths: handoffs}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{in.accepted, in.rejected, in.duplicates, handoffs} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return in, nil
}

// ConsumerConfig is the durable consumer the intake reads llm.requests with.
func (in *Intake) ConsumerConfig() jetstream.ConsumerConfig {
	// llm.requests (the edge, operators) and llm.requests.tenant.<t>
	// (tenants' own accounts).
	return in.cfg.ConsumerSettings.ConsumerConfig(in.cfg.Consumer, "intake/classifier: validates and classifies llm.requests",
		natsx.SubjectRequests, natsx.SubjectTenantRequestsPrefix+"*")
}

// Run consumes until ctx is done.
func (in *Intake) Run(ctx context.Context) error {
	if in.dedupe == nil {
		kv, err := natsx.OpenOrCreateKV(ctx, in.d.JS, jetstream.KeyValueConfig{
			Bucket:      DedupeBucket,
			Description: "intake: tenant+id of requests accepted within the dedupe window",
			TTL:         in.cfg.DedupeWindow,
			History:     1,
			Storage:     jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("intake dedupe: %w", err)
		}
		in.dedupe = kvDeduper{kv}
	}
	cons, err := in.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamRequests, in.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("intake consumer: %w", err)
	}
	h := pipeline.StageWithLog(in.deliveryLog, in.Handle, in.deadLetter, in.cfg.MaxDeliver, 10*time.Second)
	return pipeline.Run(ctx, in.d.Log, cons, h, pipeline.RunOptions{Concurrency: in.cfg.Concurrency, Stage: natsx.StageIntake, Metrics: in.d.Metrics})
}

// deliveryLog is the logger of the pipeline's own lines about a request
// (retries, dead letters, panics): request_id, tenant and trace_id as the
// envelope names them. It is built only when such a line is written.
func (in *Intake) deliveryLog(_ context.Context, d *pipeline.Delivery) *zerolog.Logger {
	m := inputOf(d)
	id, tenant, _ := envelope.PeekIdentity(m.Data)
	l := in.requestLog(id, tenant, pipeline.TraceID(traceParent(m)))
	return &l
}

// Message is one message the intake publishes.
type Message struct {
	Subject string
	MsgID   string
	Header  nats.Header
	Data    []byte
	// Core publishes on core NATS: a reply to a tenant's _INBOX (request-reply
	// clients expect a plain message there). Everything else goes to JetStream.
	Core bool
}

// Input is one request message as the intake sees it.
type Input struct {
	Data   []byte
	Header nats.Header
	// Subject, Stream, Seq and Deliveries describe the delivery; they name
	// the dead letter.
	Subject    string
	Stream     string
	Seq        uint64
	Deliveries uint64
	// Received is when JetStream stored the request: the start of its deadline.
	Received time.Time
}

// Outcome is what the intake decided for one request and what it publishes.
type Outcome struct {
	// Key is the tenant-scoped delivery key (envelope.WorkKey); empty when
	// the envelope names no readable id and tenant.
	Key                 string
	ID, Tenant, TraceID string
	// Code is empty for an accepted request, else the refusal's error code;
	// Problem says what is wrong.
	Code, Problem string
	Out           []Message
}

// Accepted reports whether the request goes on to the router.
func (o *Outcome) Accepted() bool { return o.Code == "" }

func inputOf(d *pipeline.Delivery) Input {
	in := Input{Data: d.Data(), Header: d.Headers(), Subject: d.Msg.Subject(), Deliveries: d.NumDelivered()}
	if d.Meta != nil {
		in.Stream, in.Seq, in.Received = d.Meta.Stream, d.Meta.Sequence.Stream, d.Meta.Timestamp
	}
	return in
}

// Handle processes one request envelope: it decides, claims the request's
// tenant+id (a duplicate within the dedupe window is dropped), and publishes
// what Decide returned.
func (in *Intake) Handle(ctx context.Context, d *pipeline.Delivery) error {
	m := inputOf(d)
	o, err := in.Decide(m, in.d.Now())
	// The request's logger is built only for a line that is written.
	log := func() *zerolog.Logger { l := in.requestLog(o.ID, o.Tenant, o.TraceID); return &l }
	if err != nil {
		log().Error().Err(err).Msg("request not processed")
		return err
	}
	if o.Accepted() && in.dedupe != nil {
		first, err := in.dedupe.Claim(ctx, o.Key, strconv.FormatUint(m.Seq, 10))
		if err != nil {
			return pipeline.Transient(fmt.Errorf("dedupe claim: %w", err), 0)
		}
		if !first {
			in.duplicates.Inc()
			log().Info().Msg("duplicate request dropped: the same tenant and id were accepted within the dedupe window")
			return nil
		}
	}
	if o.Accepted() && len(o.Out) == 1 && o.Out[0].Subject == natsx.SubjectClassified {
		// A router routes it directly, or it goes to llm.classified marked
		// as possibly routed already.
		handled, hdr := in.toRouter.Offer(ctx, o.Out[0].Data, o.Out[0].Header, d.Rerun(), log)
		if handled {
			o.Out = nil
		} else {
			o.Out[0].Header = hdr
		}
	}
	if err := in.publish(ctx, o.Out); err != nil {
		return err
	}
	if o.Accepted() {
		in.accepted.Inc()
		if in.d.Log.GetLevel() <= zerolog.DebugLevel {
			log().Debug().Msg("request classified")
		}
		return nil
	}
	in.rejected.WithLabelValues(o.Code).Inc()
	log().Info().Str("code", o.Code).Str("problem", o.Problem).Bool("replied", o.Key != "").Msg("request refused")
	return nil
}

// requestLog carries the request's identity on every line about it.
func (in *Intake) requestLog(id, tenant, traceID string) zerolog.Logger {
	return in.d.Log.With().Str("request_id", id).Str("tenant", tenant).Str("trace_id", traceID).Logger()
}

func (in *Intake) publish(ctx context.Context, out []Message) error {
	for _, m := range out {
		if m.Core && in.d.NC != nil {
			if err := in.d.NC.PublishMsg(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}); err != nil {
				return pipeline.Transient(fmt.Errorf("publish %s: %w", m.Subject, err), 0)
			}
			continue
		}
		if err := in.pub.PublishRaw(ctx, m.Subject, m.MsgID, m.Data, m.Header); err != nil {
			return err
		}
	}
	return nil
}

// Decide validates and classifies one request and returns what to publish:
// the work envelope for the router, or (refused) a dead letter plus, when
// the envelope names an id and tenant, the request event and the error
// reply. It does no I/O.
func (in *Intake) Decide(m Input, now time.Time) (Outcome, error) {
	received := m.Received
	if received.IsZero() {
		received = now
	}
	trace := traceParent(m)
	if publisher := natsx.TenantOfRequestSubject(m.Subject); publisher != "" {
		// An envelope naming no tenant is refused as invalid below.
		if _, claimed, _ := envelope.PeekIdentity(m.Data); claimed != "" && claimed != publisher {
			return in.impersonation(m, publisher, claimed, trace, received, now)
		}
	}
	req, err := in.d.Validator.DecodeRequest(m.Data)
	if err != nil {
		var inv *envelope.Invalid
		if !errors.As(err, &inv) {
			return Outcome{}, pipeline.Terminal("decode", err)
		}
		return in.refuse(m, inv, trace, received, now)
	}
	w := &envelope.Work{
		Key:         envelope.WorkKey(req.Tenant, deliveryBase(m.Header, req.ID)),
		Request:     *req,
		Class:       Classify(req),
		ReceivedAt:  received,
		TraceParent: trace,
	}
	timeout := in.cfg.DefaultTimeout
	if req.TimeoutMS > 0 {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	w.Deadline = received.Add(timeout)
	data, err := envelope.MarshalInternal(w)
	if err != nil {
		return Outcome{}, pipeline.Terminal("marshal", err)
	}
	return Outcome{Key: w.Key, ID: req.ID, Tenant: req.Tenant, TraceID: pipeline.TraceID(trace),
		Out: []Message{{Subject: natsx.SubjectClassified, MsgID: w.Key + ":classified", Data: data, Header: traceHeader(trace)}}}, nil
}

// deliveryBase is the untenanted part of the delivery key: the request id,
// or the replay-specific key `switchyard dlq replay` sends in
// Switchyard-Dedupe-Key, so a replay is not taken for a duplicate. The
// client's Nats-Msg-Id plays no part: a client that sets it to the bare id
// still cannot collide with another tenant.
func deliveryBase(h nats.Header, id string) string {
	if k := h.Get(natsx.HeaderDedupeKey); k != "" {
		return k
	}
	return id
}

// refuse dead-letters the raw message (cut to fit the DLQ) and, when the
// envelope names an id and tenant, records the request and replies with the
// error.
func (in *Intake) refuse(m Input, inv *envelope.Invalid, trace string, received, now time.Time) (Outcome, error) {
	o := Outcome{ID: inv.ID, Tenant: inv.Tenant, TraceID: pipeline.TraceID(trace), Code: inv.Code, Problem: inv.Message}
	o.Out = append(o.Out, deadLetterMsg(m, inv.Code, inv, inv.ID, inv.Tenant, now))
	if inv.ID == "" || inv.Tenant == "" {
		return o, nil // nobody to reply to; the dead letter is the record
	}
	o.Key = envelope.WorkKey(inv.Tenant, deliveryBase(m.Header, inv.ID))
	// A refusal's messages get their own ids: the same refusal twice is
	// replied once, and a corrected envelope reusing the id still gets its
	// own reply (a refused request is not claimed in the dedupe bucket).
	w := &envelope.Work{Key: answerKey(o.Key, refusedSuffix, m), Request: envelope.Request{ID: inv.ID, Tenant: inv.Tenant, ReplyTo: inv.ReplyTo}, ReceivedAt: received, TraceParent: trace}
	out, err := failure(w, inv.Code, inv.Message, false, now)
	if err != nil {
		return Outcome{}, err
	}
	o.Out = append(o.Out, out...)
	return o, nil
}

// answerKey is the delivery key of the intake's own answer to message m
// (a refusal, or the failure of a dead-lettered request): key, suffix and
// the message's LLM_REQUESTS sequence. A redelivery of m answers under the
// same ids (replied once), but each new publish of the id is answered
// again: LLM_REPLIES delivers only what it stores, so a reply dropped as a
// duplicate of an earlier refusal would leave the client with no answer.
func answerKey(key, suffix string, m Input) string {
	if m.Seq == 0 {
		return key + suffix
	}
	return key + suffix + ":" + strconv.FormatUint(m.Seq, 10)
}

// refusedSuffix ends the delivery key of a refused request.
const refusedSuffix = ":refused"

// failedSuffix ends the delivery key of the failure reply to a request the
// intake dead-lettered.
const failedSuffix = ":failed"

// failure is the request event and the error reply of a request that ends
// in the intake: telemetry first, so a client that saw a reply can always
// find the request in the ledger.
func failure(w *envelope.Work, code, msg string, retryable bool, now time.Time) ([]Message, error) {
	r := pipeline.ReplyFor(w, now)
	r.Status = envelope.StatusError
	r.Error = &envelope.Error{Code: code, Message: msg, Retryable: retryable}
	ev, err := envelope.MarshalInternal(pipeline.RequestEventFor(w, r, now))
	if err != nil {
		return nil, pipeline.Terminal("marshal", err)
	}
	reply, err := envelope.MarshalInternal(r)
	if err != nil {
		return nil, pipeline.Terminal("marshal", err)
	}
	subject, stored := natsx.ReplyPublishSubject(w.Request.ReplySubject())
	return []Message{
		{Subject: natsx.SubjectRequest, MsgID: w.Key + ":request", Data: ev, Header: traceHeader(w.TraceParent)},
		{Subject: subject, MsgID: w.Key + ":reply", Data: reply, Header: traceHeader(w.TraceParent), Core: !stored},
	}, nil
}

// deadLetterMsg is the dead letter of a request message. Its payload is
// capped (dlq.CapPayload): a request near NATS's 1 MiB limit would make a
// dead letter too large to publish.
func deadLetterMsg(m Input, reason string, cause error, id, tenant string, now time.Time) Message {
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, natsx.StageIntake)
	hdr.Set(natsx.HeaderReason, reason)
	if cause != nil {
		hdr.Set(natsx.HeaderError, clip(cause.Error(), 1024))
	}
	subject := m.Subject
	if subject == "" {
		subject = natsx.SubjectRequests
	}
	hdr.Set(natsx.HeaderOrigSubject, subject)
	hdr.Set(natsx.HeaderFailedAt, now.UTC().Format(time.RFC3339Nano))
	hdr.Set(natsx.HeaderDeliveries, strconv.FormatUint(max(m.Deliveries, 1), 10))
	if id != "" {
		hdr.Set(natsx.HeaderRequestID, id)
	}
	if tenant != "" {
		hdr.Set(natsx.HeaderTenant, tenant)
	}
	if k := m.Header.Get(natsx.HeaderDedupeKey); k != "" {
		hdr.Set(natsx.HeaderDedupeKey, k)
	}
	msgID := "dlq:" + natsx.StageIntake
	if m.Stream != "" {
		msgID += ":" + m.Stream + ":" + strconv.FormatUint(m.Seq, 10)
	}
	return Message{Subject: natsx.DLQSubject(natsx.StageIntake), MsgID: msgID, Data: dlq.CapPayload(m.Data, hdr), Header: hdr}
}

// deadLetter records a request the pipeline gave up on (max deliveries, a
// panic) and, when its id and tenant can be read, replies `internal`.
func (in *Intake) deadLetter(ctx context.Context, d *pipeline.Delivery, reason string, cause error) error {
	m := inputOf(d)
	now := in.d.Now()
	id, tenant, replyTo := envelope.PeekIdentity(m.Data)
	trace := traceParent(m)
	out := []Message{deadLetterMsg(m, reason, cause, id, tenant, now)}
	if id != "" && tenant != "" {
		received := m.Received
		if received.IsZero() {
			received = now
		}
		w := &envelope.Work{Key: answerKey(envelope.WorkKey(tenant, deliveryBase(m.Header, id)), failedSuffix, m), Request: envelope.Request{ID: id, Tenant: tenant, ReplyTo: replyTo}, ReceivedAt: received, TraceParent: trace}
		reply, err := failure(w, envelope.CodeInternal, "intake could not process the request ("+reason+"); it was dead-lettered", true, now)
		if err != nil {
			return err
		}
		out = append(out, reply...)
	}
	if err := in.publish(ctx, out); err != nil {
		return err
	}
	log := in.requestLog(id, tenant, pipeline.TraceID(trace))
	log.Warn().Str("reason", reason).AnErr("cause", cause).Msg("request dead-lettered")
	return nil
}

func traceHeader(traceparent string) nats.Header {
	if traceparent == "" {
		return nil
	}
	return nats.Header{natsx.HeaderTraceParent: []string{traceparent}}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// traceParent is the client's W3C trace context, or a new one. A new one is
// derived from the stored message (stream, sequence, time), so every log line, every
// redelivery and the dead letter of one request carry the same trace id.
// Its flags say "not sampled" (00): Switchyard records no spans, and a
// sampled traceparent makes the NATS server parse every header of every
// message of the request looking for a trace destination (5% of what `up`
// allocates under load).
func traceParent(m Input) string {
	if tp := m.Header.Get(natsx.HeaderTraceParent); tp != "" {
		return tp
	}
	var b [24]byte
	if m.Stream != "" {
		sum := sha256.Sum256([]byte(m.Stream + "/" + strconv.FormatUint(m.Seq, 10) + "/" + strconv.FormatInt(m.Received.UnixNano(), 10)))
		copy(b[:], sum[:])
	} else {
		_, _ = rand.Read(b[:])
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}
