package edge

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

const testPolicy = `
version: p1
default_route: chat
vendors:
  openai: {kind: openai, base_url: http://a, timeout: 30s}
models:
  - {vendor: openai, model: gpt-4o, context_window: 1000, price: {input_per_mtok: 1, output_per_mtok: 1}}
  - {vendor: openai, model: org/name, context_window: 1000, price: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  - {name: chat, chain: [{vendor: openai, model: gpt-4o}]}
  - {name: extract, chain: [{vendor: openai, model: gpt-4o}]}
`

func mustPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Every pipeline error code has the status an SDK handles correctly;
// budgets and quotas say when to retry (the next UTC day).
func TestReplyError(t *testing.T) {
	now := time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)
	tests := []struct {
		code       string
		status     int
		retryAfter int
	}{
		{envelope.CodeInvalidRequest, 400, 0},
		{envelope.CodeUnknownRoute, 400, 0},
		{envelope.CodePayloadTooLarge, 413, 0},
		{envelope.CodePolicyBlocked, 403, 0},
		{envelope.CodeBudgetExceeded, 429, 3600},
		{envelope.CodeQuotaExceeded, 429, 3600},
		{envelope.CodeDeadlineExceeded, 504, 0},
		{envelope.CodeAllVendorsFailed, 502, 0},
		{envelope.CodeQualityRejected, 502, 0},
		{envelope.CodeInternal, 500, 0},
		{"something_new", 500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			got := replyError(&envelope.Reply{Status: envelope.StatusError, Error: &envelope.Error{Code: tt.code, Message: "m"}}, now)
			if got.Status != tt.status || got.RetryAfter != tt.retryAfter || got.Code != tt.code || got.Message != "m" {
				t.Fatalf("got %+v, want status %d retry-after %d", got, tt.status, tt.retryAfter)
			}
		})
	}
	if got := replyError(&envelope.Reply{Status: envelope.StatusError}, now); got.Status != 500 {
		t.Fatalf("a failed reply without an error: %+v", got)
	}
}

// Each API's error body has its documented shape and error type.
func TestErrorBodies(t *testing.T) {
	tests := []struct {
		status         int
		openai, anthro string
	}{
		{400, "invalid_request_error", "invalid_request_error"},
		{401, "authentication_error", "authentication_error"},
		{403, "permission_error", "permission_error"},
		{404, "not_found_error", "not_found_error"},
		{413, "invalid_request_error", "request_too_large"},
		{429, "rate_limit_error", "rate_limit_error"},
		{500, "api_error", "api_error"},
		{502, "api_error", "api_error"},
		{504, "timeout_error", "timeout_error"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			e := &apiError{Status: tt.status, Code: "c", Message: "m"}
			o, _ := json.Marshal(openAI{}.errorBody(e))
			if want := `{"error":{"message":"m","type":"` + tt.openai + `","param":null,"code":"c"}}`; string(o) != want {
				t.Errorf("openai: %s, want %s", o, want)
			}
			a, _ := json.Marshal(anthropic{}.errorBody(e))
			if want := `{"type":"error","error":{"type":"` + tt.anthro + `","message":"m"}}`; string(a) != want {
				t.Errorf("anthropic: %s, want %s", a, want)
			}
		})
	}
}

// `model` becomes a route, a pinned catalog model or nothing (auto); a
// key's allow-list holds.
func TestResolveModel(t *testing.T) {
	p := mustPolicy(t)
	open, chatOnly := &apikey.Record{Tenant: "t"}, &apikey.Record{Tenant: "t", Routes: []string{"chat"}}
	tests := []struct {
		name, model string
		key         *apikey.Record
		route, pin  string
		status      int
		code        string
	}{
		{"route name", "extract", open, "extract", "", 0, ""},
		{"route: prefix", "route:chat", open, "chat", "", 0, ""},
		{"auto", "auto", open, "", "", 0, ""},
		{"catalog model", "openai/gpt-4o", open, "", "openai/gpt-4o", 0, ""},
		{"catalog model with a slash", "openai/org/name", open, "", "openai/org/name", 0, ""},
		{"unknown route", "nope", open, "", "", 400, envelope.CodeUnknownRoute},
		{"unknown route: prefix", "route:nope", open, "", "", 400, envelope.CodeUnknownRoute},
		{"unknown catalog model", "openai/gpt-9", open, "", "", 400, "model_not_found"},
		{"empty", "", open, "", "", 400, envelope.CodeInvalidRequest},
		{"allowed route", "chat", chatOnly, "chat", "", 0, ""},
		{"route outside the allow-list", "extract", chatOnly, "", "", 403, envelope.CodePolicyBlocked},
		{"auto with an allow-list", "auto", chatOnly, "", "", 403, envelope.CodePolicyBlocked},
		{"catalog model with an allow-list", "openai/gpt-4o", chatOnly, "", "", 403, envelope.CodePolicyBlocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &envelope.Request{Model: tt.model}
			err := resolveModel(p, tt.key, req)
			if tt.status != 0 {
				if err == nil || err.Status != tt.status || err.Code != tt.code {
					t.Fatalf("got %+v, want %d %s", err, tt.status, tt.code)
				}
				return
			}
			if err != nil || req.Route != tt.route || req.Model != tt.pin {
				t.Fatalf("got route %q model %q err %+v, want route %q model %q", req.Route, req.Model, err, tt.route, tt.pin)
			}
		})
	}
}

