package integration

import (
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// withRetryRoute adds a one-target route "retry" that retries the same
// target up to attempts times.
func withRetryRoute(attempts int) option {
	return func(c *app.Config) {
		c.Policy.Routes = append(c.Policy.Routes, policy.Route{
			Name: "retry", Chain: []policy.Target{{Vendor: "openai", Model: "gpt-4o-mini"}},
			Retry: policy.Retry{Attempts: attempts},
		})
		if err := c.Policy.Validate(); err != nil {
			panic(err)
		}
	}
}

// A 429 with retry-after: 2 is retried no sooner than 2 s later.
func TestRetryAfterIsHonoured(t *testing.T) {
	e := start(t, withRetryRoute(1))
	r := e.request("ra1", "retry", "busy [[sim:status=429]] [[sim:retry_after=2]]")
	replies := e.submitAll([]*envelope.Request{r}, 30*time.Second)
	got := replies["ra1"][0]
	if got.Status != envelope.StatusError || got.Error.Code != envelope.CodeAllVendorsFailed {
		t.Fatalf("want all_vendors_failed, got %+v", got.Error)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 2 {
		t.Fatalf("openai calls = %d, want 2 (one retry)", n)
	}
	if len(got.Attempts) != 2 || got.Attempts[0].ErrorClass != "rate_limited" {
		t.Fatalf("attempts %+v", got.Attempts)
	}
	if got.LatencyMS < 2000 {
		t.Fatalf("retried after %d ms, before the 2 s retry-after", got.LatencyMS)
	}
	if got.Fallback {
		t.Fatal("a retry on the same target is not a fallback")
	}
}

// A persistent 429 without retry-after is not hammered: capped exponential
// backoff keeps it to at most 4 attempts in 3 s, and the request deadline
// bounds the whole affair.
func TestPersistent429IsNotHammered(t *testing.T) {
	e := start(t, withRetryRoute(10))
	r := e.request("ra2", "retry", "busy [[sim:status=429]] [[sim:no_retry_after]]")
	r.TimeoutMS = 3000
	start := time.Now()
	replies := e.submitAll([]*envelope.Request{r}, 30*time.Second)
	elapsed := time.Since(start)
	got := replies["ra2"][0]
	if got.Status != envelope.StatusError {
		t.Fatalf("want an error reply, got %+v", got)
	}
	n := e.simCalls("openai", "gpt-4o-mini")
	if n < 2 || n > 4 {
		t.Fatalf("openai calls in %s = %d, want 2..4", elapsed, n)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("reply took %s; the 3 s deadline should end the retries", elapsed)
	}
}
