package router

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
)

// qualityFloors maps a request's quality tier to the lowest catalog quality
// it accepts (the route's quality_floor wins when higher).
var qualityFloors = map[string]float64{"economy": 0, "standard": 0.7, "premium": 0.85}

// candidate is one chain target with what the strategies rank it by.
type candidate struct {
	target    envelope.Target
	weight    int
	quality   float64
	cost      float64 // expected USD for this request
	latencyMS float64 // observed (or catalog) latency
	load      int     // in-flight calls at the vendor
	known     bool    // in the catalog
}

// Stats are what the router observes of the vendors.
type Stats interface {
	LatencyMS(vendor, model string) (ms float64, ok bool)
	InFlight(vendor string) int
	// EscalationRate is the observed share of a model's answers the gate
	// rejected (ok is false until enough answers were seen).
	EscalationRate(vendor, model string) (rate float64, ok bool)
}

// routePlan is a way to serve the request: one model, or a cascade of a
// first model and the one a rejected answer escalates to.
type routePlan struct {
	first, then int // indexes into the candidates; then < 0 for one model
	quality     float64
	success     float64 // P(an answer the gate accepts)
	cost        float64 // expected USD
	latencyMS   float64 // expected
}

// escalation is P(escalate) of a candidate: observed, else 1 − quality.
func escalation(c candidate, stats Stats) float64 {
	if stats != nil {
		if r, ok := stats.EscalationRate(c.target.Vendor, c.target.Model); ok {
			return r
		}
	}
	return math.Min(math.Max(1-c.quality, 0), 1)
}

// bestPlan scores every single model and every two-step cascade with
// expected values (seed 004):
//
//	expected_cost    = P(success)·cost_a + P(escalate)·(cost_a + cost_b) = cost_a + P(escalate)·cost_b
//	expected_latency = latency_a + P(escalate)·latency_b
//
// keeps the plans within the request's max_latency_ms and max_cost_usd,
// and orders the candidates so the best plan's models come first (the rest
// stay as fallbacks). Score = w_q·quality − w_c·cost/max − w_l·latency/max.
//
// With perAccepted (the cascade strategy) plans are ranked by expected cost
// per accepted answer instead, cost / P(success), so a cheap model that is
// usually rejected does not win on price alone.
func bestPlan(cands []candidate, w policy.Weights, rp *envelope.RequestPolicy, stats Stats, perAccepted bool) []candidate {
	plans := make([]routePlan, 0, len(cands)*len(cands))
	for i, a := range cands {
		p := escalation(a, stats)
		plans = append(plans, routePlan{first: i, then: -1, quality: a.quality, success: 1 - p, cost: a.cost, latencyMS: a.latencyMS})
		for j, b := range cands {
			if j == i || b.cost <= a.cost {
				continue // a cascade escalates to a dearer model
			}
			plans = append(plans, routePlan{first: i, then: j,
				quality:   (1-p)*a.quality + p*b.quality,
				success:   1 - p*escalation(b, stats),
				cost:      a.cost + p*b.cost,
				latencyMS: a.latencyMS + p*b.latencyMS,
			})
		}
	}
	fits := plans[:0]
	for _, pl := range plans {
		if (rp.MaxLatencyMS <= 0 || pl.latencyMS <= float64(rp.MaxLatencyMS)) && (rp.MaxCostUSD <= 0 || pl.cost <= rp.MaxCostUSD) {
			fits = append(fits, pl)
		}
	}
	if len(fits) == 0 {
		return cands // nothing meets the SLO in expectation: keep the order, the filters above already applied
	}
	maxCost, maxLat := 0.0, 0.0
	for _, pl := range fits {
		maxCost, maxLat = math.Max(maxCost, pl.cost), math.Max(maxLat, pl.latencyMS)
	}
	score := func(pl routePlan) float64 {
		if perAccepted {
			if pl.success <= 0 {
				return math.Inf(-1)
			}
			return -pl.cost / pl.success
		}
		s := w.Quality * pl.quality
		if maxCost > 0 {
			s -= w.Cost * pl.cost / maxCost
		}
		if maxLat > 0 {
			s -= w.Latency * pl.latencyMS / maxLat
		}
		return s
	}
	best := fits[0]
	for _, pl := range fits[1:] {
		if score(pl) > score(best) {
			best = pl
		}
	}
	out := make([]candidate, 0, len(cands))
	out = append(out, cands[best.first])
	if best.then >= 0 {
		out = append(out, cands[best.then])
	}
	var rest []candidate
	for i, c := range cands {
		if i != best.first && i != best.then {
			rest = append(rest, c)
		}
	}
	// The remaining fallbacks, best single model first.
	single := func(c candidate) float64 {
		return score(routePlan{quality: c.quality, success: 1 - escalation(c, stats), cost: c.cost, latencyMS: c.latencyMS})
	}
	sort.SliceStable(rest, func(i, j int) bool { return single(rest[i]) > single(rest[j]) })
	return append(out, rest...)
}

