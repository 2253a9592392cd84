package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// A prompt the first model's real context window cannot hold (the vendor
// answers 400 context_length_exceeded, in its own words) is not retried on
// that model: the router moves to the next target whose window fits, and
// the request is answered there.
func TestContextLengthMovesToALargerWindow(t *testing.T) {
	window := 40 // tokens the simulated gpt-4o-mini accepts, whatever the catalog says
	e := start(t, func(c *app.Config) {
		c.Policy.Routes = append(c.Policy.Routes, policy.Route{Name: "long", Chain: []policy.Target{
			{Vendor: "openai", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude-haiku-4-5"}}})
		if err := c.Policy.Validate(); err != nil {
			t.Fatal(err)
		}
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{ContextWindow: &window}}}}
	})
	var reqs []*envelope.Request
	for i := range 5 {
		r := e.request(fmt.Sprintf("long%d", i), "long", "Summarize this long thread, please: "+fmt.Sprint(make([]int, 60)))
		r.MaxTokens = 64
		reqs = append(reqs, r)
	}
	replies := e.submitAll(reqs, 60*time.Second)
	for id, rs := range replies {
		r := rs[0]
		if r.Status != envelope.StatusOK || r.Vendor != "anthropic" {
			t.Fatalf("%s: %s by %s/%s, error %+v", id, r.Status, r.Vendor, r.Model, r.Error)
		}
		if len(r.Attempts) != 2 || r.Attempts[0].ErrorClass != string(provider.ClassContextLength) {
			t.Fatalf("%s: attempts %+v, want context_length_exceeded on openai then anthropic", id, r.Attempts)
		}
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 5 {
		t.Fatalf("openai calls = %d, want 5 (one per request: a context-length refusal is never retried on the same model)", n)
	}
}
