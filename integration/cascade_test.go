package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// Cascade: the cheap model drafts; drafts that fail the JSON Schema check,
// and only those, escalate to the next model, which sees the draft; the
// reply lists both attempts.
func TestCascadeEscalatesOnlyFailingDrafts(t *testing.T) {
	e := start(t, func(c *app.Config) {
		for i := range c.Policy.Routes {
			if c.Policy.Routes[i].Name == "extract" {
				c.Policy.Routes[i].Strategy = "cascade"
			}
		}
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"gemini": {Behavior: sim.Behavior{InvalidJSONRate: sim.Ptr(0.3)}}}}
	})
	schema := json.RawMessage(`{"type":"object","required":["name","total"],"properties":{"name":{"type":"string"},"total":{"type":"number"}}}`)
	var reqs []*envelope.Request
	for i := range 30 {
		r := e.request(fmt.Sprintf("x%02d", i), "extract", fmt.Sprintf("Extract name and total from invoice %d", i))
		r.ResponseFormat = &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{Name: "inv", Schema: schema}}
		reqs = append(reqs, r)
	}
	escalated := 0
	for id, rs := range e.submitAll(reqs, 60*time.Second) {
		r := rs[0]
		if r.Status != envelope.StatusOK {
			t.Fatalf("%s: %+v", id, r.Error)
		}
		switch {
		case len(r.Attempts) == 1 && r.Attempts[0].Vendor == "gemini" && r.Attempts[0].Outcome == envelope.OutcomeOK && !r.Fallback:
		case len(r.Attempts) == 2 && r.Attempts[0].Vendor == "gemini" && r.Attempts[0].Outcome == envelope.OutcomeQualityFailed &&
			r.Attempts[1].Outcome == envelope.OutcomeOK && r.Fallback:
			escalated++
		default:
			t.Fatalf("%s: attempts %+v", id, r.Attempts)
		}
	}
	drafts := e.sys.Sim.Calls().Model("gemini", "gemini-2.5-flash")
	t.Logf("%d of 30 drafts failed the schema and escalated", escalated)
	if escalated == 0 || escalated == 30 || drafts.Calls != 30 {
		t.Fatalf("escalated %d, gemini calls %d: the scenario should fail some drafts, not all", escalated, drafts.Calls)
	}
	if seen := e.sys.Sim.Calls().Model("openai", "gpt-4o").LastPrompt; !strings.Contains(seen, "rejected by a quality check") {
		t.Fatalf("the escalation did not carry the draft: %q", seen)
	}
}