// plan orders (and filters) a route's chain for one request according to
// the route's strategy, the request's policy (quality, max latency, max
// cost, stakes) and observed vendor behaviour. It returns the chain to try
// and, when nothing qualifies, why.
func plan(p *policy.Policy, route *policy.Route, w *envelope.Work, stats Stats, rnd func(n int) int) ([]envelope.Target, string) {
	cands := make([]candidate, 0, len(route.Chain))
	in := max(w.Class.TokenEstimate-w.Request.MaxTokens, 0)
	out := w.Request.MaxTokens
	if out <= 0 {
		out = 256
	}
	for _, t := range route.Chain {
		c := candidate{target: envelope.Target{Vendor: t.Vendor, Model: t.Model}, weight: max(t.Weight, 1)}
		if m, ok := p.Model(t.Vendor, t.Model); ok {
			c.known, c.quality, c.latencyMS = true, m.Quality, float64(m.LatencyMS)
			c.cost = pricing.Price(m.Price, envelope.Usage{InputTokens: in, OutputTokens: out})
		}
		if stats != nil {
			if ms, ok := stats.LatencyMS(t.Vendor, t.Model); ok {
				c.latencyMS = ms
			}
			c.load = stats.InFlight(t.Vendor)
		}
		cands = append(cands, c)
	}
	rp := w.Request.Policy
	if rp == nil {
		rp = &envelope.RequestPolicy{}
	}
	// Hard constraints of the request, whatever the strategy.
	if rp.MaxCostUSD > 0 {
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.known && c.cost > rp.MaxCostUSD })
	}
	if rp.MaxLatencyMS > 0 && (route.Strategy == policy.StrategyLatency || route.Strategy == policy.StrategyScore) {
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.latencyMS > float64(rp.MaxLatencyMS) })
	}
	floor := max(route.QualityFloor, qualityFloors[rp.Quality])
	if floor > 0 && (route.Strategy == policy.StrategyCost || route.Strategy == policy.StrategyScore) {
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.quality < floor })
	}
	if len(cands) == 0 {
		return nil, "no target of the route meets the request's cost, latency or quality limits"
	}

	switch route.Strategy {
	case policy.StrategyCost:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].cost < cands[j].cost })
	case policy.StrategyCascade:
		// The cascade with the lowest expected cost per accepted answer
		// that meets the request's latency and cost limits.
		cands = bestPlan(cands, policy.Weights{Cost: 1}, rp, stats, true)
	case policy.StrategyLatency:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].latencyMS < cands[j].latencyMS })
	case policy.StrategyScore:
		cands = bestPlan(cands, route.Weights, rp, stats, false)
	case policy.StrategyLeastLoaded:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].load < cands[j].load })
	case policy.StrategyWeighted:
		total := 0
		for _, c := range cands {
			total += c.weight
		}
		pick, n := 0, rnd(total)
		for i, c := range cands {
			if n < c.weight {
				pick = i
				break
			}
			n -= c.weight
		}
		first := cands[pick]
		cands = append([]candidate{first}, slices.Delete(cands, pick, pick+1)...)
	}
	if d := route.Depth[rp.Stakes]; d > 0 && d < len(cands) {
		cands = cands[:d]
	}
	chain := make([]envelope.Target, len(cands))
	for i, c := range cands {
		chain[i] = c.target
	}
	return chain, ""
}

func defaultRand(n int) int {
	if n <= 0 {
		return 0
	}
	return rand.IntN(n)
}

// observed tracks vendor latency (an exponentially weighted moving average
// per model, fed by attempt telemetry) and in-flight calls per vendor.
type observed struct {
	mu       sync.RWMutex
	latency  map[string]ewma
	escalate map[string]ewma // 1 for a rejected answer, 0 for an accepted one
	inflight map[string]int
}

type ewma struct {
	value   float64
	samples int
	at      time.Time
}

// minSamples before observed latency replaces the catalog estimate.
const minSamples = 5

func newObserved() *observed {
	return &observed{latency: map[string]ewma{}, escalate: map[string]ewma{}, inflight: map[string]int{}}
}

func (o *observed) addLatency(vendor, model string, ms float64, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	add(o.latency, vendor+"/"+model, ms, now)
}

// addVerdict records whether the gate accepted a model's answer.
func (o *observed) addVerdict(vendor, model string, rejected bool, now time.Time) {
	v := 0.0
	if rejected {
		v = 1
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	add(o.escalate, vendor+"/"+model, v, now)
}

func add(m map[string]ewma, key string, v float64, now time.Time) {
	e := m[key]
	if e.samples == 0 {
		e.value = v
	} else {
		e.value = 0.8*e.value + 0.2*v
	}
	e.samples++
	e.at = now
	m[key] = e
}

// EscalationRate implements Stats.
func (o *observed) EscalationRate(vendor, model string) (float64, bool) {
	o.mu.RLock()
	e, ok := o.escalate[vendor+"/"+model]
	o.mu.RUnlock()
	return e.value, ok && e.samples >= minSamples
}

func (o *observed) setInFlight(vendor string, n int) {
	o.mu.Lock()
	o.inflight[vendor] = n
	o.mu.Unlock()
}

// LatencyMS implements Stats.
func (o *observed) LatencyMS(vendor, model string) (float64, bool) {
	o.mu.RLock()
	e, ok := o.latency[vendor+"/"+model]
	o.mu.RUnlock()
	return e.value, ok && e.samples >= minSamples
}

// InFlight implements Stats.
func (o *observed) InFlight(vendor string) int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.inflight[vendor]
}
