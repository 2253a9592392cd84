package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// Helpers shared by the wire-protocol adapters in the sub-packages. They hold
// no vendor knowledge: building bodies and decoding replies is the adapters'.

// MaxResponseBytes caps how much of a vendor reply an adapter reads.
const MaxResponseBytes = 16 << 20

// maxMessageLen caps the vendor message copied into an *Error.
const maxMessageLen = 1024

// DefaultHTTPClient is used by adapters configured without a client. It has
// no overall timeout: the caller's context bounds every call. It keeps
// only Go's default 2 idle connections per host; vendors get their own
// pooled client from NewHTTPClient (pkg/provider/adapters does).
var DefaultHTTPClient = &http.Client{}

// DefaultMaxConns sizes a vendor's connection pool when its concurrency is
// not known: the executor's default max_concurrency.
const DefaultMaxConns = 64

// NewHTTPClient returns a client with its own connection pool for one
// vendor, sized for maxConns calls in flight (DefaultMaxConns when
// maxConns <= 0): up to maxConns connections per host, all of them kept
// idle between bursts, so a vendor called at its concurrency reuses its
// connections instead of opening new ones (the shared default transport
// keeps 2 idle per host and closes the rest after every burst). A call
// beyond maxConns waits for a connection, bounded by its context.
func NewHTTPClient(maxConns int) *http.Client {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = maxConns
	tr.MaxIdleConnsPerHost = maxConns
	tr.MaxConnsPerHost = maxConns
	return &http.Client{Transport: tr}
}

// HTTPReply is the raw outcome of one HTTP exchange.
type HTTPReply struct {
	Status int
	Header http.Header
	Body   []byte
}

// PostJSON sends body to url with the given headers and reads the whole reply
// (up to MaxResponseBytes). It makes exactly one attempt: the client's own
// transport never retries a POST. Transport failures, deadlines and
// cancellations come back classified by AsError.
func PostJSON(ctx context.Context, client *http.Client, url string, header http.Header, body []byte) (*HTTPReply, error) {
	if client == nil {
		client = DefaultHTTPClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Class: ClassInvalidRequest, Message: "building request: " + err.Error()}
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if len(data) > MaxResponseBytes {
		return nil, &Error{Class: ClassBadResponse, HTTPStatus: resp.StatusCode, Retryable: true,
			Message: fmt.Sprintf("response body larger than %d bytes", MaxResponseBytes)}
	}
	return &HTTPReply{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// transportError classifies a failure of the exchange itself. A deadline on
// the caller's context is a timeout even when the transport reports it as a
// generic read error.
func transportError(ctx context.Context, err error) *Error {
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
	}
	return AsError(err)
}

// MergeOptions merges opts (a JSON object, the request's vendor_options) into
// body (a JSON object). Nested objects merge recursively; any other value in
// opts replaces the one in body. Top-level keys named in protected are never
// replaced. Empty or null opts return body unchanged.
func MergeOptions(body []byte, opts json.RawMessage, protected ...string) ([]byte, error) {
	trimmed := bytes.TrimSpace(opts)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return body, nil
	}
	var extra map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &extra); err != nil || extra == nil {
		return nil, &Error{Class: ClassInvalidRequest, Message: "vendor_options must be a JSON object"}
	}
	var base map[string]json.RawMessage
	if err := json.Unmarshal(body, &base); err != nil {
		return nil, &Error{Class: ClassInvalidRequest, Message: "request body is not a JSON object"}
	}
	for _, p := range protected {
		delete(extra, p)
	}
	merged, err := mergeObjects(base, extra)
	if err != nil {
		return nil, &Error{Class: ClassInvalidRequest, Message: "merging vendor_options: " + err.Error()}
	}
	return json.Marshal(merged)
}

