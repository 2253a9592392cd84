package router

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/budget"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// Event is what happened to a request, as the router sees it.
type Event int

// Events.
const (
	// EvClassified: a new request from intake.
	EvClassified Event = iota
	// EvVendorFailure: the vendor was called and failed.
	EvVendorFailure
	// EvSkipped: the executor did not call the target (Result.Skipped).
	EvSkipped
	// EvPass: the gate accepted the answer.
	EvPass
	// EvQualityFail: the gate rejected the answer.
	EvQualityFail
	// EvStageFailure: the executor or the gate dead-lettered the work.
	EvStageFailure
)

func (e Event) String() string {
	return [...]string{"classified", "vendor_failure", "skipped", "pass", "quality_fail", "stage_failure"}[e]
}

// eventOf says what a work envelope read from llm.verdicts reports.
func eventOf(w *envelope.Work) (Event, error) {
	switch {
	case w.Failed != nil:
		return EvStageFailure, nil
	case w.Current == nil:
		return 0, errors.New("verdict without a result")
	case w.Current.Skipped:
		return EvSkipped, nil
	case !w.Current.OK():
		return EvVendorFailure, nil
	case w.Quality != nil && !w.Quality.Passed:
		return EvQualityFail, nil
	default:
		return EvPass, nil
	}
}

// Env is everything outside the request that a decision depends on.
type Env struct {
	Policy *policy.Policy
	Now    time.Time
	// Open reports whether a target's circuit (vendor or model) is open and
	// cooling down; nil means none is.
	Open func(t envelope.Target) bool
	// Stats are observed vendor latencies, escalation rates and load.
	Stats Stats
	// Rand draws in [0, n): weighted picks and retry jitter.
	Rand func(n int) int
	// Refused is the budget's refusal of a new request (nil: admitted).
	Refused *Refusal
	// Hedge says a new request on a hedged route may be hedged (the
	// tenant's hedging ratio allows it and a hedge tracker runs).
	Hedge bool
}

// Refusal is a budget or quota refusal.
type Refusal struct{ Code, Message string }

// Kind is the kind of an action.
type Kind int

// Action kinds.
const (
	// Nothing: no message follows (a hedge branch cancelled after the
	// other won).
	Nothing Kind = iota
	// Dispatch: send Action.Work (one envelope, or two for a hedge) to
	// the executors.
	Dispatch
	// Finish: reply ok (Degraded marks an accepted failing answer).
	Finish
	// Fail: reply with the error Code; DeadLetter also dead-letters the
	// request.
	Fail
	// Downgrade: the budget refused the request and its tenant moves to
	// Action.Route; reserve again there and decide again.
	Downgrade
	// BranchFailed: a branch of a hedged request failed; the request fails
	// only once every branch has failed and none has answered.
	BranchFailed
)

// Action is the router's decision.
type Action struct {
	Kind     Kind
	Decision string // metric label and log field
	// Work is the state after the decision: the envelopes to dispatch, or
	// the one request to finish or fail.
	Work       []*envelope.Work
	Degraded   bool
	Code       string
	Message    string
	Retryable  bool
	DeadLetter bool
	Route      string
}

// minAttempt is the shortest attempt timeout the time budget gives a target
// (unless less than that is left of the request).
const minAttempt = 2 * time.Second

// defaultVendorTimeout bounds an attempt when the policy sets no timeout
// (the executor's own default).
const defaultVendorTimeout = 60 * time.Second

