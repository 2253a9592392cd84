package integration

import (
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// A sensitive request with residency eu never reaches a non-EU model, even
// when every EU model of its route has failed.
func TestResidencyIsEnforced(t *testing.T) {
	down := sim.Behavior{Status: sim.Ptr(503)}
	e := start(t, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"anthropic": {Behavior: down}, "openai": {Behavior: down}}}
	})
	// summarize: anthropic (us, eu) → openai (us, eu) → openrouter llama (us only)
	eu := e.request("eu1", "summarize", "Summarize: customer ana@example.com asks for a refund")
	eu.Policy = &envelope.RequestPolicy{Residency: "eu"}
	us := e.request("us1", "summarize", "Summarize: a harmless ticket")
	replies := e.submitAll([]*envelope.Request{eu, us}, 30*time.Second)

	got := replies["eu1"][0]
	if got.Status != envelope.StatusError || got.Error.Code != envelope.CodeAllVendorsFailed {
		t.Fatalf("eu request: want all_vendors_failed after the EU models, got %+v", got.Error)
	}
	for _, a := range got.Attempts {
		if a.Vendor == "openrouter" {
			t.Fatalf("eu request reached a us-only model: %+v", got.Attempts)
		}
	}
	if other := replies["us1"][0]; other.Status != envelope.StatusOK || other.Vendor != "openrouter" {
		t.Fatalf("request without residency should fall through to openrouter: %+v", other)
	}
	if n := e.simCalls("openrouter", "meta-llama/llama-3.3-70b-instruct"); n != 1 {
		t.Fatalf("openrouter calls = %d, want 1 (the request without residency only)", n)
	}

	// A route with no EU model at all refuses at once.
	only := e.request("eu2", "summarize", "Summarize this")
	only.Policy = &envelope.RequestPolicy{Residency: "mars"}
	blocked := e.submitAll([]*envelope.Request{only}, 30*time.Second)["eu2"][0]
	if blocked.Error == nil || blocked.Error.Code != envelope.CodePolicyBlocked || len(blocked.Attempts) != 0 {
		t.Fatalf("want policy_blocked with no attempt, got %+v", blocked)
	}
}
