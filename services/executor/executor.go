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
	"strings"
	"sync"
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
	// DirectGate hands each result to a gate directly (llm.gate.judge,
	// handoff.go) and to llm.results only when no gate stores its verdict
	// within GateTimeout.
	DirectGate  bool          `envconfig:"DIRECT_GATE" default:"true"`
	GateTimeout time.Duration `envconfig:"GATE_TIMEOUT" default:"2s"`
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
	errs = append(errs, natsx.ValidateAckWait("SWITCHYARD_EXECUTOR_ACK_WAIT", c.AckWait))
	if c.DefaultTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_DEFAULT_TIMEOUT: must be positive"))
	}
	if c.DefaultMaxConcurrency < 1 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_DEFAULT_MAX_CONCURRENCY: must be at least 1"))
	}
	if c.DirectGate && c.GateTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_EXECUTOR_GATE_TIMEOUT: must be positive"))
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
	pub     pipeline.Publisher
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	cost    *prometheus.CounterVec
	skipped *prometheus.CounterVec
	handled atomic.Int64
	// toGate hands results to a gate directly (handoff.go).
	toGate *pipeline.DirectHandOff
}

// Handled is how many vendor calls this replica has made.
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
	e := &Executor{cfg: cfg, d: d, vendor: v, pub: pipeline.Publisher{JS: d.JS, NC: d.NC},
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_calls_total", Help: "Vendor calls by vendor, model and outcome class."}, []string{"vendor", "model", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_executor_vendor_latency_seconds", Help: "Vendor call latency.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"vendor", "model"}),
	}
	e.cost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_cost_usd_total", Help: "Vendor spend priced from the catalog, by vendor and model."}, []string{"vendor", "model"})
	e.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_skipped_total",
		Help: "Targets not called (open circuit, rpm/tpm saturation, deadline, hedge already won), by reason: not vendor failures."}, []string{"vendor", "model", "reason"})
	handoffs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_executor_gate_handoffs_total",
		Help: "Results handed to the gate, by path: direct (a gate stored the verdict) or stream (llm.results)."}, []string{"path"})
	var err error
	if handoffs, err = obs.Register(d.Metrics, handoffs); err != nil {
		return nil, err
	}
	e.toGate = &pipeline.DirectHandOff{NC: d.NC, Subject: natsx.SubjectGateJudge, Enabled: cfg.DirectGate, Timeout: cfg.GateTimeout, Paths: handoffs}
	if e.skipped, err = obs.Register(d.Metrics, e.skipped); err != nil {
		return nil, err
	}
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

func (e *Executor) maxConcurrency() int { return maxConcurrency(e.cfg, e.vendor) }

// maxConcurrency is the vendor's in-flight limit across all replicas.
func maxConcurrency(cfg Config, v policy.Vendor) int {
	if v.MaxConcurrency > 0 {
		return v.MaxConcurrency
	}
	return cfg.DefaultMaxConcurrency
}

// ConsumerName is the durable consumer on LLM_PIPELINE that every executor
// replica of vendor shares (autoscalers watch its pending count).
func ConsumerName(vendor string) string { return "exec-" + vendor }

// ConsumerConfig is shared by every replica of this vendor: MaxAckPending
// is the vendor-wide concurrency limit, since the server counts unacked
// messages across all of the consumer's subscribers.
func (e *Executor) ConsumerConfig() jetstream.ConsumerConfig {
	return ConsumerConfigFor(e.cfg, e.vendor)
}

// ConsumerConfigFor is the consumer of cfg.Vendor's executors, v being
// that vendor in the policy: computed without an adapter or the vendor's
// key, so `switchyard provision` creates it as the executors would.
func ConsumerConfigFor(cfg Config, v policy.Vendor) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(cfg.Vendor),
		Description:   "executors of vendor " + cfg.Vendor,
		FilterSubject: natsx.ExecSubject(cfg.Vendor),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: maxConcurrency(cfg, v),
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
	// Not retried in place: a second run of a handler that called the
	// vendor would call it again; the executor retries its own publishes
	// in place instead (publishUntil), and a redelivery first asks whether
	// the request is answered.
	h := pipeline.RequestStage(e.d.Log, e.Handle, pipeline.HandToRouter(e.pub, natsx.StageExecutor, e.d.Log), e.cfg.MaxDeliver, 0, false)
	return pipeline.Run(ctx, e.d.Log, cons, h, pipeline.RunOptions{Concurrency: conc, Grace: e.timeout() + 5*time.Second, Stage: natsx.StageExecutor, Metrics: e.d.Metrics})
}