// decide is the whole routing decision: given the request's state, what
// happened and the world around it, it returns what to do next. It is pure:
// publishing, budgets, the cache and the hedge bucket are the shell's.
//
// Every move to a target (first one, retry, fallback, escalation, spill,
// context-window move, hedge) goes through nextTarget, so every target is
// checked against every eligibility rule: residency (the request's, else
// its tenant's), context window, JSON capability, stakes depth, the
// request's max_cost_usd, the budget hold, and an open circuit; and no move
// is made past the request's deadline.
func decide(in *envelope.Work, ev Event, env Env) Action {
	w := cloneWork(in)
	route, ok := env.Policy.Route(w.Route)
	if ev == EvClassified {
		if !ok {
			return fail(w, envelope.CodeUnknownRoute, fmt.Sprintf("route: %q is not defined in policy %s", w.Route, env.Policy.Version), false, true, "unknown_route")
		}
		return classified(w, route, env)
	}
	if !ok {
		// The route left the policy mid-request: finish what is in flight,
		// move nowhere.
		route = &policy.Route{Name: w.Route, OnQualityFail: policy.OnQualityReject, OnSaturated: policy.OnSaturatedSpill}
	}
	if w.Hedged {
		return hedgeBranch(w, ev)
	}
	switch ev {
	case EvPass:
		return Action{Kind: Finish, Decision: "finish", Work: []*envelope.Work{w}, Degraded: w.Degraded}
	case EvQualityFail:
		return qualityFailed(w, route, env)
	case EvVendorFailure:
		return vendorFailed(w, route, env)
	case EvSkipped:
		return skipped(w, route, env)
	default: // EvStageFailure
		msg := "a stage could not process the request"
		if w.Failed != nil {
			msg = w.Failed.Message
		}
		return fail(w, envelope.CodeInternal, msg, true, false, "stage_failure")
	}
}

func classified(w *envelope.Work, route *policy.Route, env Env) Action {
	if ref := env.Refused; ref != nil {
		tenant, _ := env.Policy.Tenant(w.Request.Tenant)
		if cheaper, ok := env.Policy.Route(tenant.DowngradeRoute); ok && tenant.OnExceeded == policy.OnExceededDowngrade && cheaper.Name != w.Route {
			return Action{Kind: Downgrade, Decision: "budget_downgrade", Route: cheaper.Name, Work: []*envelope.Work{w}}
		}
		return fail(w, ref.Code, ref.Message, false, false, ref.Code)
	}
	chain, why := plan(env.Policy, route, w, env.Stats, env.Rand)
	if w.Request.Model != "" {
		// A pinned model replaces the route's chain: that model or nothing
		// (still checked against every eligibility rule below).
		t, ok := w.Request.PinnedTarget()
		if _, known := env.Policy.Model(t.Vendor, t.Model); !ok || !known {
			return fail(w, envelope.CodeInvalidRequest, fmt.Sprintf("model: %q is not in the catalog of policy %s", w.Request.Model, env.Policy.Version), false, false, "unknown_model")
		}
		chain, why = []envelope.Target{t}, ""
	}
	if why != "" {
		return fail(w, envelope.CodePolicyBlocked, why, false, false, "policy_blocked")
	}
	w.Chain, w.Strategy, w.Step, w.StepAttempts = chain, route.Strategy, 0, 0
	if passed(w, env.Now) {
		return deadline(w)
	}
	first, skips := nextTarget(w, 0, env, nil)
	if first < 0 {
		if skips.open {
			return fail(w, envelope.CodeAllVendorsFailed, "no target of route "+w.Route+" can be called: "+skips.String(), true, false, "circuit_open")
		}
		return fail(w, envelope.CodePolicyBlocked, fmt.Sprintf("no model of route %s may serve this request (%s)", w.Route, skips), false, false, "policy_blocked")
	}
	// A streamed request is never hedged: two branches would publish two
	// answers' deltas to the one client.
	if env.Hedge && route.Strategy == policy.StrategyHedged && !w.Request.Stream {
		if second, _ := nextTarget(w, first+1, env, nil); second >= 0 {
			return hedged(w, route, first, second, env)
		}
	}
	decision := "primary"
	if first > 0 {
		decision = "fallback"
		if skips.open {
			w.FallbackReason = firstNonEmpty(w.FallbackReason, envelope.SkipCircuitOpen)
		}
	}
	return to(w, first, time.Time{}, env, decision)
}

