package pricing

import (
	"math"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/anthropic"
	"github.com/switchyard-llm/switchyard/pkg/provider/gemini"
	"github.com/switchyard-llm/switchyard/pkg/provider/openai"
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

// TestCostPerVendorSemantics prices what each adapter decodes from its
// vendor's own usage object, so the vendors' billing rules are checked end
// to end: OpenAI's reasoning tokens are inside completion_tokens, Gemini's
// thoughts are billed as output but outside candidatesTokenCount,
// Anthropic's thinking is inside output_tokens and its input excludes
// cache reads and writes, OpenRouter's usage.cost is the charge.
func TestCostPerVendorSemantics(t *testing.T) {
	price := policy.Price{InputPerMTok: 1, OutputPerMTok: 10, CachedPerMTok: 0.5, CacheWritePerMTok: 2}
	cat := catalog{}
	for _, v := range []string{"openai", "gemini", "anthropic", "openrouter"} {
		cat[policy.Key{Vendor: v, Model: "m"}] = &policy.Model{Price: price}
	}
	okChoice := `"choices":[{"message":{"content":"x"},"finish_reason":"stop"}]`
	tests := []struct {
		name, vendor string
		decode       func([]byte) (*provider.Response, error)
		body         string
		want         float64
		source       Source
		reasoning    int
	}{
		{"openai reasoning inside completion", "openai", openai.DecodeResponse,
			`{` + okChoice + `,"usage":{"prompt_tokens":1000,"completion_tokens":500,"completion_tokens_details":{"reasoning_tokens":400},"prompt_tokens_details":{"cached_tokens":200}}}`,
			(800*1 + 200*0.5 + 500*10) / 1e6, SourceCatalog, 400},
		{"gemini thoughts billed as output", "gemini", gemini.DecodeResponse,
			`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"candidatesTokenCount":100,"thoughtsTokenCount":300}}`,
			(1000*1 + 400*10) / 1e6, SourceCatalog, 300},
		{"anthropic thinking inside output, cache outside input", "anthropic", anthropic.DecodeResponse,
			`{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","usage":{"input_tokens":100,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200,"output_tokens":700}}`,
			(100*1 + 1000*0.5 + 200*2 + 700*10) / 1e6, SourceCatalog, 0},
		{"openrouter reported cost wins", "openrouter", openai.DecodeResponse,
			`{` + okChoice + `,"usage":{"prompt_tokens":1000,"completion_tokens":500,"cost":0.0123}}`,
			0.0123, SourceVendor, 0},
		{"openrouter free model", "openrouter", openai.DecodeResponse,
			`{` + okChoice + `,"usage":{"prompt_tokens":1000,"completion_tokens":500,"cost":0}}`,
			0, SourceVendor, 0},
		{"openrouter without cost: catalog", "openrouter", openai.DecodeResponse,
			`{` + okChoice + `,"usage":{"prompt_tokens":1000,"completion_tokens":500}}`,
			(1000*1 + 500*10) / 1e6, SourceCatalog, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.decode([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Usage.ReasoningTokens != tt.reasoning {
				t.Fatalf("reasoning tokens %d, want %d", resp.Usage.ReasoningTokens, tt.reasoning)
			}
			got, src := Quote(cat, tt.vendor, "m", resp.Usage)
			if src != tt.source || math.Abs(got-tt.want) > 1e-12 {
				t.Fatalf("Quote = %v, %s; want %v, %s", got, src, tt.want, tt.source)
			}
			usd, known := Cost(cat, tt.vendor, "m", resp.Usage)
			if usd != got || !known {
				t.Fatalf("Cost = %v, %v; want %v, true", usd, known, got)
			}
		})
	}
}

func TestQuoteSources(t *testing.T) {
	cat := catalog{{Vendor: "openai", Model: "gpt-4o-mini"}: {Price: policy.Price{InputPerMTok: 1, OutputPerMTok: 2}}}
	tests := []struct {
		name   string
		model  string
		usage  envelope.Usage
		want   float64
		source Source
	}{
		{"catalog", "gpt-4o-mini", envelope.Usage{InputTokens: 1e6}, 1, SourceCatalog},
		{"unknown model", "gpt-9", envelope.Usage{InputTokens: 1e6}, 0, SourceNone},
		{"vendor cost for a model the catalog lacks", "gpt-9", envelope.Usage{InputTokens: 1e6, VendorCostUSD: 0.7, VendorCostReported: true}, 0.7, SourceVendor},
		// Reasoning is a subset of output; a count that says otherwise is
		// billed at the larger figure rather than dropped.
		{"reasoning outside output", "gpt-4o-mini", envelope.Usage{OutputTokens: 100, ReasoningTokens: 1e6}, 2, SourceCatalog},
	}
	for _, tt := range tests {
		got, src := Quote(cat, "openai", tt.model, tt.usage)
		if src != tt.source || math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: Quote = %v, %s; want %v, %s", tt.name, got, src, tt.want, tt.source)
		}
	}
}