func mergeObjects(base, extra map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	for k, v := range extra {
		old, ok := base[k]
		if ok && isObject(old) && isObject(v) {
			var a, b map[string]json.RawMessage
			if err := json.Unmarshal(old, &a); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(v, &b); err != nil {
				return nil, err
			}
			m, err := mergeObjects(a, b)
			if err != nil {
				return nil, err
			}
			raw, err := json.Marshal(m)
			if err != nil {
				return nil, err
			}
			base[k] = raw
			continue
		}
		base[k] = v
	}
	return base, nil
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// ParseRetryAfter reads how long a vendor asked the caller to wait:
// retry-after-ms (milliseconds), then retry-after (delta seconds, possibly
// fractional, or an HTTP date relative to now). Zero when absent or invalid.
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && !math.IsInf(ms, 0) && ms < 1e12 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || math.IsNaN(s) || s > 1e9 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// StatusError builds the classified error for a non-2xx reply. message is
// the vendor's own message (already extracted from its error body); secret,
// when non-empty, is scrubbed from it.
func StatusError(status int, h http.Header, message, secret string) *Error {
	class := classifyStatus(status)
	if status == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(message), "overloaded") {
		class = ClassOverloaded
	}
	if status == http.StatusBadRequest && isContextLength(message) {
		class = ClassContextLength
	}
	if message == "" {
		message = http.StatusText(status)
		if message == "" {
			message = "status " + strconv.Itoa(status)
		}
	}
	return &Error{
		Class:      class,
		HTTPStatus: status,
		Retryable:  class.Retryable(),
		RetryAfter: ParseRetryAfter(h, time.Now()),
		Message:    CleanMessage(message, secret),
	}
}

// isContextLength recognises the vendors' "prompt too long" 400s (OpenAI's
// context_length_exceeded, Anthropic's "prompt is too long", Gemini's
// "exceeds the maximum number of tokens").
func isContextLength(message string) bool {
	m := strings.ToLower(message)
	for _, s := range []string{"context_length_exceeded", "maximum context length", "context window", "prompt is too long", "exceeds the maximum number of tokens"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// BadResponse is the error for a 2xx reply that carries no usable completion.
func BadResponse(status int, message, secret string) *Error {
	return &Error{Class: ClassBadResponse, HTTPStatus: status, Retryable: true, Message: CleanMessage(message, secret)}
}

// CleanMessage scrubs secret out of msg, strips control characters and caps
// the length, so vendor text is safe to log and to put in a reply.
func CleanMessage(msg, secret string) string {
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[redacted]")
	}
	msg = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r == '\r' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, msg)
	msg = strings.TrimSpace(msg)
	if len(msg) > maxMessageLen {
		cut := maxMessageLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// Snippet returns the start of a body for an error message when the body
// could not be parsed.
func Snippet(body []byte) string {
	const n = 200
	s := strings.ToValidUTF8(string(body), "")
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// CheckRequest rejects requests no vendor could serve, before any call.
func CheckRequest(req *Request) error {
	switch {
	case req == nil:
		return &Error{Class: ClassInvalidRequest, Message: "nil request"}
	case strings.TrimSpace(req.Model) == "":
		return &Error{Class: ClassInvalidRequest, Message: "model is required"}
	case len(req.Messages) == 0:
		return &Error{Class: ClassInvalidRequest, Message: "messages must not be empty"}
	case req.MaxTokens < 0:
		return &Error{Class: ClassInvalidRequest, Message: "max_tokens must not be negative"}
	}
	return nil
}

// SchemaOf returns the JSON schema a response format asks for, or nil.
func SchemaOf(rf *envelope.ResponseFormat) json.RawMessage {
	if rf == nil || rf.JSONSchema == nil {
		return nil
	}
	s := bytes.TrimSpace(rf.JSONSchema.Schema)
	if len(s) == 0 || bytes.Equal(s, []byte("null")) {
		return nil
	}
	return s
}

// WantsJSON reports whether a response format asks for JSON output.
func WantsJSON(rf *envelope.ResponseFormat) bool {
	return rf != nil && (rf.Type == "json_object" || rf.Type == "json_schema")
}
