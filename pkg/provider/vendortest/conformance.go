// Package vendortest is the conformance suite every vendor adapter passes
// against a server speaking its wire protocol (in practice the Switchyard
// simulator, services/sim, on loopback).
//
// The suite drives the server with prompt markers, which the simulator
// honours in any message:
//
//	[[sim:status=NNN]]     answer with HTTP status NNN and the vendor's error body
//	[[sim:retry_after=S]]  retry-after (seconds) on a 429
//	[[sim:delay_ms=N]]     wait N ms before answering
//	[[sim:invalid_json]]   answer JSON requests with malformed JSON
//	[[sim:empty]]          answer with empty content
//	[[sim:length]]         finish with the vendor's max-tokens reason
//	[[sim:error=KIND]]     answer with the vendor's own error for a condition:
//	                       context_length (the prompt does not fit) or
//	                       billing (the account cannot pay)
//	[[sim:stream=KIND:N]]  a stream fault after N content chunks (MarkerStream)
//	[[sim:no_prefill]]     refuse a request ending with an assistant turn
//
// Streaming (provider.Streamer) is held to the same answers: deltas make
// the content, usage is reported, and every way a stream fails (stall,
// cut, malformed chunk, error event, refusal) is classified.
package vendortest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// Prompt markers the suite relies on (see the package comment).
const (
	MarkerInvalidJSON = "[[sim:invalid_json]]"
	MarkerEmpty       = "[[sim:empty]]"
	MarkerLength      = "[[sim:length]]"
)

// MarkerStatus asks for a reply with the given HTTP status.
func MarkerStatus(code int) string { return fmt.Sprintf("[[sim:status=%d]]", code) }

// MarkerRetryAfter sets the retry-after of a 429, in seconds.
func MarkerRetryAfter(s int) string { return fmt.Sprintf("[[sim:retry_after=%d]]", s) }

// MarkerError asks for the vendor's own error for a condition
// ("context_length", "billing").
func MarkerError(kind string) string { return "[[sim:error=" + kind + "]]" }

// MarkerDelay delays the reply.
func MarkerDelay(d time.Duration) string { return fmt.Sprintf("[[sim:delay_ms=%d]]", d.Milliseconds()) }

// APIKey is the key the suite configures; no error may ever contain it.
const APIKey = "sk-conformance-SECRET-7f3a9c"

// Options describes the server and vendor under test.
type Options struct {
	// BaseURL is the adapter base URL on the live server.
	BaseURL string
	// Model is a model with no scenario of its own (no errors, no latency).
	Model string
	// CachedModel, when set, is a model for which the server reports
	// CachedRatio of the prompt tokens as cache reads.
	CachedModel string
	CachedRatio float64
	// MissingKeyClass is the class of the reply to a call without a key:
	// provider.ClassAuth (default) or provider.ClassForbidden (Gemini sends 403).
	MissingKeyClass provider.Class
	// Overloaded: the vendor has a 529 overloaded status (Anthropic).
	Overloaded bool
	// ReasoningModel, when set, is a model for which the server reports
	// ReasoningTokens thinking tokens per call, billed as output.
	ReasoningModel  string
	ReasoningTokens int
	// ReasoningHidden: the vendor bills thinking inside its output count
	// without reporting it separately (Anthropic), so Usage.ReasoningTokens
	// stays 0 while OutputTokens grows.
	ReasoningHidden bool
	// ReportedPrice, when set, is what the vendor charges per million input
	// and output tokens and reports as the call's cost (OpenRouter's
	// usage.cost); the adapter must ask for it and return it in
	// Usage.VendorCostUSD. Unset: the vendor reports no cost.
	ReportedPrice *[2]float64
}

// NewAdapter builds the adapter under test.
type NewAdapter func(baseURL, apiKey string) provider.Adapter

// Schema is the JSON schema the suite asks for.
const Schema = `{"type":"object","properties":{"title":{"type":"string"},"score":{"type":"integer","minimum":1,"maximum":5},"tags":{"type":"array","items":{"type":"string"},"minItems":1},"sentiment":{"type":"string","enum":["positive","neutral","negative"]},"ok":{"type":"boolean"}},"required":["title","score","tags","sentiment","ok"],"additionalProperties":false}`

