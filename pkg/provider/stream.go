package provider

import (
	"context"
	"strings"
	"time"
)

// Delta is one piece of a streamed answer, in order.
type Delta struct{ Content string }

// StreamOptions bound a streaming call's silences (0: no limit).
type StreamOptions struct {
	FirstTokenTimeout time.Duration // from the request being sent to the first content delta
	IdleTimeout       time.Duration // longest silence between two chunks after the first
}

// Streamer is implemented by every adapter: one streaming call, no retries.
type Streamer interface {
	// Stream calls onDelta for each non-empty content delta in order (an error
	// from onDelta aborts the call and is returned). The returned Response is the
	// whole answer: Content is the concatenation, Usage and FinishReason come from
	// the stream. A stream that does not complete returns a classified *Error,
	// never a Response, even when deltas were delivered.
	Stream(ctx context.Context, req *Request, opt StreamOptions, onDelta func(Delta) error) (*Response, error)
}

// StreamingAdapter is what pkg/provider/adapters builds: an adapter that
// answers both whole and streamed.
type StreamingAdapter interface {
	Adapter
	Streamer
}

// IsPrefill reports whether req ends with an assistant turn: a prefill the
// model is asked to continue. The Response of a prefilled call carries the
// continuation only, not the prefill itself.
func IsPrefill(req *Request) bool {
	return req != nil && len(req.Messages) > 0 && req.Messages[len(req.Messages)-1].Role == "assistant"
}

// RefinePrefill reclassifies a vendor's 400 to a prefilled request as
// prefill_unsupported when its message says the trailing assistant turn is
// what it refused, so the router restarts or falls over instead of making
// the refusal the request's final error.
func RefinePrefill(ve *Error, req *Request) *Error {
	if ve == nil || !IsPrefill(req) || ve.HTTPStatus != 400 || ve.Class == ClassContextLength {
		return ve
	}
	m := strings.ToLower(ve.Message)
	for _, s := range []string{"prefill", "assistant message", "final assistant", "last message", "must end with a user", "continuation"} {
		if strings.Contains(m, s) {
			return ve.Reclassify(ClassPrefillUnsupported)
		}
	}
	return ve
}