func (e *Executor) timeout() time.Duration {
	if e.vendor.Timeout.Duration > 0 {
		return e.vendor.Timeout.Duration
	}
	return e.cfg.DefaultTimeout
}

// Handle performs one attempt. The vendor's answer or failure goes to a
// gate, directly (llm.gate.judge, handoff.go) or on llm.results; a target
// not called (Skipped) goes straight back to the router on llm.verdicts.
func (e *Executor) Handle(ctx context.Context, d *pipeline.Delivery) error {
	w, err := pipeline.DecodeWork(d.Data())
	if err != nil {
		return err
	}
	if t := w.Target(); t.Vendor != e.cfg.Vendor {
		return pipeline.Terminal("wrong_vendor", fmt.Errorf("work for %q on %q's queue", t.Vendor, e.cfg.Vendor))
	}
	if wait := w.NotBefore.Sub(e.d.Now()); wait > 0 {
		// A retry (or a hedge) the router scheduled: hand it back until it
		// is due. The vendor sees no call and the slot is free meanwhile.
		return d.NakWithDelay(wait)
	}
	keep := func(ctx context.Context) func() { return keepAlive(ctx, d, e.cfg.AckWait/3) }
	log := pipeline.LazyRequestLogger(e.d.Log, w)
	// The started event is retried under its id too: handed back after a
	// lost ack, the work would be called under a new attempt id and the
	// ledger would keep a started row for a call never made.
	// It is bounded by the request's deadline: past it the call cannot be
	// made, so the work goes back (a stream leader cut off holds a publish
	// for the client's whole timeout).
	emit := func(o pipeline.Outbound) error {
		ectx, cancel := withinRequest(ctx, w)
		defer cancel()
		return e.publishUntil(ectx, d, log, "attempt started", []pipeline.Outbound{o})
	}
	if d.NumDelivered() > 1 {
		answered, err := e.answered(ctx, w)
		if err != nil {
			return err
		}
		if answered {
			// The first delivery's hand-off went through and the request is
			// answered; only its ack was lost (a NATS node died with it).
			t := w.Target()
			e.skipped.WithLabelValues(t.Vendor, t.Model, "answered").Inc()
			log().Info().Uint64("deliveries", d.NumDelivered()).Msg("redelivered work of an answered request dropped; vendor not called again")
			return nil
		}
	}
	outs, err := e.attempt(ctx, w, int(d.NumDelivered()), keep, emit)
	if err != nil {
		return err
	}
	// The vendor may have been called: the hand-off goes on through a
	// shutdown rather than redeliver the message, which would call it again.
	if e.handToGate(context.WithoutCancel(ctx), d, log, outs) {
		return nil
	}
	return e.publishUntil(context.WithoutCancel(ctx), d, log, "result", outs)
}

// publishUntil publishes outs, again under the same message ids (the
// stream drops a copy it already holds), until they are stored, ctx is done
// or handOffFor has passed, keeping d alive meanwhile (a try may outlast
// AckWait). A lost ack must not become a redelivery: that would call the
// vendor again. The retries outlast a JetStream leader election (4 to 9 s).
func (e *Executor) publishUntil(ctx context.Context, d *pipeline.Delivery, log func() *zerolog.Logger, what string, outs []pipeline.Outbound) error {
	stop := keepAlive(ctx, d, e.cfg.AckWait/3)
	defer stop()
	deadline := time.Now().Add(handOffFor)
	for try := 1; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, publishTry)
		err := e.pub.Send(pctx, outs)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		log().Warn().Err(err).Str("publish", what).Int("try", try).Msg("hand-off failed; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(time.Duration(try)*250*time.Millisecond, 2*time.Second)):
		}
	}
}

