package openai

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

func ptr[T any](v T) *T { return &v }

func msgs() []envelope.Message {
	return []envelope.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"}}
}

func TestBuildBody(t *testing.T) {
	strict := true
	cases := []struct {
		name string
		cfg  Config
		req  provider.Request
		want map[string]any // top-level fields that must be present (JSON-compared)
		none []string       // fields that must be absent
	}{
		{"basic", Config{}, provider.Request{Model: "gpt-4o", Messages: msgs(), MaxTokens: 10, Temperature: ptr(0.2)},
			map[string]any{"model": "gpt-4o", "max_tokens": 10, "temperature": 0.2,
				"messages": []any{map[string]any{"role": "system", "content": "be brief"}, map[string]any{"role": "user", "content": "hi"}}},
			[]string{"max_completion_tokens", "response_format"}},
		{"reasoning model", Config{}, provider.Request{Model: "o3-mini", Messages: msgs(), MaxTokens: 10},
			map[string]any{"max_completion_tokens": 10}, []string{"max_tokens", "temperature"}},
		{"configured max_completion_tokens", Config{MaxCompletionTokens: true}, provider.Request{Model: "gpt-4o", Messages: msgs(), MaxTokens: 7},
			map[string]any{"max_completion_tokens": 7}, []string{"max_tokens"}},
		{"json schema gets a name", Config{}, provider.Request{Model: "m", Messages: msgs(), ResponseFormat: &envelope.ResponseFormat{Type: "json_schema",
			JSONSchema: &envelope.JSONSchemaSpec{Schema: json.RawMessage(`{"type":"object"}`), Strict: &strict}}},
			map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "response", "schema": map[string]any{"type": "object"}, "strict": true}}}, nil},
		{"text format omitted", Config{}, provider.Request{Model: "m", Messages: msgs(), ResponseFormat: &envelope.ResponseFormat{Type: "text"}},
			nil, []string{"response_format"}},
		{"options merged", Config{}, provider.Request{Model: "m", Messages: msgs(), Options: json.RawMessage(`{"reasoning_effort":"low","model":"ignored","seed":3}`)},
			map[string]any{"reasoning_effort": "low", "model": "m", "seed": 3}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, err := New(tc.cfg).BuildBody(&tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				a, _ := json.Marshal(got[k])
				b, _ := json.Marshal(v)
				if string(a) != string(b) {
					t.Errorf("%s = %s, want %s", k, a, b)
				}
			}
			for _, k := range tc.none {
				if _, ok := got[k]; ok {
					t.Errorf("%s present: %s", k, body)
				}
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		content string
		finish  string
		usage   envelope.Usage
		errCls  provider.Class
	}{
		{"ok", `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}`,
			"hello", "stop", envelope.Usage{InputTokens: 10, OutputTokens: 2, CachedTokens: 4}, ""},
		{"length", `{"choices":[{"message":{"content":"hel"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`,
			"hel", "length", envelope.Usage{InputTokens: 1, OutputTokens: 1}, ""},
		{"tool calls", `{"choices":[{"message":{"content":null,"tool_calls":[{}]},"finish_reason":"tool_calls"}]}`, "", "tool_calls", envelope.Usage{}, ""},
		{"refusal", `{"choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"stop"}]}`, "I can't", "content_filter", envelope.Usage{}, ""},
		{"content filter", `{"choices":[{"message":{"content":""},"finish_reason":"content_filter"}]}`, "", "content_filter", envelope.Usage{}, ""},
		{"cached clamp", `{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":-1,"prompt_tokens_details":{"cached_tokens":9}}}`,
			"x", "stop", envelope.Usage{InputTokens: 3, CachedTokens: 3}, ""},
		{"reasoning subset of completion", `{"choices":[{"message":{"content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":50,"completion_tokens_details":{"reasoning_tokens":40}}}`,
			"42", "stop", envelope.Usage{InputTokens: 10, OutputTokens: 50, ReasoningTokens: 40}, ""},
		{"reasoning clamped to completion", `{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":9}}}`,
			"x", "stop", envelope.Usage{InputTokens: 1, OutputTokens: 5, ReasoningTokens: 5}, ""},
		{"openrouter cost and cache write", `{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":5,"cost":0.00042,"prompt_tokens_details":{"cached_tokens":20,"cache_write_tokens":30}}}`,
			"x", "stop", envelope.Usage{InputTokens: 100, OutputTokens: 5, CachedTokens: 20, CacheWriteTokens: 30, VendorCostUSD: 0.00042, VendorCostReported: true}, ""},
		{"openrouter free model reports cost 0", `{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"cost":0}}`,
			"x", "stop", envelope.Usage{InputTokens: 10, OutputTokens: 5, VendorCostReported: true}, ""},
		{"error object in 200", `{"error":{"message":"upstream failed","code":502}}`, "", "", envelope.Usage{}, provider.ClassBadResponse},
		{"openrouter choice error", `{"choices":[{"error":{"message":"provider died","code":502},"message":{"content":""}}]}`, "", "", envelope.Usage{}, provider.ClassBadResponse},
		{"no choices", `{"choices":[]}`, "", "", envelope.Usage{}, provider.ClassBadResponse},
		{"no message", `{"choices":[{"finish_reason":"stop"}]}`, "", "", envelope.Usage{}, provider.ClassBadResponse},
		{"html", `<html>502 Bad Gateway</html>`, "", "", envelope.Usage{}, provider.ClassBadResponse},
		{"empty", ``, "", "", envelope.Usage{}, provider.ClassBadResponse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := DecodeResponse([]byte(tc.body))
			if tc.errCls != "" {
				ve := provider.AsError(err)
				if err == nil || ve.Class != tc.errCls || !ve.Retryable {
					t.Fatalf("err %v, want retryable %s", err, tc.errCls)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Content != tc.content || resp.FinishReason != tc.finish || resp.Usage != tc.usage {
				t.Fatalf("got %+v", resp)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, "requests/rate_limit_exceeded: Rate limit reached"},
		{`{"error":{"message":"No auth credentials found","code":401}}`, "401: No auth credentials found"},
		{`{"error":{"message":"bad","type":"invalid_request_error","code":null}}`, "invalid_request_error: bad"},
		{`upstream connect error`, "upstream connect error"},
	}
	for _, tc := range cases {
		if got := ErrorMessage([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestCompleteOverHTTP(t *testing.T) {
	const key = "sk-unit-SECRET"
	type seen struct {
		path, auth, referer string
		body                map[string]any
	}
	cases := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		wantClass provider.Class
		wantAfter time.Duration
	}{
		{"ok", 200, nil, `{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}`, "", 0},
		{"429 retry-after", 429, map[string]string{"retry-after": "2"}, `{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`, provider.ClassRateLimited, 2 * time.Second},
		{"401 echoes key", 401, nil, `{"error":{"message":"Incorrect API key provided: sk-unit-SECRET","type":"invalid_request_error","code":"invalid_api_key"}}`, provider.ClassAuth, 0},
		{"503 overloaded", 503, nil, `{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error"}}`, provider.ClassOverloaded, 0},
		{"502 html", 502, nil, `<html>bad gateway</html>`, provider.ClassServerError, 0},
		{"200 garbage", 200, nil, `not json`, provider.ClassBadResponse, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got seen
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls++
				got.path, got.auth, got.referer = r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("HTTP-Referer")
				b, _ := io.ReadAll(r.Body)
				_ = json.Unmarshal(b, &got.body)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a := New(Config{BaseURL: srv.URL + "/api/v1/", APIKey: key, Headers: map[string]string{"HTTP-Referer": "https://switchyard.test"}})
			resp, err := a.Complete(context.Background(), &provider.Request{Model: "m", Messages: msgs()})
			if calls != 1 {
				t.Fatalf("%d calls: adapters never retry", calls)
			}
			if got.path != "/api/v1/chat/completions" || got.auth != "Bearer "+key || got.referer != "https://switchyard.test" || got.body["model"] != "m" {
				t.Fatalf("request %+v", got)
			}
			if tc.wantClass == "" {
				if err != nil || resp.Content != "hi" || resp.HTTPStatus != 200 || resp.Usage.InputTokens != 5 {
					t.Fatalf("resp %+v err %v", resp, err)
				}
				return
			}
			ve := provider.AsError(err)
			if err == nil || ve.Class != tc.wantClass || ve.RetryAfter != tc.wantAfter || (tc.status != 200 && ve.HTTPStatus != tc.status) {
				t.Fatalf("err %+v, want %s", ve, tc.wantClass)
			}
			if strings.Contains(err.Error(), key) {
				t.Fatalf("error leaks key: %v", err)
			}
		})
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"choices":[{"message":{"content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}`,
		`{"error":{"message":"x","code":502}}`,
		`{"choices":[{"error":{"message":"x"}}]}`,
		`{"choices":[{"message":{"content":null,"refusal":"no"}}]}`,
		`{"choices":null,"usage":{"prompt_tokens":-5}}`,
		``, `null`, `[]`, `{"choices":[null]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := DecodeResponse(body)
		if (resp == nil) == (err == nil) {
			t.Fatalf("exactly one of resp/err: %v %v", resp, err)
		}
		if err != nil {
			if ve := provider.AsError(err); ve.Class != provider.ClassBadResponse || !ve.Retryable {
				t.Fatalf("error class %+v", ve)
			}
			return
		}
		u := resp.Usage
		if u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedTokens < 0 || u.CachedTokens > u.InputTokens {
			t.Fatalf("usage %+v", u)
		}
		switch resp.FinishReason {
		case "stop", "length", "content_filter", "tool_calls":
		default:
			t.Fatalf("finish %q", resp.FinishReason)
		}
		_ = ErrorMessage(body)
	})
}

// TestStatusErrorPerVendor: every status gets a deliberate class, refined
// by what OpenAI and OpenRouter say in their error bodies.
func TestStatusErrorPerVendor(t *testing.T) {
	cases := []struct {
		name       string
		openRouter bool
		status     int
		body       string
		want       provider.Class
		retryable  bool
	}{
		{"openai context length", false, 400, `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`, provider.ClassContextLength, false},
		{"openai plain 400", false, 400, `{"error":{"message":"Invalid 'temperature'","type":"invalid_request_error","code":"invalid_value"}}`, provider.ClassInvalidRequest, false},
		{"openai insufficient quota", false, 429, `{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}`, provider.ClassPaymentRequired, false},
		{"openai rate limit", false, 429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, provider.ClassRateLimited, true},
		{"openai 402", false, 402, `{"error":{"message":"billing"}}`, provider.ClassPaymentRequired, false},
		{"405", false, 405, `{"error":{"message":"Method Not Allowed"}}`, provider.ClassNotFound, false},
		{"410", false, 410, `{"error":{"message":"model retired"}}`, provider.ClassNotFound, false},
		{"451", false, 451, `{"error":{"message":"Unavailable For Legal Reasons"}}`, provider.ClassContentRefused, false},
		{"418 unknown 4xx", false, 418, `{"error":{"message":"teapot"}}`, provider.ClassClientError, false},
		{"504", false, 504, `upstream timeout`, provider.ClassTimeout, true},
		{"openrouter 402 credits", true, 402, `{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}`, provider.ClassPaymentRequired, false},
		{"openrouter 403 moderation", true, 403, `{"error":{"code":403,"message":"meta-llama/llama-3.3-70b-instruct requires moderation on OpenRouter. Your input was flagged for \"harassment\".","metadata":{"reasons":["harassment"],"flagged_input":"..."}}}`, provider.ClassContentRefused, false},
		{"openrouter 403 other", true, 403, `{"error":{"code":403,"message":"Key disabled"}}`, provider.ClassForbidden, false},
		{"openrouter context length", true, 400, `{"error":{"code":400,"message":"This endpoint's maximum context length is 131072 tokens. However, you requested about 200000 tokens."}}`, provider.ClassContextLength, false},
		{"openrouter 408", true, 408, `{"error":{"code":408,"message":"Timed out"}}`, provider.ClassTimeout, true},
		{"openrouter 503 no provider", true, 503, `{"error":{"code":503,"message":"No allowed providers are available for the selected model."}}`, provider.ClassServerError, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := New(Config{OpenRouter: tc.openRouter})
			e := a.StatusError(tc.status, http.Header{}, []byte(tc.body))
			if e.Class != tc.want || e.Retryable != tc.retryable || e.HTTPStatus != tc.status || e.Message == "" {
				t.Fatalf("got %+v, want class %s retryable %v", e, tc.want, tc.retryable)
			}
		})
	}
}

// TestOpenRouterAsksForUsageAccounting: OpenRouter reports usage.cost
// when the body asks for it; other OpenAI-compatible vendors get no such
// field.
func TestOpenRouterAsksForUsageAccounting(t *testing.T) {
	req := &provider.Request{Model: "m", Messages: msgs()}
	for _, tc := range []struct {
		openRouter bool
		want       string
	}{{true, `{"include":true}`}, {false, ""}} {
		body, err := New(Config{OpenRouter: tc.openRouter}).BuildBody(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		if got := string(m["usage"]); got != tc.want {
			t.Errorf("openRouter=%v: usage %q, want %q", tc.openRouter, got, tc.want)
		}
	}
}
