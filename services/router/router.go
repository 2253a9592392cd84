// Package router owns the routing decision. It sends each classified request
// to the first target of its route's chain and, when the gate reports a
// failed attempt, decides what happens next: the next target for a
// retryable failure, an immediate error reply for a terminal one, and an
// all_vendors_failed reply plus a dead letter when the chain is exhausted.
// The routing state travels in the work envelope, so replicas share nothing.
package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/breaker"
	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/hedge"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/respcache"
	"github.com/switchyard-llm/switchyard/pkg/spend"
	"github.com/switchyard-llm/switchyard/pkg/stage"
)

// Config tunes the router consumer (env prefix SWITCHYARD_ROUTER_).
type Config struct {
	Consumer      string        `envconfig:"CONSUMER" default:"router"`
	Concurrency   int           `envconfig:"CONCURRENCY" default:"64"`
	MaxDeliver    int           `envconfig:"MAX_DELIVER" default:"5"`
	AckWait       time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	MaxAckPending int           `envconfig:"MAX_ACK_PENDING" default:"2048"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Consumer == "" {
		errs = append(errs, errors.New("SWITCHYARD_ROUTER_CONSUMER: required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("SWITCHYARD_ROUTER_CONCURRENCY: must be at least 1"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New("SWITCHYARD_ROUTER_MAX_DELIVER: must be at least 1"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("SWITCHYARD_ROUTER_ACK_WAIT: must be at least 1s"))
	}
	if c.MaxAckPending < c.Concurrency {
		errs = append(errs, errors.New("SWITCHYARD_ROUTER_MAX_ACK_PENDING: must be at least CONCURRENCY"))
	}
	return errors.Join(errs...)
}

// Deps are the router's collaborators.
type Deps struct {
	Log    zerolog.Logger
	NC     *nats.Conn
	JS     jetstream.JetStream
	Policy policy.Source
	// Breakers, when set, let the router skip a target whose circuit is
	// open without a round trip to its executor.
	Breakers *breaker.Breakers
	// Hedges coordinates the branches of hedged requests; without it the
	// hedged strategy behaves as an ordered fallback.
	Hedges *hedge.Tracker
	// Budgets, when set, hold each request's cost estimate against its
	// tenant's budgets before any vendor is called.
	Budgets *budget.Budgets
	// Cache, when set, answers repeated requests on routes with a cache TTL
	// without calling a vendor.
	Cache   *respcache.Cache
	Now     func() time.Time
	Metrics prometheus.Registerer
}

// Router is the routing stage.
type Router struct {
	cfg       Config
	d         Deps
	seen      *observed
	hedging   *hedge.Budget
	pub       stage.Publisher
	decisions *prometheus.CounterVec
}

// New builds the stage.
func New(cfg Config, d Deps) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Policy == nil {
		return nil, errors.New("router: JS and Policy are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	r := &Router{cfg: cfg, d: d, seen: newObserved(), hedging: hedge.NewBudget(), pub: stage.Publisher{JS: d.JS, NC: d.NC, OnFinish: spend.Settler(d.Budgets)},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_router_decisions_total", Help: "Routing decisions by kind."}, []string{"decision"}),
	}
	if d.Metrics != nil {
		if err := d.Metrics.Register(r.decisions); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ConsumerConfig reads new requests and failed attempts.
func (r *Router) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        r.cfg.Consumer,
		Description:    "router: dispatches classified requests and failed attempts",
		FilterSubjects: []string{natsx.SubjectClassified, natsx.SubjectEscalations},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.cfg.AckWait,
		MaxDeliver:     r.cfg.MaxDeliver,
		MaxAckPending:  r.cfg.MaxAckPending,
	}
}

// Run consumes until ctx is done.
func (r *Router) Run(ctx context.Context) error {
	cons, err := r.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamPipeline, r.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("router consumer: %w", err)
	}
	if err := r.observe(ctx); err != nil {
		return err
	}
	h := pipeline.Stage(r.d.Log, r.Handle, stage.WorkDeadLetter(r.pub, natsx.StageRouter, r.d.Now), r.cfg.MaxDeliver, 10*time.Second)
	return pipeline.Run(ctx, r.d.Log, cons, h, pipeline.RunOptions{Concurrency: r.cfg.Concurrency})
}

// Handle routes one work envelope.
func (r *Router) Handle(ctx context.Context, d *pipeline.Delivery) error {
	w, err := stage.DecodeWork(d.Data())
	if err != nil {
		return err
	}
	now := r.d.Now()
	if d.Msg.Subject() == natsx.SubjectClassified {
		w.Step = 0
		if hit, err := r.fromCache(ctx, w, now); hit || err != nil {
			return err
		}
		if refused, err := r.reserve(ctx, w, now); refused || err != nil {
			return err
		}
		if refused, err := r.applyStrategy(ctx, w, now); refused || err != nil {
			return err
		}
		if hedged, err := r.dispatchHedged(ctx, w, now); hedged || err != nil {
			return err
		}
		return r.dispatch(ctx, w, now)
	}
	return r.afterFailure(ctx, w, now)
}

// fromCache answers from the response cache when the route caches and the
// request may be cached; otherwise it marks the work so the gate stores a
// passing answer. A cache that cannot be read is a miss, never an error.
func (r *Router) fromCache(ctx context.Context, w *envelope.Work, now time.Time) (bool, error) {
	if r.d.Cache == nil {
		return false, nil
	}
	route, ok := r.d.Policy.Current().Route(w.Route)
	if !ok || route.Cache.TTL.Duration <= 0 || !r.d.Cache.Eligible(&w.Request, w.Class.Sensitive, route.Cache.AllowSensitive) {
		return false, nil
	}
	key := respcache.Key(&w.Request, route.Name, respcache.Fingerprint(route))
	entry, hit, err := r.d.Cache.Get(ctx, key)
	if err != nil {
		r.d.Log.Warn().Err(err).Msg("response cache unavailable; treating as a miss")
	}
	if !hit {
		w.CacheKey, w.CacheTTLMS = key, route.Cache.TTL.Milliseconds()
		return false, nil
	}
	r.decisions.WithLabelValues("cache_hit").Inc()
	reply := entry.Reply(&w.Request, w.Route)
	reply.LatencyMS = now.Sub(w.ReceivedAt).Milliseconds()
	return true, r.pub.Finish(ctx, w, &reply, now)
}

// hedgeBranches is how many branches a hedged request runs.
const hedgeBranches = 2

// hedgeAttemptBase numbers the hedge branch's attempts apart from the
// primary's, so their attempt ids never collide.
const hedgeAttemptBase = 100

// dispatchHedged sends a hedged route's request to its first two targets:
// the primary now and the hedge after the route's delay. The first
// acceptable answer wins (the gate decides), a hedge not yet started when
// the primary answers is cancelled, and both calls are billed. A tenant's
// hedges are capped at the route's max_ratio of its requests.
func (r *Router) dispatchHedged(ctx context.Context, w *envelope.Work, now time.Time) (bool, error) {
	route, ok := r.d.Policy.Current().Route(w.Route)
	if !ok || route.Strategy != policy.StrategyHedged || r.d.Hedges == nil || len(w.Chain) < 2 {
		return false, nil
	}
	if !r.hedging.Allow(w.Request.Tenant, route.Hedge.MaxRatio, now) {
		r.decisions.WithLabelValues("hedge_over_budget").Inc()
		return false, nil // within budget only: this one runs as a plain fallback
	}
	r.decisions.WithLabelValues("hedged").Inc()
	primary, second := *w, *w
	primary.Hedged, primary.Branch, primary.Step = true, 0, 0
	second.Hedged, second.Branch, second.Step, second.AttemptBase = true, 1, 1, hedgeAttemptBase
	second.NotBefore = now.Add(route.Hedge.After.Duration)
	if err := r.dispatch(ctx, &primary, now); err != nil {
		return true, err
	}
	return true, r.dispatch(ctx, &second, now)
}

// hedgeFailed records a failed branch. The request fails only when every
// branch has failed and none has answered.
func (r *Router) hedgeFailed(ctx context.Context, w *envelope.Work, now time.Time) error {
	if won, err := r.d.Hedges.Won(ctx, w.Key); err != nil {
		return pipeline.Transient(err, 0)
	} else if won {
		return nil
	}
	all, err := r.d.Hedges.Fail(ctx, w.Key, w.Branch, hedgeBranches)
	if err != nil {
		return pipeline.Transient(err, 0)
	}
	if !all {
		return nil // the other branch may still answer
	}
	r.decisions.WithLabelValues("exhausted").Inc()
	w.Step = len(w.Chain)
	msg := "both branches of the hedged request failed: " + exhaustedMessage(w)
	if err := r.pub.DeadLetterRequest(ctx, natsx.StageRouter, envelope.CodeAllVendorsFailed, msg, w); err != nil {
		return err
	}
	return r.pub.FailRequest(ctx, w, envelope.CodeAllVendorsFailed, msg, true, now)
}

// applyStrategy orders the chain by the route's strategy and the request's
// limits; a request no target qualifies for is refused as policy_blocked.
func (r *Router) applyStrategy(ctx context.Context, w *envelope.Work, now time.Time) (bool, error) {
	pol := r.d.Policy.Current()
	route, ok := pol.Route(w.Route)
	if !ok {
		return false, nil
	}
	chain, why := plan(pol, route, w, r.seen, defaultRand)
	if why != "" {
		r.decisions.WithLabelValues("policy_blocked").Inc()
		return true, r.pub.FailRequest(ctx, w, envelope.CodePolicyBlocked, why, false, now)
	}
	w.Chain, w.Strategy = chain, route.Strategy
	return false, nil
}

// observe feeds the latency-aware and least-loaded strategies: attempt
// telemetry (seen on core NATS as it is published) gives each model's
// observed latency, and the executors' consumers give each vendor's
// in-flight calls.
func (r *Router) observe(ctx context.Context) error {
	if r.d.NC == nil {
		return nil
	}
	sub, err := r.d.NC.Subscribe(natsx.SubjectAttempt, func(m *nats.Msg) {
		var ev envelope.AttemptEvent
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		switch ev.Outcome {
		case envelope.OutcomeOK:
			r.seen.addLatency(ev.Vendor, ev.Model, float64(ev.LatencyMS), r.d.Now())
			r.seen.addVerdict(ev.Vendor, ev.Model, false, r.d.Now())
		case envelope.OutcomeQualityFailed:
			r.seen.addVerdict(ev.Vendor, ev.Model, true, r.d.Now())
		}
	})
	if err != nil {
		return fmt.Errorf("router: observe attempts: %w", err)
	}
	go func() {
		defer func() { _ = sub.Unsubscribe() }()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for name := range r.d.Policy.Current().Vendors {
					c, err := r.d.JS.Consumer(ctx, natsx.StreamPipeline, "exec-"+name)
					if err != nil {
						continue
					}
					if info, err := c.Info(ctx); err == nil {
						r.seen.setInFlight(name, info.NumAckPending)
					}
				}
			}
		}
	}()
	return nil
}

// reserve holds the request's cost estimate against its tenant's budgets.
// Over budget, the request is refused (budget_exceeded / quota_exceeded)
// or, where the tenant's policy says so, moved to its cheaper route.
func (r *Router) reserve(ctx context.Context, w *envelope.Work, now time.Time) (refused bool, err error) {
	pol := r.d.Policy.Current()
	route, ok := pol.Route(w.Route)
	if !ok {
		return false, nil
	}
	err = spend.Reserve(ctx, r.d.Budgets, pol, route, w)
	var ref *spend.Refusal
	if errors.As(err, &ref) {
		tenant, _ := pol.Tenant(w.Request.Tenant)
		if cheaper, ok := pol.Route(tenant.DowngradeRoute); ok && tenant.OnExceeded == policy.OnExceededDowngrade && cheaper.Name != w.Route {
			r.decisions.WithLabelValues("budget_downgrade").Inc()
			w.Route, w.Strategy, w.Step, w.StepAttempts = cheaper.Name, cheaper.Strategy, 0, 0
			w.Chain = w.Chain[:0]
			for _, t := range cheaper.Chain {
				w.Chain = append(w.Chain, envelope.Target{Vendor: t.Vendor, Model: t.Model})
			}
			err = spend.Reserve(ctx, r.d.Budgets, pol, cheaper, w)
		}
	}
	if errors.As(err, &ref) {
		r.decisions.WithLabelValues(ref.Code).Inc()
		return true, r.pub.FailRequest(ctx, w, ref.Code, ref.Error(), false, now)
	}
	if err != nil {
		return false, pipeline.Transient(err, 0)
	}
	return false, nil
}

// afterFailure decides what follows a failed attempt.
func (r *Router) afterFailure(ctx context.Context, w *envelope.Work, now time.Time) error {
	res := w.Current
	if res == nil || res.OK() {
		return pipeline.Terminal("bad_escalation", errors.New("escalation without a failed result"))
	}
	if w.Hedged && r.d.Hedges != nil {
		return r.hedgeFailed(ctx, w, now)
	}
	last := w.Target()
	if !res.Retryable {
		r.decisions.WithLabelValues("terminal").Inc()
		code, msg := terminalCode(res, last)
		if code != envelope.CodeInvalidRequest && code != envelope.CodePayloadTooLarge {
			// A configuration problem (auth, unknown model): replayable once fixed.
			if err := r.pub.DeadLetterRequest(ctx, natsx.StageRouter, code, msg, w); err != nil {
				return err
			}
		}
		return r.pub.FailRequest(ctx, w, code, msg, false, now)
	}
	if res.ErrorClass == executorSaturated {
		if delay, ok := r.waitForSlot(w, res, now); ok {
			r.decisions.WithLabelValues("wait_saturated").Inc()
			w.NotBefore = now.Add(delay)
			w.StepAttempts-- // waiting for a slot is not a retry
			return r.dispatch(ctx, w, now)
		}
		r.decisions.WithLabelValues("spill_saturated").Inc()
	} else if delay, ok := r.retryDelay(w, res, now); ok {
		r.decisions.WithLabelValues("retry").Inc()
		w.NotBefore = now.Add(delay)
		return r.dispatch(ctx, w, now)
	}
	if w.FallbackReason == "" {
		w.FallbackReason = res.ErrorClass
	}
	w.Step++
	w.StepAttempts = 0
	w.NotBefore = time.Time{}
	return r.dispatch(ctx, w, now)
}

// executorSaturated is the executor's error class for a call not made
// because the vendor is at its limit.
const executorSaturated = "saturated"

// waitForSlot says how long to wait for the vendor's next slot when the
// route prefers waiting to spilling, unless the wait would overrun the
// deadline.
func (r *Router) waitForSlot(w *envelope.Work, res *envelope.Result, now time.Time) (time.Duration, bool) {
	route, ok := r.d.Policy.Current().Route(w.Route)
	if !ok || route.OnSaturated != policy.OnSaturatedWait {
		return 0, false
	}
	delay := max(time.Duration(res.RetryAfterMS)*time.Millisecond, 50*time.Millisecond)
	if !w.Deadline.IsZero() && !now.Add(delay).Before(w.Deadline) {
		return 0, false
	}
	return delay, true
}

// retryDelay decides whether a retryable failure is retried on the same
// target, and after how long: capped exponential backoff with jitter, never
// sooner than the vendor's retry-after, and never past the request's
// deadline (a wait that would overrun it falls over instead).
func (r *Router) retryDelay(w *envelope.Work, res *envelope.Result, now time.Time) (time.Duration, bool) {
	route, ok := r.d.Policy.Current().Route(w.Route)
	if !ok || w.StepAttempts > route.Retry.Attempts {
		return 0, false
	}
	b := pipeline.Backoff{Base: route.Retry.Base.Duration, Max: route.Retry.Max.Duration}
	delay := b.Delay(uint64(w.StepAttempts))
	if res.RetryAfterMS > 0 {
		ra := time.Duration(res.RetryAfterMS) * time.Millisecond
		if ra > route.Retry.MaxRetryAfter.Duration {
			return 0, false
		}
		delay = max(delay, ra)
	}
	if !w.Deadline.IsZero() && !now.Add(delay).Before(w.Deadline) {
		return 0, false
	}
	return delay, true
}

// dispatch sends the work to the current step's executor, or ends the
// request when no step is left or its deadline has passed.
func (r *Router) dispatch(ctx context.Context, w *envelope.Work, now time.Time) error {
	if !w.Deadline.IsZero() && !now.Before(w.Deadline) {
		r.decisions.WithLabelValues("deadline").Inc()
		msg := fmt.Sprintf("deadline passed after %d attempt(s)", len(w.Attempts))
		if len(w.Attempts) > 0 {
			if err := r.pub.DeadLetterRequest(ctx, natsx.StageRouter, envelope.CodeDeadlineExceeded, msg, w); err != nil {
				return err
			}
		}
		return r.pub.FailRequest(ctx, w, envelope.CodeDeadlineExceeded, msg, true, now)
	}
	if skipped, why := r.skipIneligible(w); skipped > 0 && w.Step >= len(w.Chain) && len(w.Attempts) == 0 {
		r.decisions.WithLabelValues("policy_blocked").Inc()
		msg := fmt.Sprintf("no model of route %s may serve this request (%s)", w.Route, why)
		return r.pub.FailRequest(ctx, w, envelope.CodePolicyBlocked, msg, false, now)
	}
	r.skipOpenCircuits(w, now)
	if w.Step >= len(w.Chain) && w.Hedged && r.d.Hedges != nil {
		return r.hedgeFailed(ctx, w, now) // this branch has no target left
	}
	if w.Step >= len(w.Chain) {
		r.decisions.WithLabelValues("exhausted").Inc()
		msg := exhaustedMessage(w)
		if err := r.pub.DeadLetterRequest(ctx, natsx.StageRouter, envelope.CodeAllVendorsFailed, msg, w); err != nil {
			return err
		}
		return r.pub.FailRequest(ctx, w, envelope.CodeAllVendorsFailed, msg, true, now)
	}
	t := w.Target()
	w.Current = nil
	w.StepAttempts++
	if w.Step == 0 {
		r.decisions.WithLabelValues("primary").Inc()
	} else {
		r.decisions.WithLabelValues("fallback").Inc()
	}
	id := w.Key + ":exec:" + strconv.Itoa(w.AttemptNumber())
	return r.pub.PublishWork(ctx, natsx.ExecSubject(t.Vendor), id, w)
}

func exhaustedMessage(w *envelope.Work) string {
	s := fmt.Sprintf("all %d target(s) of route %s failed:", len(w.Chain), w.Route)
	for _, a := range w.Attempts {
		s += fmt.Sprintf(" %s/%s=%s", a.Vendor, a.Model, a.ErrorClass)
		if a.ErrorClass == "" {
			s += a.Outcome
		}
	}
	return s
}

// terminalCode maps a non-retryable vendor failure to a reply code.
func terminalCode(res *envelope.Result, t envelope.Target) (string, string) {
	msg := fmt.Sprintf("%s/%s refused the request (%s, http %d): %s", t.Vendor, t.Model, res.ErrorClass, res.HTTPStatus, res.ErrorMessage)
	switch provider.Class(res.ErrorClass) {
	case provider.ClassInvalidRequest, provider.ClassUnprocessable, provider.ClassContextLength:
		return envelope.CodeInvalidRequest, msg
	case provider.ClassPayloadTooLarge:
		return envelope.CodePayloadTooLarge, msg
	default:
		return envelope.CodeInternal, msg
	}
}

// eligible says whether a model may serve the request: its residency must
// include the request's (or, when the request names none, one of its
// tenant's regions), its context window must hold the prompt, and it must
// support JSON output when the request asks for it.
func eligible(pol *policy.Policy, w *envelope.Work, t envelope.Target) (bool, string) {
	m, ok := pol.Model(t.Vendor, t.Model)
	if !ok {
		return true, "" // unknown to the catalog: priced as unknown, not blocked
	}
	if want := w.Request.Policy; want != nil && want.Residency != "" {
		if !slices.Contains(m.Residency, want.Residency) {
			return false, "residency " + want.Residency
		}
	} else if tenant, _ := pol.Tenant(w.Request.Tenant); len(tenant.Residency) > 0 {
		if !slices.ContainsFunc(m.Residency, func(r string) bool { return slices.Contains(tenant.Residency, r) }) {
			return false, "tenant residency"
		}
	}
	if m.ContextWindow > 0 && w.Class.TokenEstimate > m.ContextWindow {
		return false, "context window"
	}
	if rf := w.Request.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" && len(m.Capabilities) > 0 && !slices.Contains(m.Capabilities, "json") {
		return false, "json output"
	}
	return true, ""
}

// skipIneligible moves past chain steps whose model may not see the
// request (see eligible): such a model never receives it, not even as a
// last resort. It returns how many it skipped and the last reason.
func (r *Router) skipIneligible(w *envelope.Work) (int, string) {
	pol := r.d.Policy.Current()
	skipped, why := 0, ""
	for w.Step < len(w.Chain) {
		t := w.Chain[w.Step]
		ok, reason := eligible(pol, w, t)
		if ok {
			return skipped, why
		}
		r.d.Log.Debug().Str("request_id", w.Request.ID).Str("vendor", t.Vendor).Str("model", t.Model).Str("reason", reason).Msg("target skipped: not eligible")
		w.Step++
		w.StepAttempts = 0
		skipped, why = skipped+1, reason
	}
	return skipped, why
}

// cooling reports whether a breaker is open and still in its cool-down.
func (r *Router) cooling(key string, now time.Time) bool {
	st := r.d.Breakers.Status(key)
	return st.State == breaker.StateOpen && now.Before(st.OpenUntil)
}

// skipOpenCircuits moves past targets whose breaker is open and still
// cooling down: traffic goes straight to the next target, with no wasted
// call or timeout. The last target is always tried, so an exhausted chain
// reports real vendor errors. A cooled-down breaker is left for the
// executor, whose Allow takes a half-open probe slot.
func (r *Router) skipOpenCircuits(w *envelope.Work, now time.Time) {
	if r.d.Breakers == nil {
		return
	}
	for w.Step < len(w.Chain)-1 {
		t := w.Chain[w.Step]
		if !r.cooling(t.Vendor, now) && !r.cooling(t.Vendor+"/"+t.Model, now) {
			return
		}
		r.decisions.WithLabelValues("circuit_open").Inc()
		r.d.Log.Debug().Str("request_id", w.Request.ID).Str("vendor", t.Vendor).Str("model", t.Model).Msg("target skipped: circuit open")
		if w.FallbackReason == "" {
			w.FallbackReason = "circuit_open"
		}
		w.Step++
		w.StepAttempts = 0
	}
}