// hedged sends the request to two targets: the primary now, the second after
// the route's delay. Each branch is one target with the whole remaining time.
func hedged(w *envelope.Work, route *policy.Route, first, second int, env Env) Action {
	a, b := cloneWork(w), cloneWork(w)
	a.Hedged, a.Branch = true, 0
	b.Hedged, b.Branch, b.AttemptBase = true, 1, hedgeAttemptBase
	for _, br := range []struct {
		w         *envelope.Work
		step      int
		notBefore time.Time
	}{{a, first, time.Time{}}, {b, second, env.Now.Add(route.Hedge.After.Duration)}} {
		br.w.Step, br.w.StepAttempts, br.w.NotBefore, br.w.Dispatch = br.step, 1, br.notBefore, 1
		start := later(env.Now, br.notBefore)
		br.w.AttemptDeadline = start.Add(vendorTimeout(env.Policy, br.w.Target().Vendor))
		if !w.Deadline.IsZero() && br.w.AttemptDeadline.After(w.Deadline) {
			br.w.AttemptDeadline = w.Deadline
		}
	}
	return Action{Kind: Dispatch, Decision: "hedged", Work: []*envelope.Work{a, b}}
}

// hedgeBranch: a hedged branch has one target; the first acceptable answer
// wins (the shell claims the win) and any other outcome ends the branch.
func hedgeBranch(w *envelope.Work, ev Event) Action {
	switch {
	case ev == EvPass:
		return Action{Kind: Finish, Decision: "hedge_answer", Work: []*envelope.Work{w}, Degraded: w.Degraded}
	case ev == EvSkipped && w.Current.ErrorClass == envelope.SkipHedgeWon:
		return Action{Kind: Nothing, Decision: "hedge_cancelled", Work: []*envelope.Work{w}}
	default:
		return Action{Kind: BranchFailed, Decision: "hedge_branch_failed", Work: []*envelope.Work{w}}
	}
}

func qualityFailed(w *envelope.Work, route *policy.Route, env Env) Action {
	reason := "answer failed quality checks"
	if w.Quality != nil && w.Quality.Reason != "" {
		reason += ": " + w.Quality.Reason
	}
	switch route.OnQualityFail {
	case policy.OnQualityDegrade:
		return Action{Kind: Finish, Decision: "degraded", Work: []*envelope.Work{w}, Degraded: true}
	case policy.OnQualityReject:
		return fail(w, envelope.CodeQualityRejected, reason, false, false, "rejected")
	}
	if w.Request.Stream && w.StreamSeq+w.Current.Deltas > 0 {
		// The client has read the answer already: another model's answer
		// cannot replace it, only the rejection can be told.
		return fail(w, envelope.CodeQualityRejected, reason+" (the answer had been streamed; not escalated)", false, false, "rejected")
	}
	if passed(w, env.Now) {
		return deadline(w)
	}
	next, skips := nextTarget(w, w.Step+1, env, nil)
	if next < 0 {
		if w.Step+1 < len(w.Chain) {
			reason += "; no model left to escalate to (" + skips.String() + ")"
		}
		return fail(w, envelope.CodeQualityRejected, reason, false, false, "rejected")
	}
	w.Escalated = true
	w.FallbackReason = firstNonEmpty(w.FallbackReason, "quality")
	if route.Strategy == policy.StrategyCascade && w.Current != nil {
		why := ""
		if w.Quality != nil {
			why = w.Quality.Reason
		}
		withDraft(w, w.Current.Content, why)
	}
	return to(w, next, time.Time{}, env, "escalated")
}