// Run runs the suite. Subtests run in parallel.
func Run(t *testing.T, newAdapter NewAdapter, o Options) {
	t.Helper()
	if o.MissingKeyClass == "" {
		o.MissingKeyClass = provider.ClassAuth
	}
	a := newAdapter(o.BaseURL, APIKey)
	call := func(t *testing.T, ctx context.Context, ad provider.Adapter, req *provider.Request) (*provider.Response, *provider.Error) {
		t.Helper()
		resp, err := ad.Complete(ctx, req)
		if err != nil {
			if resp != nil {
				t.Errorf("Complete returned both a response and an error")
			}
			var ve *provider.Error
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %v is not a *provider.Error", err, err)
			}
			if strings.Contains(err.Error(), APIKey) {
				t.Fatalf("error leaks the API key: %v", err)
			}
			return nil, ve
		}
		if resp == nil {
			t.Fatalf("Complete returned neither response nor error")
		}
		return resp, nil
	}
	req := func(prompt string) *provider.Request {
		return &provider.Request{
			Model: o.Model,
			Messages: []envelope.Message{
				{Role: "system", Content: "You are a terse assistant."},
				{Role: "user", Content: prompt},
			},
			MaxTokens: 256,
		}
	}
	ctx := context.Background()

	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		r := req("Summarise the plot of Hamlet in two sentences.")
		resp, ve := call(t, ctx, a, r)
		if ve != nil {
			t.Fatalf("unexpected error: %v", ve)
		}
		if resp.Content == "" || resp.FinishReason != "stop" || resp.HTTPStatus != 200 {
			t.Fatalf("got content %q finish %q status %d", resp.Content, resp.FinishReason, resp.HTTPStatus)
		}
		u := resp.Usage
		if u.InputTokens <= 0 || u.OutputTokens <= 0 || u.CachedTokens != 0 || u.CacheWriteTokens != 0 {
			t.Fatalf("usage %+v", u)
		}
		again, ve := call(t, ctx, a, r)
		if ve != nil {
			t.Fatalf("second call: %v", ve)
		}
		if again.Content != resp.Content || again.Usage != resp.Usage {
			t.Fatalf("not deterministic: %q/%+v vs %q/%+v", resp.Content, resp.Usage, again.Content, again.Usage)
		}
	})

	t.Run("multi_turn", func(t *testing.T) {
		t.Parallel()
		r := req("And now in French?")
		r.Messages = append([]envelope.Message{r.Messages[0],
			{Role: "user", Content: "Say hello."}, {Role: "assistant", Content: "Hello."}}, r.Messages[1:]...)
		temp := 0.2
		r.Temperature = &temp
		resp, ve := call(t, ctx, a, r)
		if ve != nil || resp.Content == "" {
			t.Fatalf("resp %+v err %v", resp, ve)
		}
	})

	if o.CachedModel != "" {
		t.Run("cached_tokens", func(t *testing.T) {
			t.Parallel()
			prompt := strings.Repeat("A long, stable prefix that a vendor would cache. ", 40)
			plain, ve := call(t, ctx, a, req(prompt))
			if ve != nil {
				t.Fatal(ve)
			}
			r := req(prompt)
			r.Model = o.CachedModel
			cached, ve := call(t, ctx, a, r)
			if ve != nil {
				t.Fatal(ve)
			}
			u := cached.Usage
			if u.InputTokens != plain.Usage.InputTokens {
				t.Fatalf("InputTokens must include cached tokens: %d with cache, %d without", u.InputTokens, plain.Usage.InputTokens)
			}
			want := int(float64(u.InputTokens) * o.CachedRatio)
			if u.CachedTokens <= 0 || u.CachedTokens > u.InputTokens || abs(u.CachedTokens-want) > 1 {
				t.Fatalf("CachedTokens %d, want ≈%d of %d", u.CachedTokens, want, u.InputTokens)
			}
		})
	}

	if o.ReasoningModel != "" {
		t.Run("reasoning_tokens", func(t *testing.T) {
			t.Parallel()
			prompt := "Think hard about the plot of Hamlet, then answer in one line."
			plain, ve := call(t, ctx, a, req(prompt))
			if ve != nil {
				t.Fatal(ve)
			}
			r := req(prompt)
			r.Model = o.ReasoningModel
			thought, ve := call(t, ctx, a, r)
			if ve != nil {
				t.Fatal(ve)
			}
			pu, u := plain.Usage, thought.Usage
			if thought.Content != plain.Content || u.InputTokens != pu.InputTokens {
				t.Fatalf("same prompt, different answer: %q/%+v vs %q/%+v", thought.Content, u, plain.Content, pu)
			}
			// Thinking is billed as output, whatever the wire calls it.
			if u.OutputTokens != pu.OutputTokens+o.ReasoningTokens {
				t.Fatalf("OutputTokens %d, want %d answer + %d reasoning", u.OutputTokens, pu.OutputTokens, o.ReasoningTokens)
			}
			want := o.ReasoningTokens
			if o.ReasoningHidden {
				want = 0
			}
			if u.ReasoningTokens != want || pu.ReasoningTokens != 0 {
				t.Fatalf("ReasoningTokens %d (plain %d), want %d (plain 0)", u.ReasoningTokens, pu.ReasoningTokens, want)
			}
		})
	}

	t.Run("vendor_cost", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, req("What does a kettle cost?"))
		if ve != nil {
			t.Fatal(ve)
		}
		u := resp.Usage
		if o.ReportedPrice == nil {
			if u.VendorCostReported || u.VendorCostUSD != 0 {
				t.Fatalf("usage %+v: the vendor reports no cost", u)
			}
			return
		}
		want := (float64(u.InputTokens)*o.ReportedPrice[0] + float64(u.OutputTokens)*o.ReportedPrice[1]) / 1e6
		if !u.VendorCostReported || u.VendorCostUSD <= 0 || math.Abs(u.VendorCostUSD-want) > 1e-12 {
			t.Fatalf("usage %+v: want the vendor's reported cost %v", u, want)
		}
	})

	type errCase struct {
		name      string
		prompt    string
		class     provider.Class
		classAlt  provider.Class
		status    int
		retryable bool
		after     time.Duration
	}
	errCases := []errCase{
		{"400_terminal", MarkerStatus(400), provider.ClassInvalidRequest, "", 400, false, 0},
		{"401_auth", MarkerStatus(401), provider.ClassAuth, "", 401, false, 0},
		{"403_forbidden", MarkerStatus(403), provider.ClassForbidden, "", 403, false, 0},
		{"404_not_found", MarkerStatus(404), provider.ClassNotFound, "", 404, false, 0},
		{"429_retry_after", MarkerStatus(429) + MarkerRetryAfter(3), provider.ClassRateLimited, "", 429, true, 3 * time.Second},
		{"500_retryable", MarkerStatus(500), provider.ClassServerError, "", 500, true, 0},
		{"503_retryable", MarkerStatus(503), provider.ClassServerError, provider.ClassOverloaded, 503, true, 0},
		// Statuses outside the common table are classified deliberately.
		{"402_payment_required", MarkerStatus(402), provider.ClassPaymentRequired, "", 402, false, 0},
		{"405_not_found", MarkerStatus(405), provider.ClassNotFound, "", 405, false, 0},
		{"410_not_found", MarkerStatus(410), provider.ClassNotFound, "", 410, false, 0},
		{"451_content_refused", MarkerStatus(451), provider.ClassContentRefused, "", 451, false, 0},
		{"418_client_error", MarkerStatus(418), provider.ClassClientError, "", 418, false, 0},
		{"504_timeout", MarkerStatus(504), provider.ClassTimeout, "", 504, true, 0},
		// Conditions each vendor words its own way (and with its own
		// status: 400, 402 or 429).
		{"context_length", MarkerError("context_length"), provider.ClassContextLength, "", 0, false, 0},
		{"billing", MarkerError("billing"), provider.ClassPaymentRequired, "", 0, false, 0},
	}
	if o.Overloaded {
		errCases = append(errCases, errCase{"529_overloaded", MarkerStatus(529), provider.ClassOverloaded, "", 529, true, 0})
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, ve := call(t, ctx, a, req("Hello there. "+tc.prompt))
			if ve == nil {
				t.Fatalf("want error %s", tc.class)
			}
			if (ve.Class != tc.class && ve.Class != tc.classAlt) || (tc.status != 0 && ve.HTTPStatus != tc.status) || ve.Retryable != tc.retryable {
				t.Fatalf("got %+v, want class %s status %d retryable %v", ve, tc.class, tc.status, tc.retryable)
			}
			if ve.Message == "" {
				t.Fatalf("empty message")
			}
			if tc.after != 0 && ve.RetryAfter != tc.after {
				t.Fatalf("RetryAfter %v, want %v", ve.RetryAfter, tc.after)
			}
		})
	}

	t.Run("missing_key", func(t *testing.T) {
		t.Parallel()
		_, ve := call(t, ctx, newAdapter(o.BaseURL, ""), req("Hello."))
		if ve == nil || ve.Class != o.MissingKeyClass || ve.Retryable {
			t.Fatalf("got %+v, want terminal %s", ve, o.MissingKeyClass)
		}
	})

	t.Run("invalid_request_local", func(t *testing.T) {
		t.Parallel()
		r := req("Hello.")
		r.Messages = nil
		_, ve := call(t, ctx, a, r)
		if ve == nil || ve.Class != provider.ClassInvalidRequest || ve.Retryable {
			t.Fatalf("got %+v", ve)
		}
	})

	t.Run("timeout_context", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, ve := call(t, cctx, a, req("Slow one. "+MarkerDelay(5*time.Second)))
		if ve == nil || ve.Class != provider.ClassTimeout || !ve.Retryable {
			t.Fatalf("got %+v, want retryable timeout", ve)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("timeout took %v", el)
		}
	})

	t.Run("connection_refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		base := strings.Replace(o.BaseURL, hostOf(o.BaseURL), addr, 1)
		_, ve := call(t, ctx, newAdapter(base, APIKey), req("Hello."))
		if ve == nil || ve.Class != provider.ClassConnection || !ve.Retryable {
			t.Fatalf("got %+v, want retryable connection", ve)
		}
	})

	jsonReq := func(prompt string, withSchema bool) *provider.Request {
		r := req(prompt)
		if withSchema {
			r.ResponseFormat = &envelope.ResponseFormat{Type: "json_schema",
				JSONSchema: &envelope.JSONSchemaSpec{Name: "review", Schema: json.RawMessage(Schema)}}
		} else {
			r.ResponseFormat = &envelope.ResponseFormat{Type: "json_object"}
		}
		return r
	}

	t.Run("json_schema", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, jsonReq("Review this product as JSON: a red kettle.", true))
		if ve != nil {
			t.Fatal(ve)
		}
		if err := CheckReview(resp.Content); err != nil {
			t.Fatalf("content %q: %v", resp.Content, err)
		}
	})

	t.Run("json_object", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, jsonReq("Give me a JSON object about kettles.", false))
		if ve != nil {
			t.Fatal(ve)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(resp.Content), &m); err != nil {
			t.Fatalf("content %q is not a JSON object: %v", resp.Content, err)
		}
	})

	t.Run("json_invalid", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, jsonReq("Review as JSON. "+MarkerInvalidJSON, true))
		if ve != nil {
			t.Fatal(ve)
		}
		if json.Valid([]byte(resp.Content)) {
			t.Fatalf("content %q is valid JSON, want invalid", resp.Content)
		}
	})

	t.Run("finish_length_marker", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, req("Write a long essay. "+MarkerLength))
		if ve != nil {
			t.Fatal(ve)
		}
		if resp.FinishReason != "length" {
			t.Fatalf("finish %q, want length", resp.FinishReason)
		}
	})

	t.Run("finish_length_max_tokens", func(t *testing.T) {
		t.Parallel()
		r := req("Write a long essay about the sea, the wind, and the rain.")
		r.MaxTokens = 3
		resp, ve := call(t, ctx, a, r)
		if ve != nil {
			t.Fatal(ve)
		}
		if resp.FinishReason != "length" || resp.Usage.OutputTokens > 3 {
			t.Fatalf("finish %q usage %+v, want length within 3 tokens", resp.FinishReason, resp.Usage)
		}
	})

	runStreaming(t, a, o, req)

	t.Run("empty_content", func(t *testing.T) {
		t.Parallel()
		resp, ve := call(t, ctx, a, req("Say nothing. "+MarkerEmpty))
		if ve != nil {
			t.Fatal(ve)
		}
		if resp.Content != "" || resp.Usage.OutputTokens != 0 {
			t.Fatalf("content %q usage %+v, want empty", resp.Content, resp.Usage)
		}
	})
}

// CheckReview checks content against Schema.
func CheckReview(content string) error {
	var v struct {
		Title     *string  `json:"title"`
		Score     *float64 `json:"score"`
		Tags      []string `json:"tags"`
		Sentiment *string  `json:"sentiment"`
		OK        *bool    `json:"ok"`
	}
	dec := json.NewDecoder(strings.NewReader(content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	switch {
	case v.Title == nil:
		return errors.New("title missing")
	case v.Score == nil || *v.Score != float64(int(*v.Score)) || *v.Score < 1 || *v.Score > 5:
		return errors.New("score missing or out of range")
	case len(v.Tags) < 1:
		return errors.New("tags missing or empty")
	case v.Sentiment == nil || (*v.Sentiment != "positive" && *v.Sentiment != "neutral" && *v.Sentiment != "negative"):
		return errors.New("sentiment missing or not in enum")
	case v.OK == nil:
		return errors.New("ok missing")
	}
	return nil
}

func hostOf(base string) string {
	s := base
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
