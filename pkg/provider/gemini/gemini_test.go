package gemini

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

func TestBuildBody(t *testing.T) {
	schema := json.RawMessage(`{"type":"object"}`)
	temp := 0.3
	jsonReq := func() provider.Request {
		return provider.Request{Model: "g", Messages: []envelope.Message{{Role: "user", Content: "hi"}},
			ResponseFormat: &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{Schema: schema}}}
	}
	cases := []struct {
		name   string
		cfg    Config
		req    provider.Request
		want   string // canonical JSON of the whole body
		errCls provider.Class
	}{
		{"roles and system", Config{}, provider.Request{Model: "g", MaxTokens: 20, Temperature: &temp, Messages: []envelope.Message{
			{Role: "system", Content: "sys"}, {Role: "user", Content: "u1"}, {Role: "assistant", Content: "a1"}, {Role: "user", Content: "u2"}}},
			`{"contents":[{"parts":[{"text":"u1"}],"role":"user"},{"parts":[{"text":"a1"}],"role":"model"},{"parts":[{"text":"u2"}],"role":"user"}],"generationConfig":{"maxOutputTokens":20,"temperature":0.3},"systemInstruction":{"parts":[{"text":"sys"}]}}`, ""},
		{"no generation config", Config{}, provider.Request{Model: "g", Messages: []envelope.Message{{Role: "user", Content: "u"}}},
			`{"contents":[{"parts":[{"text":"u"}],"role":"user"}]}`, ""},
		{"json schema", Config{}, jsonReq(),
			`{"contents":[{"parts":[{"text":"hi"}],"role":"user"}],"generationConfig":{"responseJsonSchema":{"type":"object"},"responseMimeType":"application/json"}}`, ""},
		{"legacy schema", Config{LegacySchema: true}, jsonReq(),
			`{"contents":[{"parts":[{"text":"hi"}],"role":"user"}],"generationConfig":{"responseMimeType":"application/json","responseSchema":{"type":"object"}}}`, ""},
		{"options deep merge", Config{}, provider.Request{Model: "g", MaxTokens: 5, Messages: []envelope.Message{{Role: "user", Content: "u"}},
			Options: json.RawMessage(`{"generationConfig":{"thinkingConfig":{"thinkingBudget":0}},"safetySettings":[]}`)},
			`{"contents":[{"parts":[{"text":"u"}],"role":"user"}],"generationConfig":{"maxOutputTokens":5,"thinkingConfig":{"thinkingBudget":0}},"safetySettings":[]}`, ""},
		{"only system", Config{}, provider.Request{Model: "g", Messages: []envelope.Message{{Role: "system", Content: "s"}}}, "", provider.ClassInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, err := New(tc.cfg).BuildBody(&tc.req)
			if tc.errCls != "" {
				if provider.AsError(err).Class != tc.errCls {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var v any
			_ = json.Unmarshal(body, &v)
			got, _ := json.Marshal(v)
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestURL(t *testing.T) {
	a := New(Config{BaseURL: "http://x/gemini/"})
	cases := map[string]string{
		"gemini-2.5-flash":        "http://x/gemini/v1beta/models/gemini-2.5-flash:generateContent",
		"models/gemini-2.5-flash": "http://x/gemini/v1beta/models/gemini-2.5-flash:generateContent",
		"a/b c":                   "http://x/gemini/v1beta/models/a%2Fb%20c:generateContent",
	}
	for in, want := range cases {
		if got := a.URL(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
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
		{"ok", `{"candidates":[{"content":{"role":"model","parts":[{"text":"thinking...","thought":true},{"text":"Hel"},{"text":"lo"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":5,"cachedContentTokenCount":60,"thoughtsTokenCount":7}}`,
			"Hello", "stop", envelope.Usage{InputTokens: 100, OutputTokens: 12, CachedTokens: 60, ReasoningTokens: 7}, false},
		{"max tokens", `{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"MAX_TOKENS"}]}`, "x", "length", envelope.Usage{}, false},
		{"safety", `{"candidates":[{"finishReason":"SAFETY"}]}`, "", "content_filter", envelope.Usage{}, false},
		{"empty content", `{"candidates":[{"content":{"role":"model"},"finishReason":"STOP"}]}`, "", "stop", envelope.Usage{}, false},
		{"prompt blocked", `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4}}`, "", "content_filter", envelope.Usage{InputTokens: 4}, false},
		{"no candidates", `{"usageMetadata":{"promptTokenCount":4}}`, "", "", envelope.Usage{}, true},
		{"error in 200", `{"error":{"code":500,"message":"x","status":"INTERNAL"}}`, "", "", envelope.Usage{}, true},
		{"garbage", `}{`, "", "", envelope.Usage{}, true},
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

func TestParseError(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		msg   string
		delay time.Duration
	}{
		{"retry info", `{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34s"}]}}`, "RESOURCE_EXHAUSTED: quota", 34 * time.Second},
		{"fractional delay", `{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}`, "RESOURCE_EXHAUSTED: q", 1500 * time.Millisecond},
		{"array wrapped", `[{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}]`, "UNAVAILABLE: The model is overloaded.", 0},
		{"bad delay", `{"error":{"message":"m","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"soon"}]}}`, "m", 0},
		{"not json", `Service Unavailable`, "Service Unavailable", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := ParseError([]byte(tc.body))
			if e.Message != tc.msg || e.RetryDelay != tc.delay {
				t.Fatalf("got %+v", e)
			}
		})
	}
}

func TestCompleteOverHTTP(t *testing.T) {
	const key = "AIza-SECRET"
	cases := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		wantClass provider.Class
		wantAfter time.Duration
	}{
		{"ok", 200, nil, `{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}`, "", 0},
		{"429 body delay", 429, nil, `{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}`, provider.ClassRateLimited, 2 * time.Second},
		{"429 header wins", 429, map[string]string{"retry-after": "5"}, `{"error":{"code":429,"message":"quota","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}`, provider.ClassRateLimited, 5 * time.Second},
		{"503 overloaded", 503, nil, `{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, provider.ClassOverloaded, 0},
		{"400 bad key", 400, nil, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}`, provider.ClassAuth, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1beta/models/gemini-x:generateContent" || r.Header.Get("x-goog-api-key") != key || r.URL.RawQuery != "" {
					t.Errorf("request %s?%s %v", r.URL.Path, r.URL.RawQuery, r.Header)
				}
				_, _ = io.Copy(io.Discard, r.Body)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			resp, err := New(Config{BaseURL: srv.URL, APIKey: key}).Complete(context.Background(),
				&provider.Request{Model: "gemini-x", Messages: []envelope.Message{{Role: "user", Content: "hi"}}})
			if tc.wantClass == "" {
				if err != nil || resp.Content != "hi" || resp.FinishReason != "stop" {
					t.Fatalf("resp %+v err %v", resp, err)
				}
				return
			}
			ve := provider.AsError(err)
			if ve == nil || ve.Class != tc.wantClass || ve.RetryAfter != tc.wantAfter || ve.HTTPStatus != tc.status {
				t.Fatalf("err %+v", ve)
			}
		})
	}
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"candidates":[{"content":{"role":"model","parts":[{"text":"a","thought":true},{"text":"b"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":5,"cachedContentTokenCount":60,"thoughtsTokenCount":7}}`,
		`{"promptFeedback":{"blockReason":"SAFETY"}}`,
		`{"error":{"code":429,"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"2s"}]}}`,
		`[{"error":{"code":503}}]`, ``, `null`, `{"candidates":[null]}`,
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
		} else if u := resp.Usage; u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedTokens < 0 || u.CachedTokens > u.InputTokens {
			t.Fatalf("usage %+v", u)
		}
		if e := ParseError(body); e.RetryDelay < 0 {
			t.Fatalf("negative delay")
		}
	})
}

// TestStatusErrorPerVendor: google.rpc statuses and messages refine the
// status table.
func TestStatusErrorPerVendor(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		body      string
		want      provider.Class
		retryable bool
	}{
		{"context length", 400, `{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}`, provider.ClassContextLength, false},
		{"failed precondition", 400, `{"error":{"code":400,"message":"User location is not supported for the API use without a billing account linked.","status":"FAILED_PRECONDITION"}}`, provider.ClassPaymentRequired, false},
		{"invalid key", 400, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`, provider.ClassAuth, false},
		{"plain invalid argument", 400, `{"error":{"code":400,"message":"* GenerateContentRequest.contents: contents is not specified","status":"INVALID_ARGUMENT"}}`, provider.ClassInvalidRequest, false},
		{"permission denied", 403, `{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}`, provider.ClassForbidden, false},
		{"resource exhausted", 429, `{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}`, provider.ClassRateLimited, true},
		{"deadline exceeded", 504, `{"error":{"code":504,"message":"The request timed out. Please try again.","status":"DEADLINE_EXCEEDED"}}`, provider.ClassTimeout, true},
		{"unavailable", 503, `{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`, provider.ClassServerError, true},
		{"cancelled 499", 499, `{"error":{"code":499,"message":"The operation was cancelled.","status":"CANCELLED"}}`, provider.ClassClientError, false},
		{"402", 402, `{"error":{"code":402,"message":"billing"}}`, provider.ClassPaymentRequired, false},
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
