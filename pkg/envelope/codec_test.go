package envelope_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// sampleWork is a work envelope as the gate sees it: a request with a
// schema and options, a chain, a reservation, one attempt and its answer.
func sampleWork() *envelope.Work {
	temp, strict, cache := 0.2, true, false
	now := time.Date(2026, 12, 1, 3, 0, 0, 123456789, time.UTC)
	return &envelope.Work{
		Key: "t1:req-0001",
		Request: envelope.Request{
			ID: "req-0001", Tenant: "t1", User: "u-42", EndpointTag: "chat", Environment: "prod",
			Route: "bench", Model: "gpt-4o-mini", MaxTokens: 256, Temperature: &temp, TimeoutMS: 30000,
			Messages: []envelope.Message{{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Say hello in \"JSON\" — ünïcode ✓ \\ and a tab\t."}},
			ResponseFormat: &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{Name: "greet",
				Schema: json.RawMessage(`{"type":"object","properties":{"greeting":{"type":"string"}}}`), Strict: &strict}},
			Policy:        &envelope.RequestPolicy{Quality: "high", MaxLatencyMS: 5000, MaxCostUSD: 0.5, Cache: &cache},
			Metadata:      map[string]string{"team": "search", "run": "7"},
			VendorOptions: map[string]json.RawMessage{"openai": json.RawMessage(`{"seed":7}`)},
		},
		Class:      envelope.Classification{Task: "chat", PII: []string{"email"}, TokenEstimate: 42},
		Route:      "bench",
		Strategy:   "fallback",
		ReceivedAt: now,
		Deadline:   now.Add(30 * time.Second),
		Chain:      []envelope.Target{{Vendor: "mock", Model: "gpt-4o-mini"}, {Vendor: "anthropic", Model: "claude"}},
		Budget:     json.RawMessage(`{"tenant":"t1","reserved_usd":0.01}`),
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "mock", Model: "gpt-4o-mini", Outcome: "ok", LatencyMS: 3,
			Usage: envelope.Usage{InputTokens: 12, OutputTokens: 9}, CostUSD: 0.0000072}},
		Current: &envelope.Result{Content: `{"greeting":"Hello! This is a fixed mock completion."}`, FinishReason: "stop",
			Usage: envelope.Usage{InputTokens: 12, OutputTokens: 9}, CostUSD: 0.0000072, PriceKnown: true, LatencyMS: 3, StartedAt: now},
		Quality:         &envelope.Quality{Passed: true, Checks: []string{"schema", "length"}},
		AttemptDeadline: now.Add(10 * time.Second),
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

// UnmarshalWork must read every envelope the stages write exactly as
// encoding/json does: a full envelope, a minimal one, nulls, unknown fields
// (a newer stage's), escapes, mis-cased keys, invalid UTF-8.
func TestUnmarshalWorkMatchesEncodingJSON(t *testing.T) {
	full, err := json.Marshal(sampleWork())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data string
	}{
		{"full envelope", string(full)},
		{"minimal", `{"key":"k","request":{"id":"i","tenant":"t","messages":[{"role":"user","content":"hi"}]}}`},
		{"nulls", `{"key":"k","request":{"id":"i","tenant":"t","messages":null,"temperature":null},"chain":null,"budget":null,"current":null}`},
		{"unknown fields", `{"key":"k","future":{"a":[1,2,{"b":null}]},"request":{"id":"i","tenant":"t","x":1.5e3}}`},
		{"escapes", `{"key":"k\u00e9\ud83d\ude00","request":{"id":"i","tenant":"t","messages":[{"role":"user","content":"a\"b\\c\/d\n"}]}}`},
		{"mis-cased keys", `{"KEY":"k","Route":"r","request":{"ID":"i","tenant":"t"}}`},
		{"invalid UTF-8", "{\"key\":\"k\xff\xfe\",\"request\":{\"id\":\"i\",\"tenant\":\"t\"}}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want, got envelope.Work
			if err := json.Unmarshal([]byte(tt.data), &want); err != nil {
				t.Fatalf("encoding/json: %v", err)
			}
			if err := envelope.UnmarshalWork([]byte(tt.data), &got); err != nil {
				t.Fatalf("UnmarshalWork: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("UnmarshalWork read\n%+v\nencoding/json read\n%+v", got, want)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"key":1}`, `[]`, `{"key":"k"}x`, `{"received_at":"yesterday"}`} {
		var w envelope.Work
		if err := envelope.UnmarshalWork([]byte(bad), &w); err == nil {
			t.Errorf("UnmarshalWork(%q) accepted it; encoding/json refuses it", bad)
		}
	}
}

func BenchmarkUnmarshalWork(b *testing.B) {
	data, err := json.Marshal(sampleWork())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		fn   func([]byte, *envelope.Work) error
	}{
		{"encoding_json", func(d []byte, w *envelope.Work) error { return json.Unmarshal(d, w) }},
		{"UnmarshalWork", envelope.UnmarshalWork},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var w envelope.Work
				if err := bc.fn(data, &w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
