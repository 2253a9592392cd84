// Package gate judges every attempt's answer. It records each attempt's
// telemetry, finishes requests whose answer passes (or is accepted as
// degraded), escalates a failing answer to the next model when the route
// allows, and hands vendor failures back to the router.
package gate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/spend"
	"github.com/switchyard-llm/switchyard/pkg/stage"
)

// Config tunes the gate consumer (env prefix SWITCHYARD_GATE_).
type Config struct {
	Consumer      string        `envconfig:"CONSUMER" default:"gate"`
	Concurrency   int           `envconfig:"CONCURRENCY" default:"64"`
	MaxDeliver    int           `envconfig:"MAX_DELIVER" default:"5"`
	AckWait       time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	MaxAckPending int           `envconfig:"MAX_ACK_PENDING" default:"2048"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Consumer == "" {
		errs = append(errs, errors.New("SWITCHYARD_GATE_CONSUMER: required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("SWITCHYARD_GATE_CONCURRENCY: must be at least 1"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New("SWITCHYARD_GATE_MAX_DELIVER: must be at least 1"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("SWITCHYARD_GATE_ACK_WAIT: must be at least 1s"))
	}
	if c.MaxAckPending < c.Concurrency {
		errs = append(errs, errors.New("SWITCHYARD_GATE_MAX_ACK_PENDING: must be at least CONCURRENCY"))
	}
	return errors.Join(errs...)
}

// Deps are the gate's collaborators.
type Deps struct {
	Log    zerolog.Logger
	NC     *nats.Conn
	JS     jetstream.JetStream
	Policy policy.Source
	// Hedges decides which branch of a hedged request answers.
	Hedges *hedge.Tracker
	// Budgets settles finished requests' reservations with their real cost.
	Budgets *budget.Budgets
	// Cache stores passing answers of requests the router marked cacheable.
	Cache   *respcache.Cache
	Now     func() time.Time
	Metrics prometheus.Registerer
}

// Gate is the quality gate stage.
type Gate struct {
	cfg      Config
	d        Deps
	pub      stage.Publisher
	verdicts *prometheus.CounterVec
}

// New builds the stage.
func New(cfg Config, d Deps) (*Gate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Policy == nil {
		return nil, errors.New("gate: JS and Policy are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	g := &Gate{cfg: cfg, d: d, pub: stage.Publisher{JS: d.JS, NC: d.NC, OnFinish: spend.Settler(d.Budgets)},
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_gate_verdicts_total", Help: "Gate verdicts."}, []string{"verdict"}),
	}
	if d.Metrics != nil {
		if err := d.Metrics.Register(g.verdicts); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// ConsumerConfig reads every attempt result.
func (g *Gate) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       g.cfg.Consumer,
		Description:   "quality gate: judges attempt results",
		FilterSubject: natsx.SubjectResults,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       g.cfg.AckWait,
		MaxDeliver:    g.cfg.MaxDeliver,
		MaxAckPending: g.cfg.MaxAckPending,
	}
}

// Run consumes until ctx is done.
func (g *Gate) Run(ctx context.Context) error {
	cons, err := g.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamPipeline, g.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("gate consumer: %w", err)
	}
	h := pipeline.Stage(g.d.Log, g.Handle, stage.WorkDeadLetter(g.pub, natsx.StageGate, g.d.Now), g.cfg.MaxDeliver, 10*time.Second)
	return pipeline.Run(ctx, g.d.Log, cons, h, pipeline.RunOptions{Concurrency: g.cfg.Concurrency})
}

// Handle judges one attempt result.
func (g *Gate) Handle(ctx context.Context, d *pipeline.Delivery) error {
	w, err := stage.DecodeWork(d.Data())
	if err != nil {
		return err
	}
	if w.Current == nil || len(w.Attempts) == 0 {
		return pipeline.Terminal("malformed_work", errors.New("result without an attempt"))
	}
	now := g.d.Now()
	n := len(w.Attempts)
	last := &w.Attempts[n-1]
	res := w.Current

	if !res.OK() {
		g.verdicts.WithLabelValues("vendor_error").Inc()
		if err := g.recordAttempt(ctx, w, last, res); err != nil {
			return err
		}
		return g.pub.PublishWork(ctx, natsx.SubjectEscalations, w.Key+":escalate:"+strconv.Itoa(last.Attempt), w)
	}

	v := Judge(&w.Request, res)
	q := v.Quality
	w.Quality = &q
	if w.Hedged {
		return g.hedgeBranch(ctx, w, last, res, v, now)
	}
	route, _ := g.d.Policy.Current().Route(w.Route)
	if !q.Passed {
		last.Outcome = envelope.OutcomeQualityFailed
		if err := g.recordAttempt(ctx, w, last, res); err != nil {
			return err
		}
		onFail := policy.OnQualityReject
		if route != nil {
			onFail = route.OnQualityFail
		}
		switch {
		case onFail == policy.OnQualityEscalate && w.Step+1 < len(w.Chain):
			g.verdicts.WithLabelValues("escalated").Inc()
			w.Escalated = true
			if w.FallbackReason == "" {
				w.FallbackReason = "quality"
			}
			if route.Strategy == policy.StrategyCascade {
				withDraft(w, res.Content, q.Reason)
			}
			w.Step++
			w.StepAttempts = 1
			w.Current = nil
			// Straight to the next executor: the router has nothing to decide.
			t := w.Target()
			return g.pub.PublishWork(ctx, natsx.ExecSubject(t.Vendor), w.Key+":exec:"+strconv.Itoa(w.AttemptNumber()), w)
		case onFail == policy.OnQualityDegrade:
			g.verdicts.WithLabelValues("degraded").Inc()
			return g.finishOK(ctx, w, res, true, now)
		default:
			g.verdicts.WithLabelValues("rejected").Inc()
			return g.pub.FailRequest(ctx, w, envelope.CodeQualityRejected, "answer failed quality checks: "+q.Reason, false, now)
		}
	}
	if err := g.recordAttempt(ctx, w, last, res); err != nil {
		return err
	}
	g.verdicts.WithLabelValues("passed").Inc()
	return g.finishOK(ctx, w, res, v.Truncated, now)
}

// hedgeBranch finishes a hedged request with the first acceptable answer.
// A later answer (the loser) is billed but not replied; a failing answer
// goes to the router as this branch's failure.
func (g *Gate) hedgeBranch(ctx context.Context, w *envelope.Work, last *envelope.AttemptResult, res *envelope.Result, v Verdict, now time.Time) error {
	if !v.Quality.Passed {
		last.Outcome = envelope.OutcomeQualityFailed
		if err := g.recordAttempt(ctx, w, last, res); err != nil {
			return err
		}
		res.ErrorClass, res.Retryable = "quality", true
		return g.pub.PublishWork(ctx, natsx.SubjectEscalations, w.Key+":escalate:"+strconv.Itoa(last.Attempt), w)
	}
	if err := g.recordAttempt(ctx, w, last, res); err != nil {
		return err
	}
	if g.d.Hedges == nil {
		return g.finishOK(ctx, w, res, v.Truncated, now)
	}
	won, err := g.d.Hedges.Win(ctx, w.Key, w.Branch)
	if err != nil {
		return pipeline.Transient(err, 0)
	}
	if !won {
		g.verdicts.WithLabelValues("hedge_lost").Inc()
		return nil
	}
	g.verdicts.WithLabelValues("hedge_won").Inc()
	return g.finishOK(ctx, w, res, v.Truncated, now)
}

// withDraft gives the next model of a cascade the rejected draft and why it
// was rejected, so it improves on it rather than starting over.
func withDraft(w *envelope.Work, draft, reason string) {
	w.Request.Messages = append(w.Request.Messages,
		envelope.Message{Role: "assistant", Content: draft},
		envelope.Message{Role: "user", Content: "The answer above was rejected by a quality check (" + reason + "). Write a corrected answer that passes it."},
	)
}

func (g *Gate) finishOK(ctx context.Context, w *envelope.Work, res *envelope.Result, degraded bool, now time.Time) error {
	t := w.Target()
	r := stage.ReplyFor(w, now)
	r.Status = envelope.StatusOK
	r.Content, r.FinishReason = res.Content, res.FinishReason
	r.Vendor, r.Model = t.Vendor, t.Model
	r.Degraded = degraded
	for _, a := range w.Attempts {
		r.Usage.Add(a.Usage)
	}
	if err := g.pub.Finish(ctx, w, r, now); err != nil {
		return err
	}
	if g.d.Cache != nil && w.CacheKey != "" && !degraded {
		// Best effort: a failed store only costs a future hit.
		if err := g.d.Cache.Put(ctx, w.CacheKey, respcache.EntryFromReply(r), time.Duration(w.CacheTTLMS)*time.Millisecond); err != nil {
			g.d.Log.Debug().Err(err).Str("request_id", w.Request.ID).Msg("answer not cached")
		}
	}
	return nil
}

// recordAttempt publishes the attempt's telemetry event; its id is the
// attempt id, so a redelivered result is stored once.
func (g *Gate) recordAttempt(ctx context.Context, w *envelope.Work, a *envelope.AttemptResult, res *envelope.Result) error {
	ev := &envelope.AttemptEvent{
		RequestID:     w.Request.ID,
		AttemptID:     envelope.AttemptID(w.Key, a.Attempt),
		Attempt:       a.Attempt,
		TS:            res.StartedAt,
		Tenant:        w.Request.Tenant,
		UserHash:      stage.HashUser(w.Request.Tenant, w.Request.User),
		EndpointTag:   w.Request.EndpointTag,
		PromptVersion: w.Request.PromptVersion,
		Environment:   w.Request.Environment,
		Route:         w.Route,
		Strategy:      w.Strategy,
		Vendor:        a.Vendor,
		Model:         a.Model,
		Outcome:       a.Outcome,
		ErrorClass:    a.ErrorClass,
		HTTPStatus:    a.HTTPStatus,
		CostUSD:       a.CostUSD,
		PriceKnown:    res.PriceKnown,
		LatencyMS:     a.LatencyMS,
		Hedged:        w.Hedged,
		TraceID:       stage.TraceID(w.TraceParent),
	}
	ev.SetUsage(a.Usage)
	return g.pub.Publish(ctx, natsx.SubjectAttempt, ev.AttemptID, ev, nats.Header{natsx.HeaderTraceParent: []string{w.TraceParent}})
}
