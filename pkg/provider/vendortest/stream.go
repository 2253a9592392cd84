package vendortest

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// MarkerStream asks the simulator for a stream fault: KIND or KIND:N with N
// the content chunks sent first (stall_first, stall:N, cut:N, malformed:N,
// error:N, refuse:N, no_end, huge_line:N).
func MarkerStream(fault string) string { return "[[sim:stream=" + fault + "]]" }

// MarkerNoPrefill makes the simulator refuse a request ending with an
// assistant turn, as models without prefill support do.
const MarkerNoPrefill = "[[sim:no_prefill]]"

// streamResult is what one Stream call gave.
type streamResult struct {
	deltas []string
	resp   *provider.Response
	err    *provider.Error
	raw    error
	took   time.Duration
}

func (r streamResult) joined() string { return strings.Join(r.deltas, "") }

func runStream(t *testing.T, ctx context.Context, s provider.Streamer, req *provider.Request, opt provider.StreamOptions, onDelta func(provider.Delta) error) streamResult {
	t.Helper()
	var out streamResult
	start := time.Now()
	resp, err := s.Stream(ctx, req, opt, func(d provider.Delta) error {
		if d.Content == "" {
			t.Errorf("empty delta delivered")
		}
		out.deltas = append(out.deltas, d.Content)
		if onDelta != nil {
			return onDelta(d)
		}
		return nil
	})
	out.took, out.resp, out.raw = time.Since(start), resp, err
	if err != nil {
		if resp != nil {
			t.Errorf("Stream returned both a response and an error")
		}
		if strings.Contains(err.Error(), APIKey) {
			t.Fatalf("error leaks the API key: %v", err)
		}
		var ve *provider.Error
		if errors.As(err, &ve) {
			out.err = ve
		}
		return out
	}
	if resp == nil {
		t.Fatalf("Stream returned neither response nor error")
	}
	return out
}

