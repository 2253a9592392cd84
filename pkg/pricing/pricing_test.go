package pricing

import (
	"math"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

type catalog map[policy.Key]*policy.Model

func (c catalog) Model(v, m string) (*policy.Model, bool) {
	x, ok := c[policy.Key{Vendor: v, Model: m}]
	return x, ok
}

func TestCost(t *testing.T) {
	cat := catalog{
		{Vendor: "openai", Model: "gpt-4o-mini"}:         {Price: policy.Price{InputPerMTok: 0.15, OutputPerMTok: 0.60, CachedPerMTok: 0.075}},
		{Vendor: "anthropic", Model: "claude-haiku-4-5"}: {Price: policy.Price{InputPerMTok: 1, OutputPerMTok: 5, CachedPerMTok: 0.1, CacheWritePerMTok: 1.25}},
		{Vendor: "gemini", Model: "gemini-2.5-flash"}:    {Price: policy.Price{InputPerMTok: 0.30, OutputPerMTok: 2.50}},
	}
	tests := []struct {
		name          string
		vendor, model string
		usage         envelope.Usage
		want          float64
		known         bool
	}{
		{"openai plain", "openai", "gpt-4o-mini", envelope.Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000}, 0.75, true},
		{"openai cached subset", "openai", "gpt-4o-mini", envelope.Usage{InputTokens: 1000, CachedTokens: 400, OutputTokens: 100}, (600*0.15 + 400*0.075 + 100*0.60) / 1e6, true},
		// Anthropic's wire input_tokens excluded the cache; the adapter has
		// already added reads and writes back, so here they are subsets.
		{"anthropic read and write", "anthropic", "claude-haiku-4-5", envelope.Usage{InputTokens: 1500, CachedTokens: 1000, CacheWriteTokens: 200, OutputTokens: 100}, (300*1 + 1000*0.1 + 200*1.25 + 100*5) / 1e6, true},
		{"no cached rate falls back to input rate", "gemini", "gemini-2.5-flash", envelope.Usage{InputTokens: 1000, CachedTokens: 500}, 1000 * 0.30 / 1e6, true},
		{"cached larger than input is clamped", "openai", "gpt-4o-mini", envelope.Usage{InputTokens: 100, CachedTokens: 500}, 100 * 0.075 / 1e6, true},
		{"unknown model", "openai", "gpt-9", envelope.Usage{InputTokens: 100}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, known := Cost(cat, tt.vendor, tt.model, tt.usage)
			if known != tt.known || math.Abs(got-tt.want) > 1e-12 {
				t.Fatalf("Cost = %v, %v; want %v, %v", got, known, tt.want, tt.known)
			}
		})
	}
}
