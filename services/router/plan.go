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
	case policy.StrategyCost, policy.StrategyCascade:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].cost < cands[j].cost })
	case policy.StrategyLatency:
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].latencyMS < cands[j].latencyMS })
	case policy.StrategyScore:
		maxCost, maxLat := 0.0, 0.0
		for _, c := range cands {
			maxCost, maxLat = math.Max(maxCost, c.cost), math.Max(maxLat, c.latencyMS)
		}
		score := func(c candidate) float64 {
			s := route.Weights.Quality * c.quality
			if maxCost > 0 {
				s -= route.Weights.Cost * c.cost / maxCost
			}
			if maxLat > 0 {
				s -= route.Weights.Latency * c.latencyMS / maxLat
			}
			return s
		}
		sort.SliceStable(cands, func(i, j int) bool { return score(cands[i]) > score(cands[j]) })
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
	return &observed{latency: map[string]ewma{}, inflight: map[string]int{}}
}

func (o *observed) addLatency(vendor, model string, ms float64, now time.Time) {
	key := vendor + "/" + model
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.latency[key]
	if e.samples == 0 {
		e.value = ms
	} else {
		e.value = 0.8*e.value + 0.2*ms
	}
	e.samples++
	e.at = now
	o.latency[key] = e
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