// runStreaming is the streaming section of Run.
func runStreaming(t *testing.T, a provider.Adapter, o Options, req func(string) *provider.Request) {
	s, ok := a.(provider.Streamer)
	if !ok {
		t.Fatalf("adapter %T does not implement provider.Streamer", a)
	}
	ctx := context.Background()
	// Limits far above the simulator's pace, far below its stalls.
	limits := provider.StreamOptions{FirstTokenTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second}

	t.Run("stream_ok", func(t *testing.T) {
		t.Parallel()
		r := req("Describe a lighthouse at night in a few sentences.")
		whole, err := a.Complete(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		got := runStream(t, ctx, s, r, limits, nil)
		if got.raw != nil {
			t.Fatalf("stream: %v", got.raw)
		}
		if len(got.deltas) < 2 || got.joined() != got.resp.Content {
			t.Fatalf("%d deltas %q do not make content %q", len(got.deltas), got.joined(), got.resp.Content)
		}
		if got.resp.Content != whole.Content || got.resp.Usage != whole.Usage || got.resp.FinishReason != "stop" || got.resp.HTTPStatus != 200 {
			t.Fatalf("streamed %q %+v %q, whole %q %+v", got.resp.Content, got.resp.Usage, got.resp.FinishReason, whole.Content, whole.Usage)
		}
		if got.resp.Usage.InputTokens <= 0 || got.resp.Usage.OutputTokens <= 0 {
			t.Fatalf("usage %+v", got.resp.Usage)
		}
	})

	t.Run("stream_length", func(t *testing.T) {
		t.Parallel()
		got := runStream(t, ctx, s, req("Write a long essay. "+MarkerLength), limits, nil)
		if got.raw != nil || got.resp.FinishReason != "length" || got.joined() != got.resp.Content {
			t.Fatalf("resp %+v err %v", got.resp, got.raw)
		}
	})

	t.Run("stream_no_end_marker_complete", func(t *testing.T) {
		t.Parallel()
		r := req("Name three rivers. " + MarkerStream("no_end"))
		got := runStream(t, ctx, s, r, limits, nil)
		if got.raw != nil {
			t.Fatalf("a stream complete at the HTTP level failed: %v", got.raw)
		}
		if got.resp.Content == "" || got.joined() != got.resp.Content || got.resp.Usage.OutputTokens <= 0 || got.resp.FinishReason != "stop" {
			t.Fatalf("resp %+v", got.resp)
		}
	})

	t.Run("stream_prefill", func(t *testing.T) {
		t.Parallel()
		r := req("Name a colour.")
		r.Messages = append(r.Messages, envelope.Message{Role: "assistant", Content: "The colour is"})
		got := runStream(t, ctx, s, r, limits, nil)
		if got.raw != nil || got.resp.Content == "" {
			t.Fatalf("prefill refused by a model that takes it: %+v %v", got.resp, got.raw)
		}
	})

	type failure struct {
		name    string
		prompt  string
		opt     provider.StreamOptions
		class   provider.Class
		alt     provider.Class
		deltas  int // content chunks delivered before the failure; -1: any
		maxTook time.Duration
	}
	failures := []failure{
		{"stream_http_429", MarkerStatus(429) + MarkerRetryAfter(2), limits, provider.ClassRateLimited, "", 0, 0},
		{"stream_http_500", MarkerStatus(500), limits, provider.ClassServerError, "", 0, 0},
		{"stream_http_400", MarkerStatus(400), limits, provider.ClassInvalidRequest, "", 0, 0},
		{"stream_context_length", MarkerError("context_length"), limits, provider.ClassContextLength, "", 0, 0},
		{"stream_stall_first", MarkerStream("stall_first"), provider.StreamOptions{FirstTokenTimeout: 200 * time.Millisecond},
			provider.ClassStreamStalled, "", 0, 3 * time.Second},
		{"stream_stall_idle", MarkerStream("stall:2"), provider.StreamOptions{FirstTokenTimeout: 2 * time.Second, IdleTimeout: 200 * time.Millisecond},
			provider.ClassStreamStalled, "", 2, 3 * time.Second},
		{"stream_cut", MarkerStream("cut:2"), limits, provider.ClassStreamCut, "", 2, 0},
		{"stream_cut_before_content", MarkerStream("cut:0"), limits, provider.ClassStreamCut, "", 0, 0},
		{"stream_malformed", MarkerStream("malformed:1"), limits, provider.ClassBadResponse, "", 1, 0},
		{"stream_huge_line", MarkerStream("huge_line:1"), limits, provider.ClassBadResponse, "", 1, 0},
		{"stream_error_event", MarkerStream("error:2"), limits, provider.ClassServerError, provider.ClassOverloaded, 2, 0},
		{"stream_refused", MarkerStream("refuse:2"), limits, provider.ClassContentRefused, "", 2, 0},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := runStream(t, ctx, s, req("Tell me about the harbour. "+tc.prompt), tc.opt, nil)
			if got.err == nil {
				t.Fatalf("want %s, got response %+v (raw error %v)", tc.class, got.resp, got.raw)
			}
			if got.err.Class != tc.class && got.err.Class != tc.alt {
				t.Fatalf("got %+v, want class %s", got.err, tc.class)
			}
			if got.err.Retryable != got.err.Class.Retryable() || got.err.Message == "" {
				t.Fatalf("got %+v: retryable must follow the class, message must say why", got.err)
			}
			if tc.deltas >= 0 && len(got.deltas) != tc.deltas {
				t.Fatalf("%d deltas delivered before the failure, want %d", len(got.deltas), tc.deltas)
			}
			if tc.maxTook > 0 && got.took > tc.maxTook {
				t.Fatalf("took %v, want under %v", got.took, tc.maxTook)
			}
		})
	}

	t.Run("stream_ctx_cancel", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		got := runStream(t, cctx, s, req("Stall after one word. "+MarkerStream("stall:1")), provider.StreamOptions{}, nil)
		if got.err == nil || got.err.Class != provider.ClassTimeout || len(got.deltas) != 1 {
			t.Fatalf("got %+v after %d deltas, want timeout after 1", got.err, len(got.deltas))
		}
		if got.took > 3*time.Second {
			t.Fatalf("cancel took %v", got.took)
		}
	})

	t.Run("stream_ondelta_error", func(t *testing.T) {
		t.Parallel()
		stop := errors.New("client went away")
		n := 0
		got := runStream(t, ctx, s, req("Describe a lighthouse at night in a few sentences."), limits, func(provider.Delta) error {
			n++
			if n == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(got.raw, stop) || len(got.deltas) != 2 {
			t.Fatalf("got %v after %d deltas, want the callback's error after 2", got.raw, len(got.deltas))
		}
	})

	t.Run("prefill_unsupported", func(t *testing.T) {
		t.Parallel()
		r := req("Name a colour. " + MarkerNoPrefill)
		r.Messages = append(r.Messages, envelope.Message{Role: "assistant", Content: "The colour is"})
		_, err := a.Complete(ctx, r)
		if ve := provider.AsError(err); ve == nil || ve.Class != provider.ClassPrefillUnsupported || ve.HTTPStatus != 400 {
			t.Fatalf("Complete: got %+v, want prefill_unsupported", ve)
		}
		got := runStream(t, ctx, s, r, limits, nil)
		if got.err == nil || got.err.Class != provider.ClassPrefillUnsupported {
			t.Fatalf("Stream: got %+v, want prefill_unsupported", got.err)
		}
		// The same marker without a prefill is an ordinary request.
		plain := req("Name a colour. " + MarkerNoPrefill)
		if _, err := a.Complete(ctx, plain); err != nil {
			t.Fatalf("no prefill, no refusal: %v", err)
		}
	})
}

// NoLeaks fails t unless, within a few seconds, no goroutine is left in an
// adapter call or an HTTP connection. Call it after the servers the
// adapters talked to are closed (so pooled connections are gone).
func NoLeaks(t *testing.T) {
	t.Helper()
	leaky := []string{"switchyard/pkg/provider.", "net/http.(*persistConn)", "net/http.(*Transport).dialConnFor"}
	var last string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		last = ""
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, l := range leaky {
				if strings.Contains(g, l) && !strings.Contains(g, "vendortest.NoLeaks") {
					last = g
				}
			}
		}
		if last == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("goroutine left behind:\n%s", last)
}
