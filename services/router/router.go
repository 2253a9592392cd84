// Package router owns every routing decision. It resolves each classified
// request's route and chain, and after every verdict (a judged answer, a
// vendor failure, a skipped target, a stage's dead letter) decides what
// follows: a retry, a fallback, an escalation, a hedge, a spill or wait on
// saturation, a downgrade on budget, or the reply. The decision is one pure
// function (decide.go); this file is the shell that performs its effects.
// The routing state travels in the work envelope, so replicas share nothing.
// The router is the only stage after intake that replies, so it is the only
// one that settles budget reservations.
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
	"github.com/switchyard-llm/switchyard/pkg/respcache"
)

// Config tunes the router consumer (env prefix SWITCHYARD_ROUTER_).
type Config struct {
	Consumer string `envconfig:"CONSUMER" default:"router"`
	pipeline.ConsumerSettings
	// Direct serves intakes' direct hand-offs of classified work on
	// llm.router.route (pipeline.DirectDoor) besides llm.classified.
	Direct bool `envconfig:"DIRECT" default:"true"`
	// BatchRequestEvents stores the request events of requests finishing
	// together as one message on llm.telemetry.requests
	// (pipeline.GroupCommit), each reply still after its event is stored;
	// false: one llm.telemetry.request message per request.
	BatchRequestEvents bool `envconfig:"BATCH_REQUEST_EVENTS" default:"true"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	errs := c.ConsumerSettings.Validate("SWITCHYARD_ROUTER", c.Consumer)
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
	share     *sharer // nil until observe runs (no core connection: nothing to share)
	hedging   *hedge.Budget
	pub       pipeline.Publisher
	decisions *prometheus.CounterVec
	// eventBatches counts the request events per stored batch.
	eventBatches prometheus.Histogram
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
	r := &Router{cfg: cfg, d: d, seen: newObserved(), hedging: hedge.NewBudget(), pub: pipeline.Publisher{JS: d.JS, NC: d.NC},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_router_decisions_total", Help: "Routing decisions by kind."}, []string{"decision"}),
		eventBatches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_router_request_event_batch_size",
			Help: "Request events stored per message on llm.telemetry.requests.", Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
	if cfg.BatchRequestEvents {
		r.pub.Events = r.pub.NewRequestEvents(func(n int) { r.eventBatches.Observe(float64(n)) })
	}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{r.decisions, r.eventBatches} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// ConsumerConfig reads new requests and failed attempts.
func (r *Router) ConsumerConfig() jetstream.ConsumerConfig {
	return r.cfg.ConsumerSettings.ConsumerConfig(r.cfg.Consumer, "router: routes classified requests and decides after every verdict",
		natsx.SubjectClassified, natsx.SubjectVerdicts, natsx.SubjectEscalations)
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
	if r.cfg.Direct && r.d.NC != nil {
		// Intakes hand classified work here first, gates their verdicts
		// (pipeline.DirectDoor); what no router answers goes to
		// llm.classified or llm.verdicts, consumed below.
		for subject, handle := range map[string]func(context.Context, []byte) error{natsx.SubjectRouterRoute: r.route, natsx.SubjectRouterVerdict: r.verdict} {
			stop, err := pipeline.DirectDoor{NC: r.d.NC, Subject: subject, Queue: natsx.QueueRouter, Stage: natsx.StageRouter,
				Concurrency: r.cfg.Concurrency, Timeout: handleTimeout, Log: r.d.Log, Handle: handle, Metrics: r.d.Metrics}.Serve(ctx)
			if err != nil {
				return err
			}
			defer stop()
		}
	}
	h := pipeline.RequestStage(r.d.Log, r.Handle, r.deadLetter, r.cfg.MaxDeliver, handleTimeout, true)
	return pipeline.Run(ctx, r.d.Log, cons, h, pipeline.RunOptions{Concurrency: r.cfg.Concurrency, Stage: natsx.StageRouter, Metrics: r.d.Metrics})
}

// Handle routes one work envelope: a new request from llm.classified, or a
// verdict (judged answer, vendor failure, skipped target, stage failure)
// from llm.verdicts. The handler returns what it publishes; Send publishes.
func (r *Router) Handle(ctx context.Context, d *pipeline.Delivery) error {
	w, err := pipeline.DecodeWork(d.Data())
	if err != nil {
		return err
	}
	if d.Msg.Subject() != natsx.SubjectClassified {
		return r.decideAfter(ctx, w)
	}
	return r.process(ctx, w, EvClassified)
}

// verdict handles a verdict a gate handed directly, as Handle does one
// from llm.verdicts.
func (r *Router) verdict(ctx context.Context, data []byte) error {
	w, err := pipeline.DecodeWork(data)
	if err != nil {
		return err
	}
	return r.decideAfter(ctx, w)
}

// decideAfter learns from a verdict and decides what follows it.
func (r *Router) decideAfter(ctx context.Context, w *envelope.Work) error {
	ev, err := eventOf(w)
	if err != nil {
		return pipeline.Terminal("bad_verdict", err)
	}
	r.learn(w, ev)
	return r.process(ctx, w, ev)
}

// handleTimeout bounds one message's handling, what it publishes included.
const handleTimeout = 10 * time.Second

// route handles classified work an intake handed directly, as Handle does
// the same work from llm.classified.
func (r *Router) route(ctx context.Context, data []byte) error {
	w, err := pipeline.DecodeWork(data)
	if err != nil {
		return err
	}
	return r.process(ctx, w, EvClassified)
}

// process decides what follows ev and publishes it.
func (r *Router) process(ctx context.Context, w *envelope.Work, ev Event) error {
	outs, err := r.handle(ctx, w, ev, r.d.Now())
	if err != nil {
		return err // logged with the request's fields by RequestStage
	}
	return r.pub.Send(ctx, outs)
}

// handle decides what follows ev and performs the decision's effects on
// budgets, the cache and the hedge bucket; it returns the messages to
// publish (dispatches, or the telemetry and reply that finish the request).
func (r *Router) handle(ctx context.Context, w *envelope.Work, ev Event, now time.Time) ([]pipeline.Outbound, error) {
	log := pipeline.LazyRequestLogger(r.d.Log, w)
	pol := r.d.Policy.Current()
	env := Env{Policy: pol, Now: now, Open: r.open(now), Stats: r.seen, Rand: defaultRand}
	if ev == EvClassified {
		w.Step, w.StepAttempts = 0, 0
		route, ok := resolveRoute(pol, w)
		if ok {
			w.Route, w.Strategy = route.Name, route.Strategy
			if outs, hit := r.fromCache(ctx, log, w, route, now); hit {
				return outs, nil
			}
			if err := r.reserve(ctx, &env, route, w); err != nil {
				return nil, err
			}
			hedge, err := r.mayHedge(ctx, route, w, now)
			if err != nil {
				return nil, err
			}
			env.Hedge = hedge
		} else if w.Route == "" {
			w.Route = w.Request.Route
		}
	}
	act := decide(w, ev, env)
	if act.Kind == Downgrade {
		cheaper, _ := pol.Route(act.Route)
		w = act.Work[0]
		w.Route, w.Strategy = cheaper.Name, cheaper.Strategy
		if err := r.reserve(ctx, &env, cheaper, w); err != nil {
			return nil, err
		}
		hedge, err := r.mayHedge(ctx, cheaper, w, now)
		if err != nil {
			return nil, err
		}
		env.Hedge = hedge
		act = decide(w, ev, env)
	}
	r.decisions.WithLabelValues(act.Decision).Inc()
	if len(act.Work) > 0 {
		w = act.Work[0]
	}
	if r.d.Log.GetLevel() <= zerolog.DebugLevel {
		log().Debug().Str("event", ev.String()).Str("decision", act.Decision).Int("step", w.Step).Msg("routing decision")
	}
	switch act.Kind {
	case Dispatch:
		var outs []pipeline.Outbound
		for _, x := range act.Work {
			t := x.Target()
			id := x.Key + ":exec:" + strconv.Itoa(x.Branch) + ":" + strconv.Itoa(x.Dispatch)
			o, err := pipeline.WorkOut(natsx.ExecSubject(t.Vendor), id, x)
			if err != nil {
				return nil, err
			}
			outs = append(outs, o)
		}
		return outs, nil
	case Finish:
		if w.Hedged && r.d.Hedges != nil {
			won, err := r.d.Hedges.Win(ctx, w.Key, w.Branch)
			if err != nil {
				return nil, pipeline.Transient(err, 0)
			}
			if !won {
				r.decisions.WithLabelValues("hedge_lost").Inc()
				return r.branchDone(ctx, w)
			}
		}
		return r.finishOK(ctx, log, w, act.Degraded, now)
	case Fail:
		return r.fail(ctx, w, act.Code, act.Message, act.Retryable, act.DeadLetter, now)
	case BranchFailed:
		return r.branchFailed(ctx, w, now)
	default: // Nothing: a cancelled hedge branch
		if w.Hedged && r.d.Hedges != nil {
			return r.branchDone(ctx, w)
		}
		return pipeline.AttemptRowOuts(w)
	}
}

// branchDone ends a hedge branch that does not finish the request (it lost,
// was cancelled, or failed while the other may still answer): its budget
// share is recorded and its calls' rows go to the ledger, which the
// request's event will not carry.
func (r *Router) branchDone(ctx context.Context, w *envelope.Work) ([]pipeline.Outbound, error) {
	if err := r.hedgeDone(ctx, w); err != nil {
		return nil, err
	}
	return pipeline.AttemptRowOuts(w)
}

// open reports circuits that are open and still cooling down: traffic goes
// straight past them. A cooled-down breaker is left to the executor, whose
// Allow takes a half-open probe slot.
func (r *Router) open(now time.Time) func(envelope.Target) bool {
	if r.d.Breakers == nil {
		return nil
	}
	cooling := func(key string) bool {
		st := r.d.Breakers.Status(key)
		return st.State == breaker.StateOpen && now.Before(st.OpenUntil)
	}
	return func(t envelope.Target) bool { return cooling(t.Vendor) || cooling(t.Vendor+"/"+t.Model) }
}

// mayHedge says whether a request on route may be hedged: a hedged route, a
// hedge tracker, and the tenant's hedging ratio not used up.
func (r *Router) mayHedge(ctx context.Context, route *policy.Route, w *envelope.Work, now time.Time) (bool, error) {
	// A streamed request is never hedged (see decide): it uses none of the
	// tenant's hedging ratio.
	if route.Strategy != policy.StrategyHedged || r.d.Hedges == nil || w.Request.Stream {
		return false, nil
	}
	ok, err := r.d.Hedges.Admit(ctx, r.hedging, w.Request.Tenant, w.Key, route.Hedge.MaxRatio, now)
	if err != nil {
		return false, pipeline.Transient(err, 0)
	}
	if !ok {
		r.decisions.WithLabelValues("hedge_over_budget").Inc()
		// within budget only: this one runs as a plain fallback
	}
	return ok, nil
}

// fromCache answers from the response cache when the route caches and the
// request may be cached; otherwise it marks the work so a passing answer is
// stored. A cache that cannot be read is a miss, never an error.
func (r *Router) fromCache(ctx context.Context, log func() *zerolog.Logger, w *envelope.Work, route *policy.Route, now time.Time) ([]pipeline.Outbound, bool) {
	if r.d.Cache == nil || route.Cache.TTL.Duration <= 0 || !r.d.Cache.Eligible(&w.Request, w.Class.Sensitive, route.Cache.AllowSensitive) {
		return nil, false
	}
	key := respcache.Key(&w.Request, route.Name, respcache.Fingerprint(route))
	entry, hit, err := r.d.Cache.Get(ctx, key)
	if err != nil {
		log().Warn().Err(err).Msg("response cache unavailable; treating as a miss")
	}
	if !hit {
		w.CacheKey, w.CacheTTLMS = key, route.Cache.TTL.Milliseconds()
		return nil, false
	}
	r.decisions.WithLabelValues("cache_hit").Inc()
	reply := entry.Reply(&w.Request, w.Route)
	reply.LatencyMS = now.Sub(w.ReceivedAt).Milliseconds()
	outs, err := pipeline.FinishOuts(w, &reply, now)
	if err != nil {
		return nil, false
	}
	return outs, true
}

// reserve holds the request's cost estimate against its tenant's budgets;
// a refusal goes to the decision (refuse, or downgrade where the tenant's
// policy says so).
func (r *Router) reserve(ctx context.Context, env *Env, route *policy.Route, w *envelope.Work) error {
	env.Refused = nil
	err := budget.ReserveRequest(ctx, r.d.Budgets, env.Policy, route, w)
	var ref *budget.Refusal
	switch {
	case errors.As(err, &ref):
		env.Refused = &Refusal{Code: ref.Code, Message: ref.Error()}
		return nil
	case err != nil:
		return pipeline.Transient(err, 0)
	}
	return nil
}

// finishOK replies with the answer, settles the budget and stores the
// answer in the response cache.
func (r *Router) finishOK(ctx context.Context, log func() *zerolog.Logger, w *envelope.Work, degraded bool, now time.Time) ([]pipeline.Outbound, error) {
	t, res := w.Target(), w.Current
	reply := pipeline.ReplyFor(w, now)
	reply.Status = envelope.StatusOK
	reply.Content, reply.FinishReason = res.Content, res.FinishReason
	reply.Vendor, reply.Model = t.Vendor, t.Model
	reply.Degraded = degraded
	reply.TTFTMS = res.TTFTMS
	for _, a := range w.Attempts {
		reply.Usage.InputTokens += a.Usage.InputTokens
		reply.Usage.OutputTokens += a.Usage.OutputTokens
		reply.Usage.CachedTokens += a.Usage.CachedTokens
		reply.Usage.CacheWriteTokens += a.Usage.CacheWriteTokens
	}
	if err := r.settle(ctx, w); err != nil {
		return nil, err
	}
	if r.d.Cache != nil && w.CacheKey != "" && !degraded {
		// Best effort: a failed store only costs a future hit.
		if err := r.d.Cache.Put(ctx, w.CacheKey, respcache.EntryFromReply(reply), time.Duration(w.CacheTTLMS)*time.Millisecond); err != nil {
			log().Debug().Err(err).Msg("answer not cached")
		}
	}
	return pipeline.FinishOuts(w, reply, now)
}

// fail replies with an error (dead-lettering the request when asked) and
// settles the budget.
func (r *Router) fail(ctx context.Context, w *envelope.Work, code, msg string, retryable, deadLetter bool, now time.Time) ([]pipeline.Outbound, error) {
	if err := r.settle(ctx, w); err != nil {
		return nil, err
	}
	var outs []pipeline.Outbound
	if deadLetter {
		o, err := pipeline.DeadLetterRequestOut(natsx.StageRouter, code, msg, w, now)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	reply := pipeline.ReplyFor(w, now)
	reply.Status = envelope.StatusError
	reply.Error = &envelope.Error{Code: code, Message: msg, Retryable: retryable}
	fin, err := pipeline.FinishOuts(w, reply, now)
	return append(outs, fin...), err
}

// settle finishes the request's budget reservation with what its vendor
// calls cost. The router is the only stage that finishes a request, so this
// is the only place a reservation is settled. A hedged request settles once
// every branch is done (see hedgeDone), so the loser's cost is charged too.
func (r *Router) settle(ctx context.Context, w *envelope.Work) error {
	if w.Hedged && r.d.Hedges != nil {
		return r.hedgeDone(ctx, w)
	}
	if err := budget.SettleRequest(ctx, r.d.Budgets, w, spentUSD(w), len(w.Attempts) > 0); err != nil {
		return pipeline.Transient(err, 0)
	}
	return nil
}

// hedgeDone records that this branch is done; the last branch to finish
// settles the reservation with every branch's cost.
func (r *Router) hedgeDone(ctx context.Context, w *envelope.Work) error {
	all, total, calls, err := r.d.Hedges.Done(ctx, w.Key, w.Branch, hedgeBranches, spentUSD(w), len(w.Attempts))
	if err != nil {
		return pipeline.Transient(err, 0)
	}
	if !all {
		return nil
	}
	if err := budget.SettleRequest(ctx, r.d.Budgets, w, total, calls > 0); err != nil {
		return pipeline.Transient(err, 0)
	}
	return nil
}

// hedgeBranches is how many branches a hedged request runs.
const hedgeBranches = 2

// hedgeAttemptBase numbers the hedge branch's attempts apart from the
// primary's, so their attempt ids never collide.
const hedgeAttemptBase = 100

// branchFailed records a failed hedge branch. The request fails only when
// every branch has failed and none has answered.
func (r *Router) branchFailed(ctx context.Context, w *envelope.Work, now time.Time) ([]pipeline.Outbound, error) {
	if r.d.Hedges == nil {
		return r.fail(ctx, w, envelope.CodeAllVendorsFailed, exhaustedMessage(w), true, true, now)
	}
	if won, err := r.d.Hedges.Won(ctx, w.Key); err != nil {
		return nil, pipeline.Transient(err, 0)
	} else if won {
		return r.branchDone(ctx, w)
	}
	all, err := r.d.Hedges.Fail(ctx, w.Key, w.Branch, hedgeBranches)
	if err != nil {
		return nil, pipeline.Transient(err, 0)
	}
	if !all {
		return r.branchDone(ctx, w) // the other branch may still answer
	}
	r.decisions.WithLabelValues("exhausted").Inc()
	if passed(w, now) {
		a := deadline(w)
		return r.fail(ctx, w, a.Code, a.Message, true, a.DeadLetter, now)
	}
	w.Step = len(w.Chain)
	return r.fail(ctx, w, envelope.CodeAllVendorsFailed, "both branches of the hedged request failed: "+exhaustedMessage(w), true, true, now)
}

// deadLetter is the router's own dead-letter action: the message goes to
// llm.dlq.router and, when it decodes, the client gets an internal error and
// the reservation is settled.
func (r *Router) deadLetter(ctx context.Context, d *pipeline.Delivery, reason string, cause error) error {
	var w envelope.Work
	if json.Unmarshal(d.Data(), &w) != nil || w.Request.ID == "" || w.Key == "" {
		return r.pub.DeadLetter(ctx, natsx.StageRouter, reason, cause, d, "", "")
	}
	if err := r.pub.DeadLetter(ctx, natsx.StageRouter, reason, cause, d, w.Request.ID, w.Request.Tenant); err != nil {
		return err
	}
	log := pipeline.RequestLogger(r.d.Log, &w)
	log.Warn().Str("reason", reason).AnErr("cause", cause).Msg("dead-lettered; replying internal and settling the budget")
	outs, err := r.fail(ctx, &w, envelope.CodeInternal, "router could not process the request ("+reason+"); it was dead-lettered", true, false, r.d.Now())
	if err != nil {
		return err
	}
	return r.pub.Send(ctx, outs)
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
