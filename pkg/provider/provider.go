// Package provider defines the adapter every LLM vendor implements and the
// error classification the router acts on. The adapters live in
// pkg/adapters, one sub-package per wire protocol. (Not "vendor": a
// directory of that name at a module root is Go's vendoring directory.)
package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// Request is a vendor-neutral completion request.
type Request struct {
	Model          string
	Messages       []envelope.Message
	MaxTokens      int
	Temperature    *float64
	ResponseFormat *envelope.ResponseFormat
	// Options is the request's vendor_options entry for this vendor, passed
	// through to the wire body as extra top-level fields.
	Options json.RawMessage
}

// Response is a vendor-neutral completion.
type Response struct {
	Content      string
	FinishReason string // normalised: stop, length, content_filter, tool_calls
	Usage        envelope.Usage
	HTTPStatus   int
}

// Adapter speaks one vendor wire protocol.
type Adapter interface {
	// Complete performs one call, with no retries of its own: retrying and
	// falling over is the router's decision.
	Complete(ctx context.Context, req *Request) (*Response, error)
}

// Error classes. Retryable ones let the router fall to the next target.
const (
	ClassRateLimited     = "rate_limited"      // 429
	ClassTimeout         = "timeout"           // 408, deadline, client timeout
	ClassConflict        = "conflict"          // 409
	ClassServerError     = "server_error"      // 5xx
	ClassOverloaded      = "overloaded"        // 529, 503 overloaded
	ClassConnection      = "connection"        // reset, refused
	ClassBadResponse     = "bad_response"      // unparseable 200, 200-with-error body
	ClassInvalidRequest  = "invalid_request"   // 400
	ClassAuth            = "auth"              // 401
	ClassForbidden       = "forbidden"         // 403
	ClassNotFound        = "not_found"         // 404
	ClassPayloadTooLarge = "payload_too_large" // 413
	ClassUnprocessable   = "unprocessable"     // 422
	// ClassContextLength is a 400 saying the prompt does not fit the
	// model's context window: not retried on that model, but a later one
	// with a larger window may serve it.
	ClassContextLength = "context_length_exceeded"
)

// Error is a classified vendor failure.
type Error struct {
	Class      string
	HTTPStatus int
	Retryable  bool
	RetryAfter time.Duration
	Message    string
}

func (e *Error) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("vendor %s (http %d): %s", e.Class, e.HTTPStatus, e.Message)
	}
	return fmt.Sprintf("vendor %s: %s", e.Class, e.Message)
}

// ClassifyStatus maps an HTTP status to an error class and retryability.
func ClassifyStatus(status int) (class string, retryable bool) {
	switch {
	case status == 429:
		return ClassRateLimited, true
	case status == 408:
		return ClassTimeout, true
	case status == 409:
		return ClassConflict, true
	case status == 529:
		return ClassOverloaded, true
	case status >= 500:
		return ClassServerError, true
	case status == 400:
		return ClassInvalidRequest, false
	case status == 401:
		return ClassAuth, false
	case status == 403:
		return ClassForbidden, false
	case status == 404:
		return ClassNotFound, false
	case status == 413:
		return ClassPayloadTooLarge, false
	case status == 422:
		return ClassUnprocessable, false
	default:
		return ClassInvalidRequest, false
	}
}

// AsError classifies any error returned by an adapter. Errors that are not
// *Error (context expiry, network failures) are classified here, so the
// router never sees an unclassified failure.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var ve *Error
	if errors.As(err, &ve) {
		return ve
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Class: ClassTimeout, Retryable: true, Message: err.Error()}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Class: ClassTimeout, Retryable: true, Message: err.Error()}
	}
	return &Error{Class: ClassConnection, Retryable: true, Message: err.Error()}
}
