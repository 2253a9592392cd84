package router

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

const testPolicy = `
version: t
default_route: r
vendors:
  a: {kind: openai, base_url: http://a}
  b: {kind: anthropic, base_url: http://b}
  c: {kind: gemini, base_url: http://c}
models:
  - {vendor: a, model: cheap, price: {input_per_mtok: 0.1, output_per_mtok: 0.4}, latency_ms: 900, quality: 0.6}
  - {vendor: b, model: mid, price: {input_per_mtok: 1, output_per_mtok: 5}, latency_ms: 300, quality: 0.8}
  - {vendor: c, model: best, price: {input_per_mtok: 3, output_per_mtok: 15}, latency_ms: 600, quality: 0.95}
routes:
  - name: r
    chain: [{vendor: a, model: cheap}, {vendor: b, model: mid}, {vendor: c, model: best}]
`

type fakeStats map[string]float64

func (f fakeStats) LatencyMS(v, m string) (float64, bool) { x, ok := f[v+"/"+m]; return x, ok }
func (f fakeStats) InFlight(v string) int                 { return int(f["load/"+v]) }
func (f fakeStats) EscalationRate(v, m string) (float64, bool) {
	x, ok := f["esc/"+v+"/"+m]
	return x, ok
}

func TestPlan(t *testing.T) {
	p, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		strategy string
		route    func(r *policy.Route)
		req      envelope.RequestPolicy
		stats    fakeStats
		want     []string
		blocked  bool
	}{
		{name: "fallback keeps the order", strategy: "fallback", want: []string{"cheap", "mid", "best"}},
		{name: "cost: cheapest first", strategy: "cost", want: []string{"cheap", "mid", "best"}},
		{name: "cost over a quality floor", strategy: "cost", route: func(r *policy.Route) { r.QualityFloor = 0.7 }, want: []string{"mid", "best"}},
		{name: "cost with premium quality", strategy: "cost", req: envelope.RequestPolicy{Quality: "premium"}, want: []string{"best"}},
		{name: "latency from the catalog", strategy: "latency", want: []string{"mid", "best", "cheap"}},
		{name: "latency observed beats the catalog", strategy: "latency", stats: fakeStats{"c/best": 50}, want: []string{"best", "mid", "cheap"}},
		{name: "latency within max_latency_ms", strategy: "latency", req: envelope.RequestPolicy{MaxLatencyMS: 700}, want: []string{"mid", "best"}},
		{name: "score, quality only", strategy: "score", route: func(r *policy.Route) { r.Weights = policy.Weights{Quality: 1} }, want: []string{"best", "mid", "cheap"}},
		{name: "score, cost only", strategy: "score", route: func(r *policy.Route) { r.Weights = policy.Weights{Cost: 1} }, want: []string{"cheap", "mid", "best"}},
		{name: "cascade: cheapest first", strategy: "cascade", want: []string{"cheap", "mid", "best"}},
		{name: "cascade: a draft that always escalates costs more than the next model alone", strategy: "cascade",
			stats: fakeStats{"esc/a/cheap": 1}, want: []string{"mid", "best", "cheap"}},
		{name: "cascade within the latency SLO", strategy: "cascade", req: envelope.RequestPolicy{MaxLatencyMS: 500}, want: []string{"mid", "cheap", "best"}},
		{name: "least loaded", strategy: "least_loaded", stats: fakeStats{"load/a": 9, "load/b": 1, "load/c": 5}, want: []string{"mid", "best", "cheap"}},
		{name: "max cost filters", strategy: "fallback", req: envelope.RequestPolicy{MaxCostUSD: 0.0001}, want: []string{"cheap"}},
		{name: "stakes bound the depth", strategy: "fallback", route: func(r *policy.Route) { r.Depth = map[string]int{"low": 1} }, req: envelope.RequestPolicy{Stakes: "low"}, want: []string{"cheap"}},
		{name: "nothing qualifies", strategy: "cost", req: envelope.RequestPolicy{Quality: "premium", MaxCostUSD: 0.00001}, blocked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := p.Routes[0]
			route.Strategy = tt.strategy
			route.Depth = nil
			if tt.route != nil {
				tt.route(&route)
			}
			req := tt.req
			w := &envelope.Work{Request: envelope.Request{MaxTokens: 100, Policy: &req}, Class: envelope.Classification{TokenEstimate: 120}}
			chain, why := plan(p, &route, w, tt.stats, defaultRand)
			if tt.blocked != (why != "") {
				t.Fatalf("blocked = %q", why)
			}
			var got []string
			for _, c := range chain {
				got = append(got, c.Model)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("chain %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPlanWeighted(t *testing.T) {
	p, _ := policy.Parse([]byte(testPolicy))
	route := p.Routes[0]
	route.Strategy = "weighted"
	route.Chain = []policy.Target{{Vendor: "a", Model: "cheap", Weight: 3}, {Vendor: "b", Model: "mid", Weight: 1}}
	r := rand.New(rand.NewPCG(1, 2))
	first := map[string]int{}
	for range 4000 {
		chain, _ := plan(p, &route, &envelope.Work{}, nil, r.IntN)
		first[chain[0].Model]++
		if len(chain) != 2 {
			t.Fatalf("chain %v", chain)
		}
	}
	ratio := float64(first["cheap"]) / float64(first["mid"])
	if ratio < 2.6 || ratio > 3.4 {
		t.Fatalf("weights 3:1 gave %v", first)
	}
}

// BenchmarkPlan measures one routing decision with a 50-model catalog and
// 100 routes (score strategy, the most work), and reports its p99.
func BenchmarkPlan(b *testing.B) {
	src := "version: bench\ndefault_route: r0\nvendors:\n"
	for v := range 5 {
		src += fmt.Sprintf("  v%d: {kind: openai, base_url: http://v%d}\n", v, v)
	}
	src += "models:\n"
	for m := range 50 {
		src += fmt.Sprintf("  - {vendor: v%d, model: m%d, price: {input_per_mtok: %d, output_per_mtok: %d}, latency_ms: %d, quality: 0.%d}\n", m%5, m, m+1, 2*m+1, 100+10*m, 50+m%49)
	}
	src += "routes:\n"
	for r := range 100 {
		src += fmt.Sprintf("  - name: r%d\n    strategy: score\n    chain:\n", r)
		for k := range 5 {
			m := (r + 7*k) % 50
			src += fmt.Sprintf("      - {vendor: v%d, model: m%d}\n", m%5, m)
		}
	}
	p, err := policy.Parse([]byte(src))
	if err != nil {
		b.Fatal(err)
	}
	obs := newObserved()
	for m := range 50 {
		for range minSamples {
			obs.addLatency(fmt.Sprintf("v%d", m%5), fmt.Sprintf("m%d", m), float64(50+m), time.Now())
		}
	}
	w := &envelope.Work{Request: envelope.Request{MaxTokens: 200, Policy: &envelope.RequestPolicy{MaxLatencyMS: 5000, Quality: "standard"}}, Class: envelope.Classification{TokenEstimate: 700}}
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		route, _ := p.Route(fmt.Sprintf("r%d", i%100))
		plan(p, route, w, obs, defaultRand)
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
}
