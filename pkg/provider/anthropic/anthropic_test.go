package anthropic

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

func TestBuildBody(t *testing.T) {
	schema := json.RawMessage(`{ "type": "object", "properties": {"a": {"type": "string"}} }`)
	cases := []struct {
		name       string
		req        provider.Request
		maxTokens  float64
		system     string // substring of the system prompt ("" = no system)
		nMessages  int
		firstRole  string
		extraKey   string
		wantErrCls provider.Class
	}{
		{"system lifted, default max_tokens", provider.Request{Model: "c", Messages: []envelope.Message{
			{Role: "system", Content: "rule one"}, {Role: "developer", Content: "rule two"}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}, {Role: "tool", Content: "t"}}},
			DefaultMaxTokens, "rule one\n\nrule two", 3, "user", "", ""},
		{"explicit max_tokens", provider.Request{Model: "c", MaxTokens: 50, Messages: []envelope.Message{{Role: "user", Content: "hi"}}}, 50, "", 1, "user", "", ""},
		{"json schema instruction", provider.Request{Model: "c", Messages: []envelope.Message{{Role: "user", Content: "hi"}},
			ResponseFormat: &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{Schema: schema}}},
			DefaultMaxTokens, JSONInstruction + "\n" + SchemaInstruction + "\n" + `{"type":"object","properties":{"a":{"type":"string"}}}`, 1, "user", "", ""},
		{"json object instruction", provider.Request{Model: "c", Messages: []envelope.Message{{Role: "user", Content: "hi"}},
			ResponseFormat: &envelope.ResponseFormat{Type: "json_object"}}, DefaultMaxTokens, JSONInstruction, 1, "user", "", ""},
		{"options", provider.Request{Model: "c", Messages: []envelope.Message{{Role: "user", Content: "hi"}},
			Options: json.RawMessage(`{"thinking":{"type":"enabled","budget_tokens":1024},"messages":[]}`)}, DefaultMaxTokens, "", 1, "user", "thinking", ""},
		{"only system", provider.Request{Model: "c", Messages: []envelope.Message{{Role: "system", Content: "x"}}}, 0, "", 0, "", "", provider.ClassInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, err := BuildBody(&tc.req)
			if tc.wantErrCls != "" {
				if provider.AsError(err).Class != tc.wantErrCls {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				MaxTokens float64 `json:"max_tokens"`
				System    *string `json:"system"`
				Messages  []struct {
					Role string `json:"role"`
				} `json:"messages"`
			}
			var raw map[string]any
			_ = json.Unmarshal(body, &got)
			_ = json.Unmarshal(body, &raw)
			if got.MaxTokens != tc.maxTokens || len(got.Messages) != tc.nMessages || got.Messages[0].Role != tc.firstRole {
				t.Fatalf("body %s", body)
			}
			if tc.system == "" && got.System != nil || tc.system != "" && (got.System == nil || !strings.Contains(*got.System, tc.system)) {
				t.Fatalf("system %v, want %q", got.System, tc.system)
			}
			if tc.extraKey != "" && raw[tc.extraKey] == nil {
				t.Fatalf("option %s missing: %s", tc.extraKey, body)
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
		bad     bool
	}{
		{"ok with cache", `{"type":"message","role":"assistant","content":[{"type":"text","text":"Hel"},{"type":"thinking","thinking":"hmm"},{"type":"text","text":"lo"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_read_input_tokens":30,"cache_creation_input_tokens":5,"output_tokens":7}}`,
			"Hello", "stop", envelope.Usage{InputTokens: 45, OutputTokens: 7, CachedTokens: 30, CacheWriteTokens: 5}, false},
		{"max_tokens", `{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":1}}`,
			"x", "length", envelope.Usage{InputTokens: 1, OutputTokens: 1}, false},
		{"stop_sequence", `{"type":"message","content":[],"stop_reason":"stop_sequence"}`, "", "stop", envelope.Usage{}, false},
		{"tool_use", `{"type":"message","content":[{"type":"tool_use"}],"stop_reason":"tool_use"}`, "", "tool_calls", envelope.Usage{}, false},
		{"refusal", `{"type":"message","content":[],"stop_reason":"refusal"}`, "", "content_filter", envelope.Usage{}, false},
		{"error in 200", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, "", "", envelope.Usage{}, true},
		{"not a message", `{"foo":1}`, "", "", envelope.Usage{}, true},
		{"garbage", `<html>`, "", "", envelope.Usage{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := DecodeResponse([]byte(tc.body))
			if tc.bad {
				if ve := provider.AsError(err); err == nil || ve.Class != provider.ClassBadResponse || !ve.Retryable {
					t.Fatalf("err %v", err)
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

func TestStripCodeFence(t *testing.T) {
	cases := map[string]string{
		"```json\n{\"a\":1}\n```":   `{"a":1}`,
		"  ```\n{\"a\":1}```  ":     `{"a":1}`,
		`{"a":1}`:                   `{"a":1}`,
		"```":                       "```",
		"``````":                    "``````",
		"text ```json\n{}\n``` end": "text ```json\n{}\n``` end",
	}
	for in, want := range cases {
		if got := StripCodeFence(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestCompleteOverHTTP(t *testing.T) {
	const key = "sk-ant-SECRET"
	cases := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		json      bool
		wantClass provider.Class
		wantAfter time.Duration
		content   string
	}{
		{"ok", 200, nil, `{"type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}`, false, "", 0, "hi"},
		{"json fence stripped", 200, nil, `{"type":"message","content":[{"type":"text","text":"` + "```json\\n{}\\n```" + `"}],"stop_reason":"end_turn"}`, true, "", 0, "{}"},
		{"529", 529, nil, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, false, provider.ClassOverloaded, 0, ""},
		{"overloaded type on 500", 500, nil, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, false, provider.ClassOverloaded, 0, ""},
		{"429", 429, map[string]string{"retry-after": "12"}, `{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}`, false, provider.ClassRateLimited, 12 * time.Second, ""},
		{"400", 400, nil, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`, false, provider.ClassInvalidRequest, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/messages" || r.Header.Get("x-api-key") != key || r.Header.Get("anthropic-version") != Version || r.Header.Get("anthropic-beta") != "b1" {
					t.Errorf("request %s %v", r.URL.Path, r.Header)
				}
				_, _ = io.Copy(io.Discard, r.Body)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a := New(Config{BaseURL: srv.URL, APIKey: key, Headers: map[string]string{"anthropic-beta": "b1"}})
			req := &provider.Request{Model: "c", Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
			if tc.json {
				req.ResponseFormat = &envelope.ResponseFormat{Type: "json_object"}
			}
			resp, err := a.Complete(context.Background(), req)
			if tc.wantClass == "" {
				if err != nil || resp.Content != tc.content {
					t.Fatalf("resp %+v err %v", resp, err)
				}
				return
			}
			ve := provider.AsError(err)
			if ve == nil || ve.Class != tc.wantClass || ve.RetryAfter != tc.wantAfter || ve.HTTPStatus != tc.status || !strings.Contains(ve.Message, "error") {
				t.Fatalf("err %+v", ve)
			}
		})
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","content":[{"type":"text","text":"Hel"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_read_input_tokens":30,"cache_creation_input_tokens":5,"output_tokens":7}}`,
		`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		`{"type":"message","usage":{"input_tokens":-3}}`,
		``, `null`, `{"type":"message","content":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		resp, err := DecodeResponse(body)
		if (resp == nil) == (err == nil) {
			t.Fatalf("exactly one of resp/err")
		}
		if err != nil {
			if ve := provider.AsError(err); ve.Class != provider.ClassBadResponse || !ve.Retryable {
				t.Fatalf("class %+v", ve)
			}
			return
		}
		u := resp.Usage
		if u.InputTokens < u.CachedTokens+u.CacheWriteTokens || u.CachedTokens < 0 || u.CacheWriteTokens < 0 || u.OutputTokens < 0 {
			t.Fatalf("usage %+v", u)
		}
		_, _ = ErrorMessage(body)
		_ = StripCodeFence(string(body))
	})
}

// TestStatusErrorPerVendor: Anthropic's error types and messages refine
// the status table.
func TestStatusErrorPerVendor(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		body      string
		want      provider.Class
		retryable bool
	}{
		{"prompt too long", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208000 tokens > 200000 maximum"}}`, provider.ClassContextLength, false},
		{"credit balance", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}`, provider.ClassPaymentRequired, false},
		{"plain 400", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`, provider.ClassInvalidRequest, false},
		{"billing_error 402", 402, `{"type":"error","error":{"type":"billing_error","message":"billing"}}`, provider.ClassPaymentRequired, false},
		{"request_too_large", 413, `{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}`, provider.ClassPayloadTooLarge, false},
		{"timeout_error", 504, `{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}`, provider.ClassTimeout, true},
		{"overloaded 529", 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, provider.ClassOverloaded, true},
		{"not_found", 404, `{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}`, provider.ClassNotFound, false},
		{"unknown 4xx", 418, `{"type":"error","error":{"type":"invalid_request_error","message":"teapot"}}`, provider.ClassClientError, false},
		{"451", 451, `{"type":"error","error":{"type":"permission_error","message":"legal"}}`, provider.ClassContentRefused, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := StatusError(tc.status, http.Header{}, []byte(tc.body), "")
			if e.Class != tc.want || e.Retryable != tc.retryable || e.HTTPStatus != tc.status || e.Message == "" {
				t.Fatalf("got %+v, want class %s retryable %v", e, tc.want, tc.retryable)
			}
		})
	}
}
