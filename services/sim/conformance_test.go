package sim_test

import (
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/adapters"
	"github.com/switchyard-llm/switchyard/pkg/adapters/vendortest"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// TestAdapterConformance runs every real adapter against the simulator.
func TestAdapterConformance(t *testing.T) {
	const cachedModel = "cached-model"
	sc := sim.Scenario{Vendors: map[string]sim.VendorScenario{}}
	for _, v := range []string{"openai", "anthropic", "gemini", "openrouter", "mistral"} {
		sc.Vendors[v] = sim.VendorScenario{Models: map[string]sim.Behavior{cachedModel: {CachedRatio: sim.Ptr(0.5)}}}
	}
	srv := sim.New(sc, zerolog.Nop())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	cases := []struct {
		kind       string
		model      string
		missingKey provider.Class
		overloaded bool
	}{
		{"openai", "gpt-4o-mini", provider.ClassAuth, false},
		{"openrouter", "openai/gpt-4o-mini", provider.ClassAuth, false},
		{"anthropic", "claude-haiku-4-5", provider.ClassAuth, true},
		{"gemini", "gemini-2.5-flash", provider.ClassForbidden, false},
		{"mistral", "mistral-small-latest", provider.ClassAuth, false}, // any OpenAI-compatible name
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			vendortest.Run(t, func(baseURL, apiKey string) provider.Adapter {
				a, err := adapters.New(tc.kind, adapters.Config{BaseURL: baseURL, APIKey: apiKey})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}, vendortest.Options{
				BaseURL:         sim.BaseURL(ts.URL, tc.kind),
				Model:           tc.model,
				CachedModel:     cachedModel,
				CachedRatio:     0.5,
				MissingKeyClass: tc.missingKey,
				Overloaded:      tc.overloaded,
			})
		})
	}
}
