// Package executor calls one vendor. Each replica of one vendor's executor
// shares the durable consumer on llm.exec.<vendor>, so replicas split the
// queue, and the consumer's MaxAckPending is the vendor's concurrency limit
// across all of them together.
package executor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/limiter"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
	"github.com/switchyard-llm/switchyard/pkg/pii"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/stage"
)

// Config tunes one vendor's executor (env prefix SWITCHYARD_EXECUTOR_, plus
// SWITCHYARD_VENDOR).
type Config struct {
	// Vendor is set from SWITCHYARD_VENDOR by the binary (or by `switchyard up`).
	Vendor      string        `ignored:"true"`
	Concurrency int           `envconfig:"CONCURRENCY" default:"0"` // 0: the vendor's max_concurrency
	MaxDeliver  int           `envconfig:"MAX_DELIVER" default:"5"`
	AckWait     time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	// DefaultTimeout bounds a vendor call when the policy sets none.
	DefaultTimeout time.Duration `envconfig:"DEFAULT_TIMEOUT" default:"60s"`
	// DefaultMaxConcurrency caps in-flight calls to the vendor across all
	// replicas when the policy sets no max_concurrency.
	DefaultMaxConcurrency int `envconfig:"DEFAULT_MAX_CONCURRENCY" default:"64"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Vendor == "" {
		errs = append(errs, errors.New("SWITCHYARD_VENDOR: required (a vendor name from the policy)"))
	}
	if c.Concurrency < 0 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_CONCURRENCY: must not be negative"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_MAX_DELIVER: must be at least 1"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_ACK_WAIT: must be at least 1s"))
	}
	if c.DefaultTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_DEFAULT_TIMEOUT: must be positive"))
	}
	if c.DefaultMaxConcurrency < 1 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_DEFAULT_MAX_CONCURRENCY: must be at least 1"))
	}
	return errors.Join(errs...)
}

// Deps are the executor's collaborators.
type Deps struct {
	Log     zerolog.Logger
	NC      *nats.Conn
	JS      jetstream.JetStream
	Policy  policy.Source
	Adapter provider.Adapter
	// Breakers, when set, guard every call: an open circuit answers
	// circuit_open at once, without calling the vendor.
	Breakers *breaker.Breakers
	// Limiter, when set, holds the vendor to its rpm/tpm limits across all
	// replicas: a call over the limit is not made and answers saturated.
	Limiter *limiter.Limiter
	// Hedges, when set, lets a hedge branch that has not started yet be
	// cancelled once another branch has answered.
	Hedges  *hedge.Tracker
	Now     func() time.Time
	Metrics prometheus.Registerer
}

// Executor is one vendor's executor replica.
type Executor struct {
	cfg     Config
	d       Deps
	vendor  policy.Vendor
	pub     stage.Publisher
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	cost    *prometheus.CounterVec
	handled atomic.Int64
}

// Handled is how many attempts this replica has performed.
func (e *Executor) Handled() int64 { return e.handled.Load() }

// New builds the stage.
func New(cfg Config, d Deps) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Policy == nil || d.Adapter == nil {
		return nil, errors.New("executor: JS, Policy and Adapter are required")
	}
	// Vendor endpoints and keys are read once: changing them needs a
	// restart; routes, models and prices follow applied policies.
	v, ok := d.Policy.Current().Vendors[cfg.Vendor]
	if !ok {
		return nil, fmt.Errorf("executor: vendor %q is not in the policy", cfg.Vendor)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	e := &Executor{cfg: cfg, d: d, vendor: v, pub: stage.Publisher{JS: d.JS, NC: d.NC},
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_calls_total", Help: "Vendor calls by vendor, model and outcome class."}, []string{"vendor", "model", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_executor_vendor_latency_seconds", Help: "Vendor call latency.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"vendor", "model"}),
	}
	e.cost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_cost_usd_total", Help: "Vendor spend priced from the catalog, by vendor and model."}, []string{"vendor", "model"})
	var err error
	if e.cost, err = obs.Register(d.Metrics, e.cost); err != nil {
		return nil, err
	}
	if e.calls, err = obs.Register(d.Metrics, e.calls); err != nil {
		return nil, err
	}
	if e.latency, err = obs.Register(d.Metrics, e.latency); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Executor) maxConcurrency() int {
	if e.vendor.MaxConcurrency > 0 {
		return e.vendor.MaxConcurrency
	}
	return e.cfg.DefaultMaxConcurrency
}

// ConsumerConfig is shared by every replica of this vendor: MaxAckPending
// is the vendor-wide concurrency limit, since the server counts unacked
// messages across all of the consumer's subscribers.
func (e *Executor) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       "exec-" + e.cfg.Vendor,
		Description:   "executors of vendor " + e.cfg.Vendor,
		FilterSubject: natsx.ExecSubject(e.cfg.Vendor),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       e.cfg.AckWait,
		MaxDeliver:    e.cfg.MaxDeliver,
		MaxAckPending: e.maxConcurrency(),
	}
}

// Run consumes until ctx is done; in-flight vendor calls finish first.
func (e *Executor) Run(ctx context.Context) error {
	cons, err := e.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamPipeline, e.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("executor consumer: %w", err)
	}
	conc := e.cfg.Concurrency
	if conc == 0 {
		conc = e.maxConcurrency()
	}
	h := pipeline.Stage(e.d.Log, e.Handle, stage.WorkDeadLetter(e.pub, natsx.StageExecutor, e.d.Now), e.cfg.MaxDeliver, 0)
	return pipeline.Run(ctx, e.d.Log, cons, h, pipeline.RunOptions{Concurrency: conc, Grace: e.timeout() + 5*time.Second})
}

func (e *Executor) timeout() time.Duration {
	if e.vendor.Timeout.Duration > 0 {
		return e.vendor.Timeout.Duration
	}
	return e.cfg.DefaultTimeout
}

// Handle performs one attempt and reports it on llm.results.
func (e *Executor) Handle(ctx context.Context, d *pipeline.Delivery) error {
	w, err := stage.DecodeWork(d.Data())
	if err != nil {
		return err
	}
	t := w.Target()
	if t.Vendor != e.cfg.Vendor {
		return pipeline.Terminal("wrong_vendor", fmt.Errorf("work for %q on %q's queue", t.Vendor, e.cfg.Vendor))
	}
	if wait := w.NotBefore.Sub(e.d.Now()); wait > 0 {
		// A retry (or a hedge) the router scheduled: hand it back until it
		// is due. The vendor sees no call and the slot is free meanwhile.
		return d.NakWithDelay(wait)
	}
	if w.Hedged && e.d.Hedges != nil {
		if won, err := e.d.Hedges.Won(ctx, w.Key); err == nil && won {
			e.calls.WithLabelValues(t.Vendor, t.Model, "hedge_cancelled").Inc()
			return nil // another branch answered: this one is cancelled, unbilled
		}
	}
	res := e.guardedCall(ctx, d, w, t)
	e.handled.Add(1)
	w.Current = res
	outcome := envelope.OutcomeOK
	if !res.OK() {
		outcome = envelope.OutcomeError
	}
	w.Attempts = append(w.Attempts, envelope.AttemptResult{
		Attempt: w.AttemptNumber(), Vendor: t.Vendor, Model: t.Model, Outcome: outcome,
		ErrorClass: res.ErrorClass, HTTPStatus: res.HTTPStatus, LatencyMS: res.LatencyMS,
		Usage: res.Usage, CostUSD: res.CostUSD,
	})
	id := w.Key + ":result:" + strconv.Itoa(w.Attempts[len(w.Attempts)-1].Attempt)
	// The vendor has been called; retry the hand-off here rather than
	// redelivering the message, which would call the vendor again.
	var pubErr error
	for i := range 5 {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		pubErr = e.pub.PublishWork(pctx, natsx.SubjectResults, id, w)
		cancel()
		if pubErr == nil {
			return nil
		}
		time.Sleep(time.Duration(100*(i+1)) * time.Millisecond)
	}
	return pubErr
}

// ClassCancelled is the error class of a hedge branch's call cut short
// because the other branch answered first.
const ClassCancelled = "cancelled"

// ClassSaturated is the error class of an attempt not made because the
// vendor is at its rpm/tpm limit: the router spills or waits.
const ClassSaturated = "saturated"

// ClassCircuitOpen is the error class of an attempt refused by an open
// circuit breaker: retryable, so the router falls to the next target.
const ClassCircuitOpen = "circuit_open"

// BreakerKeys names the breakers guarding a target: its vendor's and its
// model's.
func BreakerKeys(t envelope.Target) []string { return []string{t.Vendor, t.Vendor + "/" + t.Model} }

// guardedCall asks the shared breaker before calling and tells it how the
// call went: retryable failures count against the vendor, terminal ones
// (a bad request) say nothing about its health.
func (e *Executor) guardedCall(ctx context.Context, d *pipeline.Delivery, w *envelope.Work, t envelope.Target) *envelope.Result {
	if e.d.Breakers == nil {
		if res := e.acquire(ctx, w, t); res != nil {
			return res
		}
		return e.call(ctx, d, w, t)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// The vendor's breaker (every model down: an outage) and the model's
	// (one model failing) must both let the call through.
	var permits []breaker.Permit
	release := func() {
		for _, p := range permits {
			if err := e.d.Breakers.Release(rctx, p); err != nil {
				e.d.Log.Warn().Err(err).Msg("breaker permit not released")
			}
		}
	}
	for _, key := range BreakerKeys(t) {
		permit, err := e.d.Breakers.Allow(ctx, key)
		if err != nil || !permit.Allowed() {
			release()
			msg := "circuit " + key + " open"
			if err != nil {
				msg = "circuit state unavailable: " + err.Error()
			}
			e.calls.WithLabelValues(t.Vendor, t.Model, ClassCircuitOpen).Inc()
			return &envelope.Result{ErrorClass: ClassCircuitOpen, Retryable: true, ErrorMessage: msg, StartedAt: e.d.Now().UTC()}
		}
		permits = append(permits, permit)
	}
	if res := e.acquire(ctx, w, t); res != nil {
		release()
		return res
	}
	res := e.call(ctx, d, w, t)
	for _, p := range permits {
		var err error
		switch {
		case res.OK():
			err = e.d.Breakers.Record(rctx, p, true)
		case res.Retryable:
			err = e.d.Breakers.Record(rctx, p, false)
		default:
			err = e.d.Breakers.Release(rctx, p)
		}
		if err != nil {
			e.d.Log.Warn().Err(err).Str("vendor", t.Vendor).Str("model", t.Model).Msg("breaker outcome not recorded")
		}
	}
	return res
}

// acquire takes a slot from the vendor's shared rpm/tpm window. It returns
// a saturated result when there is none, nil when the call may go ahead.
// If the limiter itself fails (NATS trouble) the call goes ahead: the
// consumer's MaxAckPending still bounds concurrency.
func (e *Executor) acquire(ctx context.Context, w *envelope.Work, t envelope.Target) *envelope.Result {
	if e.d.Limiter == nil {
		return nil
	}
	err := e.d.Limiter.Acquire(ctx, t.Vendor, w.Class.TokenEstimate, envelope.AttemptID(w.Key, w.AttemptNumber()))
	var sat *limiter.Saturated
	switch {
	case err == nil:
		return nil
	case errors.As(err, &sat):
		e.calls.WithLabelValues(t.Vendor, t.Model, ClassSaturated).Inc()
		return &envelope.Result{ErrorClass: ClassSaturated, Retryable: true, ErrorMessage: sat.Error(),
			RetryAfterMS: sat.RetryAfter.Milliseconds(), StartedAt: e.d.Now().UTC()}
	default:
		e.d.Log.Warn().Err(err).Str("vendor", t.Vendor).Msg("limiter unavailable; calling without it")
		return nil
	}
}

// call performs the vendor request, keeping the message alive meanwhile.
func (e *Executor) call(ctx context.Context, d *pipeline.Delivery, w *envelope.Work, t envelope.Target) *envelope.Result {
	timeout := e.timeout()
	if !w.Deadline.IsZero() {
		if left := time.Until(w.Deadline); left < timeout {
			timeout = left
		}
	}
	if timeout <= 0 {
		return &envelope.Result{ErrorClass: string(provider.ClassTimeout), Retryable: true, ErrorMessage: "request deadline passed before the call", StartedAt: e.d.Now().UTC()}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if w.Hedged && e.d.Hedges != nil {
		// The losing branch of a hedged request is cancelled mid-call.
		var stop func()
		cctx, stop = e.d.Hedges.CancelWhenWon(cctx, w.Key)
		defer stop()
	}
	stop := keepAlive(cctx, d, e.cfg.AckWait/3)
	defer stop()

	msgs, redactor := e.redact(w)
	req := &provider.Request{
		Model:          t.Model,
		Messages:       msgs,
		MaxTokens:      w.Request.MaxTokens,
		Temperature:    w.Request.Temperature,
		ResponseFormat: w.Request.ResponseFormat,
		Options:        w.Request.VendorOptions[e.cfg.Vendor],
	}
	start := e.d.Now()
	resp, err := e.d.Adapter.Complete(cctx, req)
	elapsed := e.d.Now().Sub(start)
	e.latency.WithLabelValues(t.Vendor, t.Model).Observe(elapsed.Seconds())

	res := &envelope.Result{LatencyMS: elapsed.Milliseconds(), StartedAt: start.UTC()}
	if err != nil && cctx.Err() == context.Canceled && ctx.Err() == nil {
		// Cut short because another hedge branch answered: not the
		// vendor's fault, so no breaker counts it.
		res.ErrorClass, res.ErrorMessage = ClassCancelled, "cancelled: another branch answered"
		e.calls.WithLabelValues(t.Vendor, t.Model, ClassCancelled).Inc()
		return res
	}
	if err != nil {
		ve := provider.AsError(err)
		res.ErrorClass, res.HTTPStatus, res.Retryable = string(ve.Class), ve.HTTPStatus, ve.Retryable
		res.ErrorMessage, res.RetryAfterMS = ve.Message, ve.RetryAfter.Milliseconds()
		e.calls.WithLabelValues(t.Vendor, t.Model, string(ve.Class)).Inc()
		e.d.Log.Debug().Str("request_id", w.Request.ID).Str("vendor", t.Vendor).Str("model", t.Model).Str("class", string(ve.Class)).Int("http_status", ve.HTTPStatus).Msg("vendor call failed")
		return res
	}
	res.Content, res.FinishReason, res.Usage, res.HTTPStatus = resp.Content, resp.FinishReason, resp.Usage, resp.HTTPStatus
	if redactor != nil {
		res.Content = redactor.Restore(res.Content)
	}
	res.CostUSD, res.PriceKnown = pricing.Cost(e.d.Policy.Current(), t.Vendor, t.Model, resp.Usage)
	e.calls.WithLabelValues(t.Vendor, t.Model, "ok").Inc()
	e.cost.WithLabelValues(t.Vendor, t.Model).Add(res.CostUSD)
	return res
}

// redact returns the messages to send: with personal data replaced by
// placeholders when the route asks for it, together with the redactor that
// restores them in the answer (nil when nothing was replaced).
func (e *Executor) redact(w *envelope.Work) ([]envelope.Message, *pii.Redactor) {
	route, ok := e.d.Policy.Current().Route(w.Route)
	if !ok || !route.RedactPII || !w.Class.Sensitive {
		return w.Request.Messages, nil
	}
	r := pii.NewRedactor()
	msgs := make([]envelope.Message, len(w.Request.Messages))
	for i, m := range w.Request.Messages {
		msgs[i] = envelope.Message{Role: m.Role, Content: r.Redact(m.Content)}
	}
	if !r.Redacted() {
		return w.Request.Messages, nil
	}
	return msgs, r
}

// keepAlive sends InProgress so a slow vendor call does not exceed AckWait
// and get redelivered to another replica while still running.
func keepAlive(ctx context.Context, d *pipeline.Delivery, every time.Duration) (stop func()) {
	if every <= 0 {
		every = time.Second
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = d.InProgress()
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}