func vendorFailed(w *envelope.Work, route *policy.Route, env Env) Action {
	res, last := w.Current, w.Target()
	if provider.Class(res.ErrorClass) == provider.ClassContentRefused {
		// A refusal is the content's, not the vendor's: another model would
		// be asked to say what this one refused. The client gets the
		// vendor's reason.
		return fail(w, envelope.CodePolicyBlocked, fmt.Sprintf("%s/%s refused the content: %s", last.Vendor, last.Model, res.ErrorMessage), false, false, "content_refused")
	}
	if w.Request.Stream {
		w.StreamSeq += res.Deltas
		w.StreamText += res.Partial
		if w.StreamSeq > 0 {
			return streamCut(w, env)
		}
	}
	if provider.Class(res.ErrorClass) == provider.ClassPrefillUnsupported {
		// The client's own assistant prefill was refused: another model may
		// take it; this one never will.
		w.FallbackReason = firstNonEmpty(w.FallbackReason, res.ErrorClass)
		return fallback(w, env, "prefill_unsupported")
	}
	if provider.Class(res.ErrorClass) == provider.ClassContextLength {
		// The same model will refuse again: move to a later model whose
		// context window is larger, if the chain has one.
		var window int
		if m, ok := env.Policy.Model(last.Vendor, last.Model); ok {
			window = m.ContextWindow
		}
		larger := func(m *policy.Model) string {
			if m != nil && window > 0 && m.ContextWindow > 0 && m.ContextWindow <= window {
				return "context window not larger than " + last.Vendor + "/" + last.Model + "'s"
			}
			return ""
		}
		if passed(w, env.Now) {
			return deadline(w)
		}
		if next, _ := nextTarget(w, w.Step+1, env, larger); next >= 0 {
			w.FallbackReason = firstNonEmpty(w.FallbackReason, res.ErrorClass)
			return to(w, next, time.Time{}, env, "context_length")
		}
		return fail(w, envelope.CodeInvalidRequest, fmt.Sprintf("the prompt exceeds the context window of %s/%s and no later model of route %s has a larger one", last.Vendor, last.Model, w.Route), false, false, "context_length")
	}
	if !res.Retryable {
		code, msg := terminalCode(res, last)
		dead := code != envelope.CodeInvalidRequest && code != envelope.CodePayloadTooLarge
		return fail(w, code, msg, false, dead, "terminal")
	}
	if passed(w, env.Now) {
		return deadline(w)
	}
	if delay, ok := retryDelay(w, route, res, env); ok {
		if why := ineligible(w, w.Step, env, nil); why == "" {
			return to(w, w.Step, env.Now.Add(delay), env, "retry")
		}
	}
	w.FallbackReason = firstNonEmpty(w.FallbackReason, res.ErrorClass)
	return fallback(w, env, "fallback")
}

func skipped(w *envelope.Work, route *policy.Route, env Env) Action {
	res := w.Current
	if res.ErrorClass == envelope.SkipDeadline || passed(w, env.Now) {
		return deadline(w)
	}
	if res.ErrorClass == envelope.SkipSaturated && route.OnSaturated == policy.OnSaturatedWait && ineligible(w, w.Step, env, nil) == "" {
		delay := max(time.Duration(res.RetryAfterMS)*time.Millisecond, 50*time.Millisecond)
		if w.Deadline.IsZero() || env.Now.Add(delay).Before(w.Deadline) {
			w.StepAttempts-- // waiting for a slot is not a retry
			return to(w, w.Step, env.Now.Add(delay), env, "wait_saturated")
		}
	}
	if res.ErrorClass == envelope.SkipStale && (!w.Deadline.IsZero() || w.StaleDispatches < maxStaleDispatches) && ineligible(w, w.Step, env, nil) == "" {
		// The vendor was never called: the work outlived its attempt
		// deadline in a queue (a backlog, a stream leader election, a
		// partitioned node). Another target spreads the backlog; the last
		// one is offered again with a fresh attempt deadline rather than
		// failing a request nobody tried, for as long as the request's
		// deadline allows (it ends as deadline_exceeded, above). Each
		// re-offer waits out a budget of at least min(remaining, 2 s)
		// first, so the deadline bounds the re-offers too. A route set to
		// wait for a slot keeps its target too: it asked not to spill
		// because of our own queues.
		if next, _ := nextTarget(w, w.Step+1, env, nil); next < 0 || route.OnSaturated == policy.OnSaturatedWait {
			w.StaleDispatches++
			w.StepAttempts-- // not a vendor failure: no retry is used up
			return to(w, w.Step, time.Time{}, env, "redispatch_stale")
		}
	}
	if w.Request.Stream && w.StreamSeq > 0 {
		return streamCut(w, env)
	}
	w.FallbackReason = firstNonEmpty(w.FallbackReason, res.ErrorClass)
	decision := "spill_" + res.ErrorClass
	return fallback(w, env, decision)
}

