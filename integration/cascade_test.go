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
//
// The cascade ranks its plans by expected cost per accepted answer with the
// draft model's observed rejection rate (an EWMA, used from 5 samples on),
// so a run of rejected drafts can make the router send a request to the
// dearer model first. That is the product working, but it made this test
// depend on the order in which concurrent verdicts arrived. Two things pin
// it: every model but the draft's (gemini's) costs 1,000× its catalog price
// here, so skipping the draft pays only when every draft seen so far was
// rejected, and the requests go one at a time until one draft has been
// accepted (which draft the simulator rejects is fixed by its prompt), so
// that never holds afterwards.
func TestCascadeEscalatesOnlyFailingDrafts(t *testing.T) {
	e := start(t, func(c *app.Config) {
		for i := range c.Policy.Routes {
			if c.Policy.Routes[i].Name == "extract" {
				c.Policy.Routes[i].Strategy = "cascade"
			}
		}
		for i, m := range c.Policy.Models {
			if m.Vendor != "gemini" {
				c.Policy.Models[i].Price.InputPerMTok *= 1000
				c.Policy.Models[i].Price.OutputPerMTok *= 1000
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
	replies := map[string][]*envelope.Reply{}
	next := 0
	for next < len(reqs) {
		for id, rs := range e.submitAll(reqs[next:next+1], 60*time.Second) {
			replies[id] = rs
		}
		next++
		if r := replies[reqs[next-1].ID][0]; r.Status == envelope.StatusOK && len(r.Attempts) == 1 {
			break // a draft was accepted
		}
	}
	if next < len(reqs) {
		for id, rs := range e.submitAll(reqs[next:], 60*time.Second) {
			replies[id] = rs
		}
	}
	if len(replies) != len(reqs) {
		t.Fatalf("%d replies for %d requests", len(replies), len(reqs))
	}
	escalated := 0
	for id, rs := range replies {
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
