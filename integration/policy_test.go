package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// A policy with errors is refused with every problem listed and the running
// one stays; a valid apply reaches every replica's watcher, and the running
// pipeline, in under 2 s without a restart; the history says who and when.
func TestPolicyApplyHotReload(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A second watcher stands for another replica's view.
	other, err := policy.OpenStore(ctx, e.sys.JS, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Watch(ctx, e.sys.Policy, nil); err != nil {
		t.Fatal(err)
	}

	src, err := os.ReadFile(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(src), "kind: gemini", "kind: gemeni", 1)
	bad = strings.Replace(bad, "default_route: chat", "default_route: nowhere", 1)
	if _, err := e.sys.Policies.Apply(ctx, []byte(bad), "tester", "typo"); err == nil ||
		!strings.Contains(err.Error(), "vendors.gemini.kind") || !strings.Contains(err.Error(), "default_route") {
		t.Fatalf("bad policy: want both problems listed, got %v", err)
	}
	if r := e.submitAll([]*envelope.Request{e.request("pa1", "chat", "before")}, 20*time.Second)["pa1"][0]; r.Vendor != "openai" {
		t.Fatalf("before apply: served by %s", r.Vendor)
	}

	// The new version sends chat to gemini first.
	good := strings.Replace(string(src), "  - name: chat\n    strategy: fallback\n    chain:\n      - {vendor: openai, model: gpt-4o-mini}\n",
		"  - name: chat\n    strategy: fallback\n    chain:\n      - {vendor: gemini, model: gemini-2.5-flash}\n      - {vendor: openai, model: gpt-4o-mini}\n", 1)
	if good == string(src) {
		t.Fatal("test policy edit did not apply")
	}
	applied, err := e.sys.Policies.Apply(ctx, []byte(good), "tester", "chat to gemini")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	waitFor(t, 2*time.Second, func() bool {
		r, ok := e.sys.Policies.Current().Route("chat")
		r2, ok2 := other.Current().Route("chat")
		return ok && ok2 && r.Chain[0].Vendor == "gemini" && r2.Chain[0].Vendor == "gemini"
	})
	t.Logf("revision %d reached both watchers in %s", applied.Revision, time.Since(began))
	if r := e.submitAll([]*envelope.Request{e.request("pa2", "chat", "after")}, 20*time.Second)["pa2"][0]; r.Vendor != "gemini" {
		t.Fatalf("after apply: served by %s, want gemini", r.Vendor)
	}
	hist, err := e.sys.Policies.History(ctx)
	if err != nil || len(hist) != 1 || hist[0].AppliedBy != "tester" || hist[0].Comment != "chat to gemini" {
		t.Fatalf("history: %v %+v", err, hist)
	}
}
