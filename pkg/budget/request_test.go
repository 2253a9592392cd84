package budget

import (
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// The hold is priced at the chain's dearest model, or at the pinned model
// alone when the request names one (before: a model pinned outside a cheap
// chain got the cheap chain's hold, and the router then refused it as over
// the hold with policy_blocked).
func TestEstimateUSD(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: e
default_route: cheap
vendors:
  a: {kind: openai, base_url: http://a, timeout: 30s}
models:
  - {vendor: a, model: cheap, context_window: 100000, price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: a, model: mid, context_window: 100000, price: {input_per_mtok: 2, output_per_mtok: 2}}
  - {vendor: a, model: dear, context_window: 100000, price: {input_per_mtok: 100, output_per_mtok: 100}}
routes:
  - {name: cheap, chain: [{vendor: a, model: cheap}, {vendor: a, model: mid}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	route, _ := p.Route("cheap")
	tests := []struct {
		name, model string
		want        float64
	}{
		{"chain: its dearest model", "", 2 * 1000 / 1e6},
		{"pinned outside the chain", "a/dear", 100 * 1000 / 1e6},
		{"pinned inside the chain", "a/cheap", 1 * 1000 / 1e6},
		{"pinned, not in the catalog: the chain", "a/nope", 2 * 1000 / 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &envelope.Work{Request: envelope.Request{Model: tt.model, MaxTokens: 500}, Class: envelope.Classification{TokenEstimate: 1000}}
			if got := EstimateUSD(p, route, w); got < tt.want*0.999 || got > tt.want*1.001 {
				t.Fatalf("EstimateUSD = %g, want %g", got, tt.want)
			}
		})
	}
}
