package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// A route with a cache TTL answers a repeated request from the cache:
// cached=true, no vendor call, zero cost in the reply and the ledger.
// Sensitive requests are not cached.
func TestResponseCache(t *testing.T) {
	e := start(t, func(c *app.Config) {
		for i := range c.Policy.Routes {
			if c.Policy.Routes[i].Name == "chat" {
				c.Policy.Routes[i].Cache.TTL.Duration = time.Minute
			}
		}
	})
	first := e.submitAll([]*envelope.Request{e.request("c1", "chat", "What is the capital of France?")}, 20*time.Second)["c1"][0]
	second := e.submitAll([]*envelope.Request{e.request("c2", "chat", "What is the capital of France?")}, 20*time.Second)["c2"][0]
	if first.Cached || !second.Cached || second.Content != first.Content || second.CostUSD != 0 || len(second.Attempts) != 0 {
		t.Fatalf("first cached=%v; second cached=%v cost=%v attempts=%d same=%v", first.Cached, second.Cached, second.CostUSD, len(second.Attempts), second.Content == first.Content)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 1 {
		t.Fatalf("vendor calls = %d, want 1", n)
	}
	// PII: never served from, nor stored in, the cache.
	for i := range 2 {
		r := e.submitAll([]*envelope.Request{e.request(fmt.Sprintf("s%d", i), "chat", "Mail ana@example.com the summary")}, 20*time.Second)[fmt.Sprintf("s%d", i)][0]
		if r.Cached {
			t.Fatalf("sensitive request %d served from the cache", i)
		}
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 3 {
		t.Fatalf("vendor calls = %d, want 3", n)
	}
	tenant := fmt.Sprintf(" AND tenant = '%s'", e.tenant)
	if got := e.eventually("SELECT count() FROM %s.requests FINAL WHERE cached = 1 AND cost_usd = 0"+tenant, 1, 30*time.Second); got != 1 {
		t.Fatalf("cached request rows with zero cost = %d, want 1", got)
	}
}
