package respcache

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// fakeClock is a clock the test moves.
type fakeClock = testkit.Clock

func newClock() *fakeClock { return testkit.NewClock(time.Now().UTC()) }

func startJS(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	return connectJS(tb, testkit.Server(tb))
}

func connectJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	_, js := testkit.Connect(tb, url)
	return js
}

func newCache(tb testing.TB, js jetstream.JetStream, cfg Config) *Cache {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, js, cfg, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func baseRequest() *envelope.Request {
	return &envelope.Request{
		ID:            "req-1",
		Tenant:        "acme",
		User:          "u-1",
		EndpointTag:   "support",
		PromptVersion: "p1",
		Environment:   "prod",
		ReplyTo:       "llm.replies.acme.req-1",
		Messages: []envelope.Message{
			{Role: "system", Content: "You are terse."},
			{Role: "user", Content: "Summarise the ticket."},
		},
		MaxTokens:   256,
		Temperature: ptr(0.0),
		ResponseFormat: &envelope.ResponseFormat{
			Type: "json_schema",
			JSONSchema: &envelope.JSONSchemaSpec{
				Name:   "summary",
				Schema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}`),
			},
		},
		VendorOptions: map[string]json.RawMessage{"openai": json.RawMessage(`{"seed":7,"top_p":0.9}`)},
		TimeoutMS:     30000,
		Metadata:      map[string]string{"ticket": "T-1"},
	}
}

var testRoute = &policy.Route{
	Name:          "support",
	Strategy:      "fallback",
	OnQualityFail: policy.OnQualityEscalate,
	Chain: []policy.Target{
		{Vendor: "openai", Model: "gpt-4o-mini"},
		{Vendor: "anthropic", Model: "claude-haiku-4-5"},
	},
}

func keyOf(r *envelope.Request) string { return Key(r, "support", Fingerprint(testRoute)) }

func TestKeyStability(t *testing.T) {
	base := keyOf(baseRequest())
	if !strings.HasPrefix(base, "v1.") || len(base) != 3+64 {
		t.Fatalf("key shape: %q", base)
	}
	if again := keyOf(baseRequest()); again != base {
		t.Fatalf("key not deterministic: %s vs %s", again, base)
	}

	same := map[string]func(r *envelope.Request){
		"different id, user, metadata and other non-answer fields": func(r *envelope.Request) {
			r.ID, r.User = "req-2", "u-2"
			r.EndpointTag, r.PromptVersion, r.Environment = "other", "p2", "staging"
			r.ReplyTo, r.TimeoutMS = "elsewhere", 5000
			r.Metadata = map[string]string{"ticket": "T-2", "x": "y"}
		},
		"content whitespace trimmed": func(r *envelope.Request) {
			r.Messages[0].Content = "  You are terse.\n"
			r.Messages[1].Content = "\tSummarise the ticket.  "
		},
		"response_format key order and spacing": func(r *envelope.Request) {
			r.ResponseFormat.JSONSchema.Schema = json.RawMessage(`{ "properties": {"b": {"type": "number"}, "a": {"type":"string"}},
				"type": "object" }`)
		},
		"vendor_options key order": func(r *envelope.Request) {
			r.VendorOptions = map[string]json.RawMessage{"openai": json.RawMessage(`{ "top_p": 0.9, "seed": 7 }`)}
		},
		"policy limits and cache flag": func(r *envelope.Request) {
			r.Policy = &envelope.RequestPolicy{MaxLatencyMS: 100, MaxCostUSD: 0.5, Cache: ptr(true)}
		},
	}
	for name, mut := range same {
		t.Run("same/"+name, func(t *testing.T) {
			r := baseRequest()
			mut(r)
			if got := keyOf(r); got != base {
				t.Fatalf("key changed: %s vs %s", got, base)
			}
		})
	}

	otherRoute := *testRoute
	otherRoute.Chain = []policy.Target{{Vendor: "anthropic", Model: "claude-haiku-4-5"}, {Vendor: "openai", Model: "gpt-4o-mini"}}
	differ := map[string]func(r *envelope.Request) string{
		"tenant":            func(r *envelope.Request) string { r.Tenant = "globex"; return keyOf(r) },
		"route name":        func(r *envelope.Request) string { return Key(r, "other", Fingerprint(testRoute)) },
		"route fingerprint": func(r *envelope.Request) string { return Key(r, "support", Fingerprint(&otherRoute)) },
		"message content":   func(r *envelope.Request) string { r.Messages[1].Content = "Summarise the ticket!"; return keyOf(r) },
		"inner whitespace":  func(r *envelope.Request) string { r.Messages[1].Content = "Summarise  the ticket."; return keyOf(r) },
		"role":              func(r *envelope.Request) string { r.Messages[0].Role = "user"; return keyOf(r) },
		"message split": func(r *envelope.Request) string {
			r.Messages = []envelope.Message{{Role: "system", Content: "You are terse.user"}, {Role: "Summarise the ticket.", Content: ""}}
			return keyOf(r)
		},
		"extra message": func(r *envelope.Request) string {
			r.Messages = append(r.Messages, envelope.Message{Role: "user", Content: ""})
			return keyOf(r)
		},
		"max_tokens": func(r *envelope.Request) string { r.MaxTokens = 257; return keyOf(r) },
		// A pinned model answers itself, not with the route's cached answer.
		"pinned model":       func(r *envelope.Request) string { r.Model = "openai/gpt-4o"; return keyOf(r) },
		"temperature":        func(r *envelope.Request) string { r.Temperature = ptr(0.7); return keyOf(r) },
		"temperature absent": func(r *envelope.Request) string { r.Temperature = nil; return keyOf(r) },
		"response_format": func(r *envelope.Request) string {
			r.ResponseFormat = &envelope.ResponseFormat{Type: "json_object"}
			return keyOf(r)
		},
		"no response_format": func(r *envelope.Request) string { r.ResponseFormat = nil; return keyOf(r) },
		"vendor_options": func(r *envelope.Request) string {
			r.VendorOptions["openai"] = json.RawMessage(`{"seed":8,"top_p":0.9}`)
			return keyOf(r)
		},
		"no vendor_options":   func(r *envelope.Request) string { r.VendorOptions = nil; return keyOf(r) },
		"policy residency":    func(r *envelope.Request) string { r.Policy = &envelope.RequestPolicy{Residency: "eu"}; return keyOf(r) },
		"policy quality tier": func(r *envelope.Request) string { r.Policy = &envelope.RequestPolicy{Quality: "high"}; return keyOf(r) },
	}
	seen := map[string]string{base: "base"}
	for name, mut := range differ {
		t.Run("differ/"+name, func(t *testing.T) {
			got := mut(baseRequest())
			if prev, dup := seen[got]; dup {
				t.Fatalf("key collides with %s", prev)
			}
			seen[got] = name
		})
	}
}

func TestFingerprint(t *testing.T) {
	fp := Fingerprint(testRoute)
	if len(fp) != 32 || Fingerprint(nil) != "" {
		t.Fatalf("fingerprint shape: %q", fp)
	}
	r := *testRoute
	r.Match = policy.Match{Tasks: []string{"chat"}}
	r.Retry = policy.Retry{Attempts: 3}
	if Fingerprint(&r) != fp {
		t.Fatal("match rules and retry policy must not change the fingerprint")
	}
	for name, mut := range map[string]func(r *policy.Route){
		"strategy":        func(r *policy.Route) { r.Strategy = "cost" },
		"on_quality_fail": func(r *policy.Route) { r.OnQualityFail = policy.OnQualityDegrade },
		"chain model":     func(r *policy.Route) { r.Chain = []policy.Target{{Vendor: "openai", Model: "gpt-4o"}, r.Chain[1]} },
		"chain shorter":   func(r *policy.Route) { r.Chain = r.Chain[:1] },
	} {
		r := *testRoute
		r.Chain = append([]policy.Target(nil), testRoute.Chain...)
		mut(&r)
		if Fingerprint(&r) == fp {
			t.Errorf("%s: fingerprint unchanged", name)
		}
	}
}

func TestEligible(t *testing.T) {
	req := func(mut func(r *envelope.Request)) *envelope.Request {
		r := baseRequest()
		if mut != nil {
			mut(r)
		}
		return r
	}
	sampled := req(func(r *envelope.Request) { r.Temperature = ptr(0.8) })
	defaultTemp := req(func(r *envelope.Request) { r.Temperature = nil })
	cases := []struct {
		name                      string
		req                       *envelope.Request
		sensitive, allowSensitive bool
		skipSampled               bool
		want                      bool
	}{
		{name: "plain", req: req(nil), want: true},
		{name: "nil request", req: nil, want: false},
		{name: "no tenant", req: req(func(r *envelope.Request) { r.Tenant = "" }), want: false},
		{name: "no messages", req: req(func(r *envelope.Request) { r.Messages = nil }), want: false},
		{name: "cache false", req: req(func(r *envelope.Request) { r.Policy = &envelope.RequestPolicy{Cache: ptr(false)} }), want: false},
		{name: "cache true", req: req(func(r *envelope.Request) { r.Policy = &envelope.RequestPolicy{Cache: ptr(true)} }), want: true},
		{name: "policy without cache flag", req: req(func(r *envelope.Request) { r.Policy = &envelope.RequestPolicy{Quality: "high"} }), want: true},
		{name: "sensitive", req: req(nil), sensitive: true, want: false},
		{name: "sensitive, route allows", req: req(nil), sensitive: true, allowSensitive: true, want: true},
		{name: "allowed but not sensitive", req: req(nil), allowSensitive: true, want: true},
		{name: "sensitive, allowed, cache false", req: req(func(r *envelope.Request) { r.Policy = &envelope.RequestPolicy{Cache: ptr(false)} }), sensitive: true, allowSensitive: true, want: false},
		{name: "sampled, default", req: sampled, want: true},
		{name: "default temperature, default", req: defaultTemp, want: true},
		{name: "sampled, skip sampled", req: sampled, skipSampled: true, want: false},
		{name: "default temperature, skip sampled", req: defaultTemp, skipSampled: true, want: false},
		{name: "temperature 0, skip sampled", req: req(nil), skipSampled: true, want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Eligibility{SkipSampled: tc.skipSampled}.Eligible(tc.req, tc.sensitive, tc.allowSensitive)
			if got != tc.want {
				t.Fatalf("Eligible = %v, want %v", got, tc.want)
			}
			if !tc.skipSampled {
				if pkg := Eligible(tc.req, tc.sensitive, tc.allowSensitive); pkg != got {
					t.Fatalf("package Eligible = %v, Eligibility{} = %v", pkg, got)
				}
			}
		})
	}
}

func sampleEntry() Entry {
	return Entry{
		Content:      `{"a":"ok","b":1}`,
		FinishReason: "stop",
		Vendor:       "openai",
		Model:        "gpt-4o-mini",
		Usage:        envelope.Usage{InputTokens: 540, OutputTokens: 180, CachedTokens: 12},
		Quality:      &envelope.Quality{Passed: true, Checks: []string{"json_schema", "non_empty"}},
		CostUSD:      0.00144,
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	js := startJS(t)
	clock := newClock()
	c := newCache(t, js, Config{Now: clock.Now})
	ctx := context.Background()
	key := keyOf(baseRequest())

	if _, ok, err := c.Get(ctx, key); ok || err != nil {
		t.Fatalf("empty cache: ok=%v err=%v", ok, err)
	}
	if err := c.Put(ctx, key, sampleEntry(), time.Minute); err != nil {
		t.Fatal(err)
	}
	e, ok, err := c.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("hit expected: ok=%v err=%v", ok, err)
	}
	want := sampleEntry()
	if e.Content != want.Content || e.FinishReason != want.FinishReason || e.Vendor != want.Vendor ||
		e.Model != want.Model || e.Usage != want.Usage || e.CostUSD != want.CostUSD ||
		e.Quality == nil || !e.Quality.Passed || strings.Join(e.Quality.Checks, ",") != "json_schema,non_empty" {
		t.Fatalf("entry round trip: %+v", e)
	}
	if !e.CreatedAt.Equal(clock.Now()) || !e.ExpiresAt.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("created_at %v expires_at %v, clock %v", e.CreatedAt, e.ExpiresAt, clock.Now())
	}

	req := baseRequest()
	reply := e.Reply(req, "support")
	if !reply.Cached || reply.Status != envelope.StatusOK || reply.ID != req.ID || reply.Tenant != "acme" ||
		reply.Content != want.Content || reply.CostUSD != 0 || reply.Attempts == nil || len(reply.Attempts) != 0 {
		t.Fatalf("reply from entry: %+v", reply)
	}
	back := EntryFromReply(&envelope.Reply{Content: "x", Vendor: "v", Model: "m", Usage: envelope.Usage{InputTokens: 1}, CostUSD: 2, Quality: &envelope.Quality{Passed: true, Checks: []string{"c"}}})
	if back.Content != "x" || back.Vendor != "v" || back.CostUSD != 2 || back.Quality.Checks[0] != "c" {
		t.Fatalf("EntryFromReply: %+v", back)
	}
}

func TestExpiryByCreatedAt(t *testing.T) {
	js := startJS(t)
	clock := newClock()
	c := newCache(t, js, Config{Now: clock.Now})
	ctx := context.Background()
	key := keyOf(baseRequest())

	// The KV keeps the key for an hour; the entry's own TTL is 30s.
	if err := c.Put(ctx, key, sampleEntry(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(29 * time.Second)
	if _, ok, _ := c.Get(ctx, key); !ok {
		t.Fatal("hit expected before expiry")
	}
	clock.Advance(time.Second)
	if _, ok, err := c.Get(ctx, key); ok || err != nil {
		t.Fatalf("expired entry served: ok=%v err=%v", ok, err)
	}
	// The server still holds it: the read-side check did the work.
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, key); err != nil {
		t.Fatalf("raw entry should still be in the bucket: %v", err)
	}

	// A Put over an expired entry replaces it.
	e := sampleEntry()
	e.Content = "fresh"
	if err := c.Put(ctx, key, e, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, key)
	if err != nil || !ok || got.Content != "fresh" {
		t.Fatalf("replacement: %+v ok=%v err=%v", got, ok, err)
	}

	// A Put over a live entry keeps the first answer.
	e.Content = "second"
	if err := c.Put(ctx, key, e, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.Get(ctx, key); got.Content != "fresh" {
		t.Fatalf("live entry overwritten: %q", got.Content)
	}

	// An entry created long ago is not stored at all.
	old := sampleEntry()
	old.CreatedAt = clock.Now().Add(-2 * time.Minute)
	other := Key(baseRequest(), "other", "")
	if err := c.Put(ctx, other, old, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get(ctx, other); ok {
		t.Fatal("already expired entry cached")
	}
}

func TestExpiryByServerTTL(t *testing.T) {
	js := startJS(t)
	c := newCache(t, js, Config{MarkerTTL: time.Second})
	ctx := context.Background()
	key := keyOf(baseRequest())
	if err := c.Put(ctx, key, sampleEntry(), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get(ctx, key); !ok {
		t.Fatal("hit expected right after Put")
	}
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The server removes the key itself (not only the read-side check).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not expire the key: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, ok, err := c.Get(ctx, key); ok || err != nil {
		t.Fatalf("after server expiry: ok=%v err=%v", ok, err)
	}
	// The key can be written again once expired.
	if err := c.Put(ctx, key, sampleEntry(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get(ctx, key); !ok {
		t.Fatal("hit expected after rewrite")
	}
}

func TestSizeLimit(t *testing.T) {
	js := startJS(t)
	c := newCache(t, js, Config{MaxValueBytes: 1024})
	ctx := context.Background()

	small := sampleEntry()
	if err := c.Put(ctx, "v1.small", small, time.Minute); err != nil {
		t.Fatal(err)
	}
	big := sampleEntry()
	big.Content = strings.Repeat("x", 2048)
	if err := c.Put(ctx, "v1.big", big, time.Minute); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	if _, ok, _ := c.Get(ctx, "v1.big"); ok {
		t.Fatal("oversized entry cached")
	}
	if _, ok, _ := c.Get(ctx, "v1.small"); !ok {
		t.Fatal("small entry missing")
	}
}

func TestCorruptEntryIsMiss(t *testing.T) {
	js := startJS(t)
	c := newCache(t, js, Config{})
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "v1.bad", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, "v1.bad"); ok || err != nil {
		t.Fatalf("corrupt entry: ok=%v err=%v", ok, err)
	}
	if err := c.Put(ctx, "v1.bad", sampleEntry(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get(ctx, "v1.bad"); !ok {
		t.Fatal("corrupt entry not replaced")
	}
}

func TestSharedBucket(t *testing.T) {
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	// Two replicas: separate connections, same config.
	a := newCache(t, connectJS(t, ns.ClientURL()), Config{Bucket: "shared_cache"})
	b := newCache(t, connectJS(t, ns.ClientURL()), Config{Bucket: "shared_cache"})
	ctx := context.Background()

	r1 := baseRequest()
	r2 := baseRequest()
	r2.ID, r2.User = "req-other", "someone-else"
	key1, key2 := keyOf(r1), keyOf(r2)
	if key1 != key2 {
		t.Fatal("same request, different key")
	}
	if err := a.Put(ctx, key1, sampleEntry(), time.Minute); err != nil {
		t.Fatal(err)
	}
	e, ok, err := b.Get(ctx, key2)
	if err != nil || !ok || e.Content != sampleEntry().Content {
		t.Fatalf("replica b missed a's entry: %+v ok=%v err=%v", e, ok, err)
	}
	// Another tenant's identical request misses.
	r3 := baseRequest()
	r3.Tenant = "globex"
	if _, ok, _ := b.Get(ctx, keyOf(r3)); ok {
		t.Fatal("cross-tenant hit")
	}

	// Concurrent writers of one key: all succeed, one answer is kept.
	key := Key(baseRequest(), "race", "")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			e := sampleEntry()
			e.Content = "writer"
			errs <- c.Put(ctx, key, e, time.Minute)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, _ := a.Get(ctx, key); !ok {
		t.Fatal("no entry after concurrent puts")
	}
}

func BenchmarkKey(b *testing.B) {
	req := baseRequest()
	fp := Fingerprint(testRoute)
	b.ReportAllocs()
	for b.Loop() {
		_ = Key(req, "support", fp)
	}
}

func BenchmarkGetHit(b *testing.B) {
	js := startJS(b)
	c := newCache(b, js, Config{})
	ctx := context.Background()
	key := keyOf(baseRequest())
	if err := c.Put(ctx, key, sampleEntry(), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := c.Get(ctx, key); !ok || err != nil {
			b.Fatalf("miss: %v", err)
		}
	}
}