// streamCut decides what follows a failed attempt once deltas of the
// request have been published: the client holds part of an answer that
// cannot be taken back. A later target that supports prefill continues
// it (the executor sends the text so far as an assistant prefill and
// numbers its deltas on); with none, the request ends with an explicit
// stream_interrupted error, never a success. A continuation that fails
// (a prefill refused, a stall) moves on the same way.
func streamCut(w *envelope.Work, env Env) Action {
	if passed(w, env.Now) {
		return deadline(w)
	}
	w.FallbackReason = firstNonEmpty(w.FallbackReason, w.Current.ErrorClass)
	next, skips := nextTarget(w, w.Step+1, env, needsPrefill)
	if next >= 0 {
		return to(w, next, time.Time{}, env, "stream_continue")
	}
	msg := fmt.Sprintf("the streamed answer was cut after %d delta(s) (%s: %s) and no later target of route %s can continue it",
		w.StreamSeq, w.Current.ErrorClass, w.Current.ErrorMessage, w.Route)
	if s := skips.String(); s != "" {
		msg += " (" + s + ")"
	}
	w.Step = len(w.Chain)
	return fail(w, envelope.CodeStreamInterrupted, msg, true, false, "stream_interrupted")
}

// needsPrefill admits only models that continue an assistant prefill.
func needsPrefill(m *policy.Model) string {
	if m == nil || !m.HasCapability(policy.CapabilityPrefill) {
		return "no prefill capability to continue a cut stream"
	}
	return ""
}

// maxStaleDispatches bounds how often a target that was never called
// because its work went stale in the queue is offered again, for work
// without a deadline (the request's deadline bounds the others).
const maxStaleDispatches = 3

// fallback moves to the next eligible target after the current one, or
// ends the request when none is left.
func fallback(w *envelope.Work, env Env, decision string) Action {
	next, skips := nextTarget(w, w.Step+1, env, nil)
	if next < 0 {
		w.Step = len(w.Chain)
		msg := exhaustedMessage(w)
		if s := skips.String(); s != "" {
			msg += "; not tried: " + s
		}
		return fail(w, envelope.CodeAllVendorsFailed, msg, true, true, "exhausted")
	}
	return to(w, next, time.Time{}, env, decision)
}

// to dispatches w to chain step at notBefore (zero: now), with the attempt
// deadline the time budget gives it.
func to(w *envelope.Work, step int, notBefore time.Time, env Env, decision string) Action {
	if step != w.Step {
		w.StepAttempts = 0
	}
	w.Step = step
	w.StepAttempts++
	w.Current, w.Quality, w.Degraded = nil, nil, false
	w.NotBefore = notBefore
	w.AttemptDeadline = attemptDeadline(w, step, later(env.Now, notBefore), env)
	w.Dispatch++
	return Action{Kind: Dispatch, Decision: decision, Work: []*envelope.Work{w}}
}