// answered reports whether this run of the request has its reply stored in
// LLM_REPLIES: the reply's id carries the work's delivery key, so a reply
// of an earlier run (before a `dlq replay`) does not count. A custom
// reply_to outside llm.replies is not stored and never counts. While
// JetStream is unavailable or does not answer in time (a leader election)
// the answer is unknown: a transient error, so the work waits instead of
// calling the vendor; any other failed lookup calls it, as before.
func (e *Executor) answered(ctx context.Context, w *envelope.Work) (bool, error) {
	subject := w.Request.ReplySubject()
	if e.d.JS == nil || !strings.HasPrefix(subject, natsx.SubjectRepliesPrefix) {
		return false, nil
	}
	// The stream's leader: a follower that has not applied the reply yet
	// would say it is not there, and the vendor would be called again.
	id, _, err := pipeline.LastStoredMsgID(ctx, e.d.JS, natsx.StreamReplies, subject)
	if err != nil {
		return false, pipeline.Transient(fmt.Errorf("is the request answered: %w", err), 0)
	}
	return id == w.Key+":reply", nil
}

// withinRequest bounds ctx by w's request deadline, when it has one.
func withinRequest(ctx context.Context, w *envelope.Work) (context.Context, context.CancelFunc) {
	if w.Deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, w.Deadline)
}

// handOffFor bounds the retries of a hand-off (publishUntil); publishTry
// bounds one try.
const (
	handOffFor = 30 * time.Second
	publishTry = 5 * time.Second
)

// attempt calls the vendor for w's current target, unless it must not be
// called (another hedge branch won, a deadline passed, an open circuit, the
// vendor at its rpm/tpm limit). It returns the messages to publish: the
// result for the gate, or the skip for the router. delivery is the
// message's delivery count: a call repeated after a redelivery (this
// executor died mid-call) gets its own attempt id, so both calls show. emit
// publishes the attempt-started event before the vendor is called; keep
// keeps the message alive during the call.
func (e *Executor) attempt(ctx context.Context, w *envelope.Work, delivery int, keep func(context.Context) func(), emit func(pipeline.Outbound) error) ([]pipeline.Outbound, error) {
	t := w.Target()
	now := e.d.Now()
	if w.Hedged && e.d.Hedges != nil {
		if won, err := e.d.Hedges.Won(ctx, w.Key); err == nil && won {
			return e.skip(w, t, envelope.SkipHedgeWon, "another branch answered", 0)
		}
	}
	if !w.Deadline.IsZero() && !now.Before(w.Deadline) {
		return e.skip(w, t, envelope.SkipDeadline, "request deadline passed before the call", 0)
	}
	if !w.AttemptDeadline.IsZero() && !now.Before(w.AttemptDeadline) {
		return e.skip(w, t, envelope.SkipStale, "the attempt's deadline passed while it waited in the queue", 0)
	}
	if why := e.starved(w, now); why != "" {
		return e.skip(w, t, envelope.SkipStale, why, 0)
	}
	permits, why := e.permit(ctx, t)
	if why != "" {
		return e.skip(w, t, envelope.SkipCircuitOpen, why, 0)
	}
	if sat := e.acquire(ctx, w, t); sat != nil {
		e.release(permits)
		return e.skip(w, t, envelope.SkipSaturated, sat.Error(), sat.RetryAfter)
	}
	if !w.AttemptDeadline.IsZero() && !e.d.Now().Before(w.AttemptDeadline) {
		// The breaker and limiter buckets answered slowly (a NATS node
		// partitioned): still not the vendor's business.
		e.release(permits)
		return e.skip(w, t, envelope.SkipStale, "the attempt's deadline passed before the call could start", 0)
	}
	if why := e.starved(w, e.d.Now()); why != "" {
		e.release(permits)
		return e.skip(w, t, envelope.SkipStale, why, 0)
	}
	id := envelope.AttemptID(w.Key, w.AttemptNumber())
	if delivery > 1 {
		id += "@" + strconv.Itoa(delivery)
	}
	a := envelope.AttemptResult{Attempt: w.AttemptNumber(), Vendor: t.Vendor, Model: t.Model, Outcome: envelope.OutcomeStarted}
	started := pipeline.AttemptEventFor(w, &a, &envelope.Result{AttemptID: id, StartedAt: now.UTC()})
	if o, err := pipeline.AttemptOut(started, w.TraceParent); err != nil {
		e.release(permits)
		return nil, err
	} else if err := emit(o); err != nil {
		e.release(permits)
		return nil, err
	}
	// The started row is stored: the vendor must now be called, or the
	// ledger keeps a row for a call never made. A lost ack retried may have
	// used up the attempt's budget, so the budget runs from the stored
	// start instead, within the request's deadline.
	budget := w.AttemptDeadline
	if late := e.d.Now().Sub(now); late > 0 && !budget.IsZero() {
		w.AttemptDeadline = budget.Add(late)
		if !w.Deadline.IsZero() && w.AttemptDeadline.After(w.Deadline) {
			w.AttemptDeadline = w.Deadline
		}
	}
	res, health := e.call(ctx, w, t, keep)
	w.AttemptDeadline = budget
	// The finished row must land in the started row's partition (by month
	// of ts) to replace it: both carry the same timestamp.
	res.AttemptID, res.StartedAt = id, now.UTC()
	e.record(permits, t, res, health)
	e.handled.Add(1)
	w.Current = res
	a.Outcome = envelope.OutcomeOK
	if !res.OK() {
		a.Outcome = envelope.OutcomeError
	}
	a.ErrorClass, a.HTTPStatus, a.LatencyMS, a.Usage, a.CostUSD = res.ErrorClass, res.HTTPStatus, res.LatencyMS, res.Usage, res.CostUSD
	a.TTFTMS = res.TTFTMS
	w.Attempts = append(w.Attempts, a)
	w.Calls = append(w.Calls, envelope.Call{AttemptID: id, StartedAt: res.StartedAt})
	o, err := pipeline.WorkOut(natsx.SubjectResults, outID(w), w)
	if err != nil {
		return nil, err
	}
	return []pipeline.Outbound{o}, nil
}