// The OpenAI body becomes the envelope: text or text-block content,
// developer → system, max_completion_tokens over max_tokens; anything the
// edge cannot honour is refused with 400, never dropped.
func TestOpenAIDecode(t *testing.T) {
	tests := []struct {
		name, body string
		stream     bool
		errHas     string
		check      func(t *testing.T, r *envelope.Request)
	}{
		{name: "plain", body: `{"model":"chat","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_tokens":5,"max_completion_tokens":7,"temperature":0.5,"user":"u1","metadata":{"k":"v"}}`,
			check: func(t *testing.T, r *envelope.Request) {
				if len(r.Messages) != 2 || r.Messages[0] != (envelope.Message{Role: "system", Content: "be brief"}) || r.Messages[1].Content != "a\nb" ||
					r.MaxTokens != 7 || *r.Temperature != 0.5 || r.User != "u1" || r.Metadata["k"] != "v" || r.Model != "chat" {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "response_format", body: `{"model":"chat","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`,
			check: func(t *testing.T, r *envelope.Request) {
				if r.ResponseFormat == nil || r.ResponseFormat.Type != "json_object" {
					t.Fatalf("%+v", r.ResponseFormat)
				}
			}},
		{name: "stream", body: `{"model":"chat","stream":true,"messages":[{"role":"user","content":"x"}]}`, stream: true},
		{name: "unknown parameter", body: `{"model":"chat","tools":[],"messages":[{"role":"user","content":"x"}]}`, errHas: "unsupported parameter: tools"},
		{name: "n > 1", body: `{"model":"chat","n":2,"messages":[{"role":"user","content":"x"}]}`, errHas: "n: only 1"},
		{name: "tool role", body: `{"model":"chat","messages":[{"role":"tool","content":"x"}]}`, errHas: `messages[0].role: "tool"`},
		{name: "image part", body: `{"model":"chat","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, errHas: `messages[0].content[0].type: "image_url"`},
		{name: "no messages", body: `{"model":"chat","messages":[]}`, errHas: "messages: at least one"},
		{name: "wrong type", body: `{"model":"chat","max_tokens":"ten","messages":[{"role":"user","content":"x"}]}`, errHas: "max_tokens: must be int"},
		{name: "not JSON", body: `{"model":`, errHas: "not valid JSON"},
		{name: "two values", body: `{"model":"chat","messages":[{"role":"user","content":"x"}]} {}`, errHas: "more than one JSON value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &envelope.Request{}
			err, stream := openAI{}.decode([]byte(tt.body), req)
			if stream != tt.stream {
				t.Fatalf("stream = %v", stream)
			}
			if tt.errHas != "" {
				if err == nil || err.Status != 400 || !strings.Contains(err.Message, tt.errHas) {
					t.Fatalf("got %+v, want a 400 saying %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, req)
			}
		})
	}
}

func TestAnthropicDecode(t *testing.T) {
	tests := []struct {
		name, body string
		stream     bool
		errHas     string
		check      func(t *testing.T, r *envelope.Request)
	}{
		{name: "system blocks", body: `{"model":"chat","max_tokens":9,"system":[{"type":"text","text":"s"}],"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"text","text":"y"}]}]}`,
			check: func(t *testing.T, r *envelope.Request) {
				want := []envelope.Message{{Role: "system", Content: "s"}, {Role: "user", Content: "x"}, {Role: "assistant", Content: "y"}}
				if len(r.Messages) != 3 || r.Messages[0] != want[0] || r.Messages[1] != want[1] || r.Messages[2] != want[2] || r.MaxTokens != 9 || r.User != "u" {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "stream", body: `{"model":"chat","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"x"}]}`, stream: true},
		{name: "no max_tokens", body: `{"model":"chat","messages":[{"role":"user","content":"x"}]}`, errHas: "max_tokens"},
		{name: "system role in messages", body: `{"model":"chat","max_tokens":9,"messages":[{"role":"system","content":"x"}]}`, errHas: "messages.0.role"},
		{name: "tool_use block", body: `{"model":"chat","max_tokens":9,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}`, errHas: `"tool_result"`},
		{name: "unknown parameter", body: `{"model":"chat","max_tokens":9,"tools":[],"messages":[{"role":"user","content":"x"}]}`, errHas: "unsupported parameter: tools"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &envelope.Request{}
			err, stream := anthropic{}.decode([]byte(tt.body), req)
			if stream != tt.stream {
				t.Fatalf("stream = %v", stream)
			}
			if tt.errHas != "" {
				if err == nil || err.Status != 400 || !strings.Contains(err.Message, tt.errHas) {
					t.Fatalf("got %+v, want a 400 saying %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, req)
			}
		})
	}
}

// Switchyard's fields come from headers, else from OpenAI metadata (which
// then does not travel on as plain metadata).
func TestApplyHeaders(t *testing.T) {
	tests := []struct {
		name   string
		hdr    map[string]string
		meta   map[string]string
		errHas string
		check  func(t *testing.T, r *envelope.Request)
	}{
		{name: "headers", hdr: map[string]string{HeaderEndpointTag: "e", HeaderPromptVersion: "v2", HeaderStakes: "high", HeaderResidency: "eu",
			HeaderMaxCostUSD: "0.25", HeaderIdempotencyKey: "idem-1", HeaderTimeoutMS: "5000"},
			check: func(t *testing.T, r *envelope.Request) {
				if r.EndpointTag != "e" || r.PromptVersion != "v2" || *r.Policy != (envelope.RequestPolicy{Stakes: "high", Residency: "eu", MaxCostUSD: 0.25}) ||
					r.ID != "idem-1" || r.TimeoutMS != 5000 || r.Metadata[metaIdempotent] == "" {
					t.Fatalf("%+v %+v", r, r.Policy)
				}
			}},
		{name: "metadata, header wins", hdr: map[string]string{HeaderStakes: "low"}, meta: map[string]string{"stakes": "high", "endpoint_tag": "m", "other": "x"},
			check: func(t *testing.T, r *envelope.Request) {
				if r.Policy.Stakes != "low" || r.EndpointTag != "m" || r.Metadata["other"] != "x" || r.Metadata["endpoint_tag"] != "" || r.TimeoutMS != 30000 {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "nothing", check: func(t *testing.T, r *envelope.Request) {
			if r.Policy != nil || r.Metadata != nil || r.ID != "gen" {
				t.Fatalf("%+v", r)
			}
		}},
		{name: "bad cost", hdr: map[string]string{HeaderMaxCostUSD: "free"}, errHas: HeaderMaxCostUSD},
		{name: "zero cost", hdr: map[string]string{HeaderMaxCostUSD: "0"}, errHas: HeaderMaxCostUSD},
		{name: "bad idempotency key", hdr: map[string]string{HeaderIdempotencyKey: "a.b"}, errHas: HeaderIdempotencyKey},
		{name: "bad timeout", hdr: map[string]string{HeaderTimeoutMS: "600001"}, errHas: HeaderTimeoutMS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.hdr {
				h.Set(k, v)
			}
			req := &envelope.Request{ID: "gen", Metadata: tt.meta}
			err := applyHeaders(h, req, 30*time.Second)
			if tt.errHas != "" {
				if err == nil || err.Status != 400 || !strings.Contains(err.Message, tt.errHas) {
					t.Fatalf("got %+v, want a 400 naming %s", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, req)
		})
	}
}

// A reply becomes each API's response with the served model and usage.
func TestResponses(t *testing.T) {
	rep := &envelope.Reply{ID: "r1", Status: envelope.StatusOK, Content: "hi", FinishReason: "length", Vendor: "anthropic", Model: "claude-x",
		Usage: envelope.Usage{InputTokens: 100, OutputTokens: 20, CachedTokens: 30, CacheWriteTokens: 10}}
	created := time.Unix(1700000000, 0)
	o, _ := json.Marshal(openAI{}.response(rep, created))
	wantO := `{"id":"chatcmpl-r1","object":"chat.completion","created":1700000000,"model":"anthropic/claude-x","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"length","logprobs":null}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":30},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":null}`
	if string(o) != wantO {
		t.Errorf("openai:\n%s\nwant\n%s", o, wantO)
	}
	a, _ := json.Marshal(anthropic{}.response(rep, created))
	wantA := `{"id":"msg_r1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"model":"anthropic/claude-x","stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":60,"output_tokens":20,"cache_read_input_tokens":30,"cache_creation_input_tokens":10}}`
	if string(a) != wantA {
		t.Errorf("anthropic:\n%s\nwant\n%s", a, wantA)
	}
	for finish, want := range map[string]string{"stop": "end_turn", "": "end_turn", "content_filter": "refusal", "tool_calls": "tool_use"} {
		rep.FinishReason = finish
		if got := (anthropic{}).response(rep, created).(antResponse).StopReason; got != want {
			t.Errorf("finish %q → %q, want %q", finish, got, want)
		}
	}
	rep.FinishReason = ""
	if got := (openAI{}).response(rep, created).(oaiResponse).Choices[0].FinishReason; got != "stop" {
		t.Errorf("empty finish reason → %q, want stop", got)
	}
}
