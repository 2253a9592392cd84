// Package intake is the first stage: it validates request envelopes against
// the public schema, classifies them (task, PII, token estimate) and hands
// them to the router on llm.classified, which resolves their route. A request it
// refuses gets an error reply with a stable code and a dead letter.
package intake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/stage"
)

// Config tunes the intake consumer (env prefix SWITCHYARD_INTAKE_).
type Config struct {
	Consumer       string        `envconfig:"CONSUMER" default:"intake"`
	Concurrency    int           `envconfig:"CONCURRENCY" default:"64"`
	MaxDeliver     int           `envconfig:"MAX_DELIVER" default:"5"`
	AckWait        time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	MaxAckPending  int           `envconfig:"MAX_ACK_PENDING" default:"2048"`
	DefaultTimeout time.Duration `envconfig:"DEFAULT_TIMEOUT" default:"30s"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Consumer == "" {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_CONSUMER: required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_CONCURRENCY: must be at least 1"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_MAX_DELIVER: must be at least 1"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_ACK_WAIT: must be at least 1s"))
	}
	if c.MaxAckPending < c.Concurrency {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_MAX_ACK_PENDING: must be at least CONCURRENCY"))
	}
	if c.DefaultTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_INTAKE_DEFAULT_TIMEOUT: must be positive"))
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
	cfg      Config
	d        Deps
	pub      stage.Publisher
	accepted prometheus.Counter
	rejected *prometheus.CounterVec
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
		cfg: cfg, d: d, pub: stage.Publisher{JS: d.JS, NC: d.NC},
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_intake_accepted_total", Help: "Requests classified and handed to the router."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_intake_rejected_total", Help: "Requests refused, by error code."}, []string{"code"}),
	}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{in.accepted, in.rejected} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return in, nil
}

// ConsumerConfig is the durable consumer the intake reads llm.requests with.
func (in *Intake) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       in.cfg.Consumer,
		Description:   "intake/classifier: validates and classifies llm.requests",
		FilterSubject: natsx.SubjectRequests,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxDeliver:    in.cfg.MaxDeliver,
		MaxAckPending: in.cfg.MaxAckPending,
	}
}

// Run consumes until ctx is done.
func (in *Intake) Run(ctx context.Context) error {
	cons, err := in.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamRequests, in.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("intake consumer: %w", err)
	}
	h := pipeline.Stage(in.d.Log, in.Handle, in.deadLetter, in.cfg.MaxDeliver, 10*time.Second)
	return pipeline.Run(ctx, in.d.Log, cons, h, pipeline.RunOptions{Concurrency: in.cfg.Concurrency})
}

func (in *Intake) deadLetter(ctx context.Context, d *pipeline.Delivery, reason string, cause error) error {
	id, tenant := "", ""
	if r, err := in.d.Validator.DecodeRequest(d.Data()); err == nil {
		id, tenant = r.ID, r.Tenant
	}
	return in.pub.DeadLetter(ctx, natsx.StageIntake, reason, cause, d, id, tenant)
}

// Handle processes one request envelope.
func (in *Intake) Handle(ctx context.Context, d *pipeline.Delivery) error {
	now := in.d.Now()
	received := now
	if d.Meta != nil && !d.Meta.Timestamp.IsZero() {
		received = d.Meta.Timestamp
	}
	key := d.Headers().Get(natsx.HeaderMsgID)

	req, err := in.d.Validator.DecodeRequest(d.Data())
	if err != nil {
		var inv *envelope.Invalid
		if !errors.As(err, &inv) {
			return err
		}
		return in.refuse(ctx, d, inv, key, received, now)
	}
	if key == "" {
		key = req.ID
	}
	w := &envelope.Work{
		Key:         key,
		Request:     *req,
		Class:       Classify(req),
		ReceivedAt:  received,
		TraceParent: traceParent(d.Headers()),
	}
	timeout := in.cfg.DefaultTimeout
	if req.TimeoutMS > 0 {
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	w.Deadline = received.Add(timeout)

	// The route (named, or matched on the classification) and its chain
	// are the router's decision, like everything else about routing.
	if err := in.pub.PublishWork(ctx, natsx.SubjectClassified, key+":classified", w); err != nil {
		return err
	}
	in.accepted.Inc()
	return nil
}

// refuse dead-letters the raw message and, when the envelope names an id
// and tenant, replies with the error and records the request.
func (in *Intake) refuse(ctx context.Context, d *pipeline.Delivery, inv *envelope.Invalid, key string, received, now time.Time) error {
	in.rejected.WithLabelValues(inv.Code).Inc()
	if err := in.pub.DeadLetter(ctx, natsx.StageIntake, inv.Code, inv, d, inv.ID, inv.Tenant); err != nil {
		return err
	}
	in.d.Log.Info().Str("code", inv.Code).Str("request_id", inv.ID).Str("tenant", inv.Tenant).Str("problem", inv.Message).Msg("request refused")
	if inv.ID == "" || inv.Tenant == "" {
		return nil // nobody to reply to; the dead letter is the record
	}
	if key == "" {
		key = inv.ID
	}
	w := &envelope.Work{Key: key, Request: envelope.Request{ID: inv.ID, Tenant: inv.Tenant}, ReceivedAt: received}
	return in.pub.FailRequest(ctx, w, inv.Code, inv.Message, false, now)
}

func traceParent(h nats.Header) string {
	if tp := h.Get(natsx.HeaderTraceParent); tp != "" {
		return tp
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}