// attemptDeadline is the time budget of one attempt: it leaves room for the
// rest of the chain, so a vendor that accepts the call and never answers
// fails over in time. The attempt gets
//
//	min(vendor timeout, max(remaining ÷ targets left, min(remaining, 2 s)))
//
// where remaining is the time to the request's deadline and targets left
// counts this target and every later eligible one.
func attemptDeadline(w *envelope.Work, step int, start time.Time, env Env) time.Time {
	timeout := vendorTimeout(env.Policy, w.Chain[step].Vendor)
	if w.Deadline.IsZero() {
		return start.Add(timeout)
	}
	remaining := w.Deadline.Sub(start)
	left := 1
	for s := step + 1; s < len(w.Chain); s++ {
		if ineligible(w, s, env, nil) == "" {
			left++
		}
	}
	share := remaining / time.Duration(left)
	if floor := min(remaining, minAttempt); share < floor {
		share = floor
	}
	return start.Add(max(min(timeout, share), 0))
}

func vendorTimeout(p *policy.Policy, vendor string) time.Duration {
	if v, ok := p.Vendors[vendor]; ok && v.Timeout.Duration > 0 {
		return v.Timeout.Duration
	}
	return defaultVendorTimeout
}

// skips are the reasons targets were passed over.
type skips struct {
	reasons []string
	open    bool // one was passed over for an open circuit only
}

func (s skips) String() string { return strings.Join(s.reasons, "; ") }

// nextTarget is the first chain step from `from` on that may serve the
// request (see ineligible), or -1 with the reasons every later step may not.
// extra is a further rule for this move (nil: none).
func nextTarget(w *envelope.Work, from int, env Env, extra func(m *policy.Model) string) (int, skips) {
	var sk skips
	for s := max(from, 0); s < len(w.Chain); s++ {
		why := ineligible(w, s, env, extra)
		if why == "" {
			return s, sk
		}
		t := w.Chain[s]
		sk.reasons = append(sk.reasons, t.Vendor+"/"+t.Model+": "+why)
		if why == reasonOpen {
			sk.open = true
		}
	}
	return -1, sk
}

const reasonOpen = "circuit open"

// ineligible says why chain step s may not serve the request now ("" when
// it may).
func ineligible(w *envelope.Work, s int, env Env, extra func(m *policy.Model) string) string {
	t := w.Chain[s]
	rp := w.Request.Policy
	if rp != nil {
		if route, ok := env.Policy.Route(w.Route); ok {
			if d := route.Depth[rp.Stakes]; d > 0 && s >= d {
				return fmt.Sprintf("beyond the depth %d of stakes %s", d, rp.Stakes)
			}
		}
	}
	if ok, why := eligible(env.Policy, w, t); !ok {
		return why
	}
	m, known := env.Policy.Model(t.Vendor, t.Model)
	if known {
		spent := spentUSD(w)
		if rp != nil && rp.MaxCostUSD > 0 && spent+expectedUSD(m, w, 256) > rp.MaxCostUSD {
			return fmt.Sprintf("max_cost_usd %g (spent %.6f)", rp.MaxCostUSD, spent)
		}
		if held, ok := budget.HeldUSD(w); ok && spent+expectedUSD(m, w, budget.DefaultOutputTokens) > held+1e-9 {
			return fmt.Sprintf("budget: the request's hold of %.6f USD cannot cover it (spent %.6f)", held, spent)
		}
	}
	if extra != nil {
		var mm *policy.Model
		if known {
			mm = m
		}
		if why := extra(mm); why != "" {
			return why
		}
	}
	if env.Open != nil && env.Open(t) {
		return reasonOpen
	}
	return ""
}

// expectedUSD prices the request on a model with out output tokens when it
// sets no max_tokens (the planner's and the budget's assumptions).
func expectedUSD(m *policy.Model, w *envelope.Work, out int) float64 {
	in := max(w.Class.TokenEstimate-w.Request.MaxTokens, 0)
	if w.Request.MaxTokens > 0 {
		out = w.Request.MaxTokens
	}
	return pricing.Price(m.Price, envelope.Usage{InputTokens: in, OutputTokens: out})
}

func spentUSD(w *envelope.Work) float64 {
	s := 0.0
	for _, a := range w.Attempts {
		s += a.CostUSD
	}
	return s
}