// skip reports a target not called: not a vendor failure, so no attempt,
// no breaker count and no error metric, only the skipped counter.
func (e *Executor) skip(w *envelope.Work, t envelope.Target, reason, msg string, retryAfter time.Duration) ([]pipeline.Outbound, error) {
	e.skipped.WithLabelValues(t.Vendor, t.Model, reason).Inc()
	log := pipeline.RequestLogger(e.d.Log, w)
	log.Debug().Str("vendor", t.Vendor).Str("model", t.Model).Str("reason", reason).Msg("target skipped")
	w.Current = &envelope.Result{Skipped: true, ErrorClass: reason, ErrorMessage: msg, Retryable: true,
		RetryAfterMS: retryAfter.Milliseconds(), StartedAt: e.d.Now().UTC()}
	o, err := pipeline.WorkOut(natsx.SubjectVerdicts, outID(w), w)
	if err != nil {
		return nil, err
	}
	return []pipeline.Outbound{o}, nil
}

// outID is the message id of what the executor hands on for one dispatch,
// result or skip alike: both subjects are in LLM_PIPELINE, so once one is
// published, whatever a redelivery of the same dispatch produces (a second
// call's result, or a skip) is dropped as a duplicate and the router never
// hears of one dispatch twice. The second call still shows in the ledger
// through its own started event.
func outID(w *envelope.Work) string {
	return w.Key + ":out:" + strconv.Itoa(w.Branch) + ":" + strconv.Itoa(w.Dispatch)
}

// BreakerKeys names the breakers guarding a target: its vendor's and its
// model's.
func BreakerKeys(t envelope.Target) []string { return []string{t.Vendor, t.Vendor + "/" + t.Model} }

// permit asks the shared breakers of the vendor (every model down: an
// outage) and of the model (one model failing) to let the call through. It
// returns why not when either refuses.
func (e *Executor) permit(ctx context.Context, t envelope.Target) ([]breaker.Permit, string) {
	if e.d.Breakers == nil {
		return nil, ""
	}
	var permits []breaker.Permit
	for _, key := range BreakerKeys(t) {
		p, err := e.d.Breakers.Allow(ctx, key)
		if err != nil || !p.Allowed() {
			e.release(permits)
			if err != nil {
				return nil, "circuit state unavailable: " + err.Error()
			}
			return nil, "circuit " + key + " open"
		}
		permits = append(permits, p)
	}
	return permits, ""
}

// release gives permits back unused.
func (e *Executor) release(permits []breaker.Permit) {
	if len(permits) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range permits {
		if err := e.d.Breakers.Release(ctx, p); err != nil {
			e.d.Log.Warn().Err(err).Str("breaker", p.Key()).Msg("breaker permit not released")
		}
	}
}

