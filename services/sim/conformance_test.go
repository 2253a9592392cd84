package sim_test

import (
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
	"github.com/switchyard-llm/switchyard/pkg/provider/vendortest"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// TestAdapterConformance runs every real adapter against the simulator:
// the same behaviours (errors, caching, reasoning, reported cost, streaming
// and its failures) in each vendor's own wire format, and no goroutine
// left behind once the simulator is gone.
func TestAdapterConformance(t *testing.T) {
	const cachedModel, reasoningModel, reasoning = "cached-model", "reasoning-model", 37
	price := sim.Price{InputPerMTok: 2, OutputPerMTok: 8}
	sc := sim.Scenario{Vendors: map[string]sim.VendorScenario{}}
	for _, v := range []string{"openai", "anthropic", "gemini", "openrouter", "mistral"} {
		sc.Vendors[v] = sim.VendorScenario{Behavior: sim.Behavior{ReportedPrice: &price}, Models: map[string]sim.Behavior{
			cachedModel:    {CachedRatio: sim.Ptr(0.5)},
			reasoningModel: {ReasoningTokens: sim.Ptr(reasoning)},
		}}
	}
	srv := sim.New(sc, zerolog.Nop())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	cases := []struct {
		kind       string
		model      string
		missingKey provider.Class
		overloaded bool
		hidden     bool // thinking billed inside output, not reported apart
		reportCost bool // the vendor reports what it charged
	}{
		{"openai", "gpt-4o-mini", provider.ClassAuth, false, false, false},
		{"openrouter", "openai/gpt-4o-mini", provider.ClassAuth, false, false, true},
		{"anthropic", "claude-haiku-4-5", provider.ClassAuth, true, true, false},
		{"gemini", "gemini-2.5-flash", provider.ClassForbidden, false, false, false},
		{"mistral", "mistral-small-latest", provider.ClassAuth, false, false, false}, // any OpenAI-compatible name
	}
	// The group returns once every kind's parallel subtests are done.
	t.Run("kinds", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.kind, func(t *testing.T) {
				t.Parallel()
				var reported *[2]float64
				if tc.reportCost {
					reported = &[2]float64{price.InputPerMTok, price.OutputPerMTok}
				}
				vendortest.Run(t, func(baseURL, apiKey string) provider.Adapter {
					a, err := adapters.New(tc.kind, adapters.Config{BaseURL: baseURL, APIKey: apiKey})
					if err != nil {
						t.Fatal(err)
					}
					return a
				}, vendortest.Options{
					ReasoningModel:  reasoningModel,
					ReasoningTokens: reasoning,
					ReasoningHidden: tc.hidden,
					ReportedPrice:   reported,
					BaseURL:         sim.BaseURL(ts.URL, tc.kind),
					Model:           tc.model,
					CachedModel:     cachedModel,
					CachedRatio:     0.5,
					MissingKeyClass: tc.missingKey,
					Overloaded:      tc.overloaded,
				})
			})
		}
	})
	ts.Close()
	vendortest.NoLeaks(t)
}
