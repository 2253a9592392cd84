package provider

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		h    map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{"fractional", map[string]string{"Retry-After": "1.5"}, 1500 * time.Millisecond},
		{"ms wins", map[string]string{"Retry-After": "3", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"http date", map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{"past date", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"negative", map[string]string{"Retry-After": "-4"}, 0},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"bad ms falls back", map[string]string{"Retry-After-Ms": "x", "Retry-After": "2"}, 2 * time.Second},
		{"huge", map[string]string{"Retry-After": "1e300"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.h {
				h.Set(k, v)
			}
			if got := ParseRetryAfter(h, now); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMergeOptions(t *testing.T) {
	base := `{"model":"m","messages":[],"generationConfig":{"maxOutputTokens":5,"temperature":0.1}}`
	cases := []struct {
		name    string
		opts    string
		want    string
		wantErr bool
	}{
		{"empty", ``, base, false},
		{"null", `null`, base, false},
		{"add field", `{"reasoning_effort":"low"}`, `{"model":"m","messages":[],"generationConfig":{"maxOutputTokens":5,"temperature":0.1},"reasoning_effort":"low"}`, false},
		{"deep merge", `{"generationConfig":{"temperature":0.9,"thinkingConfig":{"thinkingBudget":0}}}`, `{"model":"m","messages":[],"generationConfig":{"maxOutputTokens":5,"temperature":0.9,"thinkingConfig":{"thinkingBudget":0}}}`, false},
		{"protected", `{"model":"evil","messages":[{"role":"user"}]}`, base, false},
		{"scalar replaces object", `{"generationConfig":null}`, `{"model":"m","messages":[],"generationConfig":null}`, false},
		{"not an object", `[1,2]`, ``, true},
		{"invalid", `{`, ``, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeOptions([]byte(base), json.RawMessage(tc.opts), "model", "messages")
			if tc.wantErr {
				if ve := AsError(err); err == nil || ve.Class != ClassInvalidRequest || ve.Retryable {
					t.Fatalf("err %v, want terminal invalid_request", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			_ = json.Unmarshal(got, &a)
			_ = json.Unmarshal([]byte(tc.want), &b)
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("got %s, want %s", ja, jb)
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	h := http.Header{}
	h.Set("retry-after", "4")
	cases := []struct {
		status    int
		msg       string
		class     Class
		retryable bool
	}{
		{400, "bad", ClassInvalidRequest, false},
		{401, "Incorrect API key provided: sk-secret-123", ClassAuth, false},
		{429, "slow down", ClassRateLimited, true},
		{500, "", ClassServerError, true},
		{503, "The model is overloaded.", ClassOverloaded, true},
		{503, "maintenance", ClassServerError, true},
		{529, "Overloaded", ClassOverloaded, true},
		{400, "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.", ClassContextLength, false},
		{400, "prompt is too long: 210000 tokens > 200000 maximum", ClassContextLength, false},
		{400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", ClassContextLength, false},
	}
	for _, tc := range cases {
		e := StatusError(tc.status, h, tc.msg, "sk-secret-123")
		if e.Class != tc.class || e.Retryable != tc.retryable || e.HTTPStatus != tc.status || e.RetryAfter != 4*time.Second {
			t.Errorf("%d: %+v", tc.status, e)
		}
		if e.Message == "" || strings.Contains(e.Error(), "sk-secret-123") {
			t.Errorf("%d: message %q", tc.status, e.Message)
		}
	}
}

func TestCleanMessage(t *testing.T) {
	long := strings.Repeat("é", 2000)
	if got := CleanMessage(long, ""); len(got) > maxMessageLen+len("…") || !strings.HasSuffix(got, "…") {
		t.Fatalf("not truncated: %d", len(got))
	}
	if got := CleanMessage("a\nb\x00c key=K", "K"); got != "a bc key=[redacted]" {
		t.Fatalf("got %q", got)
	}
}

func TestCheckRequest(t *testing.T) {
	ok := &Request{Model: "m", Messages: make([]envelope.Message, 1)}
	cases := []struct {
		name string
		req  *Request
		ok   bool
	}{
		{"ok", ok, true},
		{"nil", nil, false},
		{"no model", &Request{Messages: ok.Messages}, false},
		{"no messages", &Request{Model: "m"}, false},
		{"negative max", &Request{Model: "m", Messages: ok.Messages, MaxTokens: -1}, false},
	}
	for _, tc := range cases {
		if err := CheckRequest(tc.req); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestPostJSONClassifiesTransportErrors(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client leaving
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cases := []struct {
		name   string
		ctx    context.Context
		client *http.Client
		url    string
		class  Class
	}{
		{"context deadline", ctx, nil, slow.URL, ClassTimeout},
		{"client timeout", context.Background(), &http.Client{Timeout: 50 * time.Millisecond}, slow.URL, ClassTimeout},
		{"refused", context.Background(), nil, refused, ClassConnection},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PostJSON(tc.ctx, tc.client, tc.url, nil, []byte(`{}`))
			if ve := AsError(err); ve == nil || ve.Class != tc.class || !ve.Retryable {
				t.Fatalf("got %v, want %s", err, tc.class)
			}
		})
	}
}

// TestClassifyStatusIsDeliberate: statuses outside the old table are no
// longer invalid_request by default.
func TestClassifyStatusIsDeliberate(t *testing.T) {
	cases := []struct {
		status    int
		want      Class
		retryable bool
	}{
		{400, ClassInvalidRequest, false}, {401, ClassAuth, false}, {402, ClassPaymentRequired, false},
		{403, ClassForbidden, false}, {404, ClassNotFound, false}, {405, ClassNotFound, false},
		{408, ClassTimeout, true}, {409, ClassConflict, true}, {410, ClassNotFound, false},
		{413, ClassPayloadTooLarge, false}, {418, ClassClientError, false}, {422, ClassUnprocessable, false},
		{429, ClassRateLimited, true}, {451, ClassContentRefused, false}, {499, ClassClientError, false},
		{500, ClassServerError, true}, {502, ClassServerError, true}, {504, ClassTimeout, true},
		{529, ClassOverloaded, true}, {599, ClassServerError, true}, {302, ClassBadResponse, true},
	}
	for _, tc := range cases {
		c, r := ClassifyStatus(tc.status)
		if c != tc.want || r != tc.retryable {
			t.Errorf("ClassifyStatus(%d) = %s, %v; want %s, %v", tc.status, c, r, tc.want, tc.retryable)
		}
		if _, known := c.Info(); !known {
			t.Errorf("ClassifyStatus(%d) = %s, not in the class table", tc.status, c)
		}
	}
}

// TestClassTable: the not-a-vendor-failure classes are exactly the ones
// the executor and gate produce for skipped, cut-short or rejected calls.
func TestClassTable(t *testing.T) {
	cases := []struct {
		c                         Class
		retryable, health, called bool
	}{
		{ClassServerError, true, true, true},
		{ClassRateLimited, true, true, true},
		{ClassTimeout, true, true, true},
		{ClassInvalidRequest, false, false, true},
		{ClassContextLength, false, false, true},
		{ClassPaymentRequired, false, false, true},
		{ClassSaturated, true, false, false},
		{ClassCircuitOpen, true, false, false},
		{ClassCancelled, false, false, true},
		{ClassQuality, true, false, true},
		{ClassPrefillUnsupported, true, false, true},
		{ClassStreamStalled, true, true, true},
		{ClassStreamCut, true, true, true},
		{Class("brand_new"), true, true, true},
	}
	for _, tc := range cases {
		if tc.c.Retryable() != tc.retryable || tc.c.CountsAgainstVendor() != tc.health || tc.c.Called() != tc.called {
			t.Errorf("%s: retryable %v health %v called %v", tc.c, tc.c.Retryable(), tc.c.CountsAgainstVendor(), tc.c.Called())
		}
	}
	skipped := ClassesOf(OriginSkipped)
	if len(skipped) != 2 || skipped[0] != ClassCircuitOpen || skipped[1] != ClassSaturated {
		t.Errorf("skipped classes %v", skipped)
	}
}

func TestRefinePrefill(t *testing.T) {
	prefill := &Request{Model: "m", Messages: []envelope.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "Sure,"}}}
	plain := &Request{Model: "m", Messages: []envelope.Message{{Role: "user", Content: "hi"}}}
	cases := []struct {
		name   string
		req    *Request
		status int
		msg    string
		want   Class
	}{
		{"anthropic prefill refused", prefill, 400, "invalid_request_error: This model does not support assistant message prefill. The conversation must end with a user message.", ClassPrefillUnsupported},
		{"openai-style last message", prefill, 400, "invalid_request_error: the last message must be from the user", ClassPrefillUnsupported},
		{"other 400 on a prefill", prefill, 400, "invalid_request_error: temperature out of range", ClassInvalidRequest},
		{"same words without a prefill", plain, 400, "does not support assistant message prefill", ClassInvalidRequest},
		{"context length stays", prefill, 400, "prompt is too long: final assistant message", ClassContextLength},
		{"not a 400", prefill, 500, "prefill crashed", ClassServerError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ve := RefinePrefill(StatusError(tc.status, nil, tc.msg, ""), tc.req)
			if ve.Class != tc.want || ve.Retryable != tc.want.Retryable() {
				t.Errorf("class %s retryable %v, want %s", ve.Class, ve.Retryable, tc.want)
			}
		})
	}
}
