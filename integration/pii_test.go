package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// On a route that redacts, the vendor never receives the personal data in
// a prompt: it sees placeholders, and the request still succeeds.
func TestPIIIsRedactedBeforeTheVendor(t *testing.T) {
	e := start(t, func(c *app.Config) {
		for i := range c.Policy.Routes {
			if c.Policy.Routes[i].Name == "chat" {
				c.Policy.Routes[i].RedactPII = true
			}
		}
	})
	r := e.request("pii1", "chat", "Please email ana@example.com about card 4111 1111 1111 1111")
	got := e.submitAll([]*envelope.Request{r}, 20*time.Second)["pii1"][0]
	if got.Status != envelope.StatusOK {
		t.Fatalf("%+v", got.Error)
	}
	seen := e.sys.Sim.Calls().Model("openai", "gpt-4o-mini").LastPrompt
	if strings.Contains(seen, "ana@example.com") || strings.Contains(seen, "4111") {
		t.Fatalf("the vendor received personal data: %q", seen)
	}
	if !strings.Contains(seen, "[EMAIL_1]") || !strings.Contains(seen, "[CARD_1]") {
		t.Fatalf("the vendor prompt lacks the placeholders: %q", seen)
	}
	// Without redaction on the route, the prompt goes as written.
	r2 := e.request("pii2", "summarize", "Summarize: ana@example.com asked for a refund")
	if got := e.submitAll([]*envelope.Request{r2}, 20*time.Second)["pii2"][0]; got.Status != envelope.StatusOK {
		t.Fatalf("%+v", got.Error)
	}
	if seen := e.sys.Sim.Calls().Model("anthropic", "claude-haiku-4-5").LastPrompt; !strings.Contains(seen, "ana@example.com") {
		t.Fatalf("summarize route should not redact: %q", seen)
	}
}
