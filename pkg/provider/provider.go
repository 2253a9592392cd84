// Package provider defines the adapter every LLM vendor implements and the
// error classification the router acts on. The adapters live in
// sub-packages, one per wire protocol (openai, anthropic, gemini), built
// by vendor kind in pkg/provider/adapters and held to one conformance suite
// (pkg/provider/vendortest). (Not "vendor": a
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

// Error is a classified vendor failure.
type Error struct {
	Class      Class
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

// ClassifyStatus maps an HTTP status to its class by the table every vendor
// shares; adapters refine it with what their vendor's error body says
// (Reclassify). Every status has a deliberate class: 402 is an account
// problem, 405 and 410 are "no such endpoint or model", 451 a content
// refusal, any other 4xx client_error (terminal), any other 5xx
// server_error, anything else (1xx, 3xx) an unusable answer.
func ClassifyStatus(status int) (class Class, retryable bool) {
	class = classifyStatus(status)
	return class, class.Retryable()
}

func classifyStatus(status int) Class {
	switch status {
	case 400:
		return ClassInvalidRequest
	case 401:
		return ClassAuth
	case 402:
		return ClassPaymentRequired
	case 403:
		return ClassForbidden
	case 404, 405, 410:
		return ClassNotFound
	case 408, 504:
		return ClassTimeout
	case 409:
		return ClassConflict
	case 413:
		return ClassPayloadTooLarge
	case 422:
		return ClassUnprocessable
	case 429:
		return ClassRateLimited
	case 451:
		return ClassContentRefused
	case 529:
		return ClassOverloaded
	}
	switch {
	case status >= 400 && status < 500:
		return ClassClientError
	case status >= 500 && status < 600:
		return ClassServerError
	}
	return ClassBadResponse
}

// Reclassify gives e another class (and that class's retryability): an
// adapter's refinement of the status table from the vendor's error body.
func (e *Error) Reclassify(c Class) *Error {
	e.Class, e.Retryable = c, c.Retryable()
	return e
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