// record tells the breakers how the call went: retryable failures
// (timeouts included) count against the vendor, terminal ones (a bad
// request), cancelled hedge branches and failures of our own side (health
// false, see call) say nothing about its health. The context is made
// after the call, however long it took, so the outcome is always recorded.
func (e *Executor) record(permits []breaker.Permit, t envelope.Target, res *envelope.Result, health bool) {
	if len(permits) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range permits {
		var err error
		switch {
		case res.OK():
			err = e.d.Breakers.Record(ctx, p, true)
		case res.Retryable && health:
			err = e.d.Breakers.Record(ctx, p, false)
		default:
			err = e.d.Breakers.Release(ctx, p)
		}
		if err != nil {
			e.d.Log.Warn().Err(err).Str("vendor", t.Vendor).Str("model", t.Model).Msg("breaker outcome not recorded")
		}
	}
}

// acquire takes a slot from the vendor's shared rpm/tpm window. It returns
// the saturation when there is none, nil when the call may go ahead. If the
// limiter itself fails (NATS trouble) the call goes ahead: the consumer's
// MaxAckPending still bounds concurrency.
func (e *Executor) acquire(ctx context.Context, w *envelope.Work, t envelope.Target) *limiter.Saturated {
	if e.d.Limiter == nil {
		return nil
	}
	callID := w.Key + ":" + strconv.Itoa(w.Branch) + ":" + strconv.Itoa(w.Dispatch)
	err := e.d.Limiter.Acquire(ctx, t.Vendor, w.Class.TokenEstimate, callID)
	var sat *limiter.Saturated
	switch {
	case err == nil:
		return nil
	case errors.As(err, &sat):
		return sat
	default:
		log := pipeline.RequestLogger(e.d.Log, w)
		log.Warn().Err(err).Str("vendor", t.Vendor).Msg("limiter unavailable; calling without it")
		return nil
	}
}

// ClassCancelled is the error class of a hedge branch's call cut short
// because the other branch answered first.
const ClassCancelled = "cancelled"

// fairBudget is the least time a call must have had (or the vendor's own
// timeout, when shorter) for its timeout to count against the vendor: the
// router gives every attempt at least min(remaining, 2 s), so a call left
// less had its budget eaten on our side (a queue, a slow NATS publish).
const fairBudget = 2 * time.Second

// starved says why work must not be called now: its attempt budget was
// eaten on our side (a backlog, a stalled consumer after a partition) down
// to less than a fair budget, while the request's deadline would allow a
// fresh one. Such a call would time out on our account and fail the
// request; skipped as stale, the router offers it again with a fresh
// budget. Work whose request deadline is what binds is called with the
// time it has: a re-offer could not give it more.
func (e *Executor) starved(w *envelope.Work, now time.Time) string {
	if w.AttemptDeadline.IsZero() || (!w.Deadline.IsZero() && !w.AttemptDeadline.Before(w.Deadline)) {
		return ""
	}
	// Half the fair budget: the router gives every attempt at least
	// min(vendor timeout, 2 s) when the deadline allows, and fresh work
	// arrives with a little less than that.
	left := w.AttemptDeadline.Sub(now)
	if left >= min(e.timeout(), fairBudget)/2 {
		return ""
	}
	return fmt.Sprintf("the attempt had %s of its budget left after waiting in the queue, too little for a fair call", left.Round(time.Millisecond))
}

// errOurSide marks a call failed by our side (a delta not publishable).
var errOurSide = errors.New("failed on Switchyard's side")