// retryDelay decides whether a retryable failure is retried on the same
// target, and after how long: capped exponential backoff with jitter, never
// sooner than the vendor's retry-after, and never past the request's
// deadline (a wait that would overrun it falls over instead).
func retryDelay(w *envelope.Work, route *policy.Route, res *envelope.Result, env Env) (time.Duration, bool) {
	if w.StepAttempts > route.Retry.Attempts {
		return 0, false
	}
	d := route.Retry.Base.Duration << min(max(w.StepAttempts-1, 0), 20)
	if d <= 0 || d > route.Retry.Max.Duration {
		d = route.Retry.Max.Duration
	}
	delay := d / 2
	if env.Rand != nil && d > 1 {
		delay += time.Duration(env.Rand(int(min(d/2, math.MaxInt32)) + 1))
	}
	if res.RetryAfterMS > 0 {
		ra := time.Duration(res.RetryAfterMS) * time.Millisecond
		if ra > route.Retry.MaxRetryAfter.Duration {
			return 0, false
		}
		delay = max(delay, ra)
	}
	if !w.Deadline.IsZero() && !env.Now.Add(delay).Before(w.Deadline) {
		return 0, false
	}
	return delay, true
}

func passed(w *envelope.Work, now time.Time) bool {
	return !w.Deadline.IsZero() && !now.Before(w.Deadline)
}

func deadline(w *envelope.Work) Action {
	msg := fmt.Sprintf("deadline passed after %d attempt(s)", len(w.Attempts))
	return fail(w, envelope.CodeDeadlineExceeded, msg, true, len(w.Attempts) > 0, "deadline")
}

func fail(w *envelope.Work, code, msg string, retryable, deadLetter bool, decision string) Action {
	return Action{Kind: Fail, Decision: decision, Work: []*envelope.Work{w}, Code: code, Message: msg, Retryable: retryable, DeadLetter: deadLetter}
}

// resolveRoute is the request's route: the one it names, else the first
// whose match rules fit its classification, else the policy's default.
func resolveRoute(p *policy.Policy, w *envelope.Work) (*policy.Route, bool) {
	name := w.Route
	if name == "" {
		name = w.Request.Route
	}
	if name != "" {
		return p.Route(name)
	}
	tenant, _ := p.Tenant(w.Request.Tenant)
	return p.SelectRoute(policy.Facts{Task: w.Class.Task, EndpointTag: w.Request.EndpointTag, Tier: tenant.Tier,
		Sensitive: w.Class.Sensitive, Tokens: w.Class.TokenEstimate}), true
}

// withDraft gives the next model of a cascade the rejected draft and why it
// was rejected, so it improves on it rather than starting over.
func withDraft(w *envelope.Work, draft, reason string) {
	note := "The answer above was rejected by a quality check (" + reason + "). Write a corrected answer that passes it."
	w.Request.Messages = append(w.Request.Messages,
		envelope.Message{Role: "assistant", Content: draft},
		envelope.Message{Role: "user", Content: note},
	)
	// The prompt grew: context windows are checked against the new size.
	w.Class.TokenEstimate += len(draft)/4 + len(note)/4 + 8
}

// cloneWork copies the parts of the state a decision changes, so the
// caller's envelope is left as it was.
func cloneWork(w *envelope.Work) *envelope.Work {
	c := *w
	c.Chain = slices.Clone(w.Chain)
	c.Attempts = slices.Clone(w.Attempts)
	c.Request.Messages = slices.Clone(w.Request.Messages)
	return &c
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func exhaustedMessage(w *envelope.Work) string {
	s := fmt.Sprintf("all %d target(s) of route %s failed:", len(w.Chain), w.Route)
	for _, a := range w.Attempts {
		s += fmt.Sprintf(" %s/%s=%s", a.Vendor, a.Model, a.ErrorClass)
		if a.ErrorClass == "" {
			s += a.Outcome
		}
	}
	if c := w.Current; c != nil && c.Skipped {
		s += fmt.Sprintf(" (last target not called: %s)", c.ErrorClass)
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