// call performs the vendor request within the attempt's time budget:
// min(vendor timeout, attempt deadline, request deadline). health is false
// when a failure says nothing about the vendor, only about us: the
// executor stopping, NATS refusing a delta, or a timeout of a call that
// was left less than a fair budget (fairBudget) by the time it started.
func (e *Executor) call(ctx context.Context, w *envelope.Work, t envelope.Target, keep func(context.Context) func()) (res *envelope.Result, health bool) {
	now := e.d.Now()
	timeout := e.timeout()
	for _, dl := range []time.Time{w.AttemptDeadline, w.Deadline} {
		if !dl.IsZero() {
			timeout = min(timeout, dl.Sub(now))
		}
	}
	// A streamed call's attempt budget bounds its silences instead (see
	// quietWatch): the call itself may last to the request's deadline.
	limit := timeout
	if e.streams(w) {
		limit = e.timeout()
		if !w.Deadline.IsZero() {
			limit = min(limit, w.Deadline.Sub(now))
		}
	}
	cctx, cancel := context.WithTimeout(ctx, max(limit, 0))
	defer cancel()
	var quiet *quietWatch
	if e.streams(w) {
		cctx, quiet = watchQuiet(cctx, max(timeout, 0))
		defer quiet.stop()
	}
	if w.Hedged && e.d.Hedges != nil {
		// The losing branch of a hedged request is cancelled mid-call.
		var stop func()
		cctx, stop = e.d.Hedges.CancelWhenWon(cctx, w.Key)
		defer stop()
	}
	if keep != nil {
		stop := keep(cctx)
		defer stop()
	}

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
	resp, sc, err := e.complete(cctx, w, req, redactor, quiet.touch)
	elapsed := e.d.Now().Sub(start)
	e.latency.WithLabelValues(t.Vendor, t.Model).Observe(elapsed.Seconds())

	res = &envelope.Result{LatencyMS: elapsed.Milliseconds(), StartedAt: start.UTC()}
	defer sc.fill(res, w, start)
	given := limit // the time the vendor had
	if quiet.fired() {
		given = timeout
	}
	if err != nil && quiet.fired() {
		err = &provider.Error{Class: provider.ClassTimeout, Retryable: true,
			Message: fmt.Sprintf("the stream sent nothing for %s, the attempt's time budget", timeout.Round(time.Millisecond))}
	} else if err != nil && cctx.Err() == context.Canceled && ctx.Err() == nil {
		// Cut short because another hedge branch answered: not the
		// vendor's fault, so no breaker counts it.
		res.ErrorClass, res.ErrorMessage = ClassCancelled, "cancelled: another branch answered"
		e.calls.WithLabelValues(t.Vendor, t.Model, ClassCancelled).Inc()
		return res, false
	}
	if err != nil {
		ve := provider.AsError(err)
		ownDeadline := errors.Is(cctx.Err(), context.DeadlineExceeded)
		if ownDeadline {
			// Our time budget ran out: a timeout, whatever the transport said.
			ve = &provider.Error{Class: provider.ClassTimeout, Retryable: true, Message: fmt.Sprintf("no answer within %s: %s", limit.Round(time.Millisecond), ve.Message)}
		}
		var ours string
		switch {
		case ctx.Err() != nil:
			ours = "the executor stopped the call"
		case errors.Is(err, errOurSide):
			ours = "a delta could not be published"
		case (ownDeadline || quiet.fired()) && given < min(e.timeout(), fairBudget):
			ours = "the call was left " + max(given, 0).Round(time.Millisecond).String() + " of its budget"
		}
		health = ours == ""
		res.ErrorClass, res.HTTPStatus, res.Retryable = string(ve.Class), ve.HTTPStatus, ve.Retryable
		res.ErrorMessage, res.RetryAfterMS = ve.Message, ve.RetryAfter.Milliseconds()
		e.calls.WithLabelValues(t.Vendor, t.Model, string(ve.Class)).Inc()
		log := pipeline.RequestLogger(e.d.Log, w)
		log.Debug().Str("vendor", t.Vendor).Str("model", t.Model).Str("class", string(ve.Class)).Int("http_status", ve.HTTPStatus).Str("our_side", ours).Msg("vendor call failed")
		return res, health
	}
	res.Content, res.FinishReason, res.Usage, res.HTTPStatus = resp.Content, resp.FinishReason, resp.Usage, resp.HTTPStatus
	if redactor != nil {
		res.Content = redactor.Restore(res.Content)
	}
	res.CostUSD, res.PriceKnown = pricing.Cost(e.d.Policy.Current(), t.Vendor, t.Model, resp.Usage)
	e.calls.WithLabelValues(t.Vendor, t.Model, "ok").Inc()
	e.cost.WithLabelValues(t.Vendor, t.Model).Add(res.CostUSD)
	return res, true
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
// and get redelivered to another replica while still running. A timer,
// not a goroutine with a ticker: most calls end before the first tick, and
// this runs for every call and hand-off.
func keepAlive(ctx context.Context, d *pipeline.Delivery, every time.Duration) (stop func()) {
	if every <= 0 {
		every = time.Second
	}
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		if ctx.Err() != nil {
			return
		}
		_ = d.InProgress()
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(every)
		}
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
}
