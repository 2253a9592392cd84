// Package anthropic is the adapter for the Anthropic Messages wire protocol.
package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// DefaultBaseURL is Anthropic's API root; the adapter POSTs to BaseURL + "/v1/messages".
const DefaultBaseURL = "https://api.anthropic.com"

// Version is the anthropic-version header the adapter speaks.
const Version = "2023-06-01"

// DefaultMaxTokens is sent when a request names none: the API requires it.
const DefaultMaxTokens = 1024

// Config configures an Adapter.
type Config struct {
	BaseURL    string
	APIKey     string // sent as x-api-key
	HTTPClient *http.Client
	// Headers are added to every call (e.g. anthropic-beta).
	Headers map[string]string
}

// Adapter speaks the Messages API.
type Adapter struct {
	cfg     Config
	url     string
	headers http.Header
}

var _ provider.StreamingAdapter = (*Adapter)(nil)

// New returns an adapter for cfg.
func New(cfg Config) *Adapter {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	h := http.Header{}
	h.Set("anthropic-version", Version)
	for k, v := range cfg.Headers {
		h.Set(k, v)
	}
	if cfg.APIKey != "" {
		h.Set("x-api-key", cfg.APIKey)
	}
	return &Adapter{cfg: cfg, url: strings.TrimRight(cfg.BaseURL, "/") + "/v1/messages", headers: h}
}

type wireMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type wireRequest struct {
	Model       string        `json:"model"`
	MaxTokens   int           `json:"max_tokens"`
	System      string        `json:"system,omitempty"`
	Messages    []wireMessage `json:"messages"`
	Temperature *float64      `json:"temperature,omitempty"`
	Stream      bool          `json:"stream,omitempty"`
}

// JSONInstruction is appended to the system prompt when the request asks for
// JSON: the classic Messages API has no response_format.
const JSONInstruction = "Respond with a single JSON object and nothing else: no prose, no Markdown code fences."

// SchemaInstruction introduces the schema the JSON object must satisfy.
const SchemaInstruction = "The JSON object must conform to this JSON Schema:"

// BuildBody encodes req as a Messages request body, vendor options merged in.
// System and developer turns go to the top-level system prompt; any role
// other than assistant is sent as user.
// A trailing assistant turn is sent as it is: Anthropic continues it (a
// prefill).
func BuildBody(req *provider.Request) ([]byte, error) {
	return buildBody(req, false)
}

func buildBody(req *provider.Request, stream bool) ([]byte, error) {
	w := wireRequest{Model: req.Model, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Stream: stream}
	if w.MaxTokens <= 0 {
		w.MaxTokens = DefaultMaxTokens
	}
	var system []string
	for _, m := range req.Messages {
		switch m.Role {
		case "system", "developer":
			if m.Content != "" {
				system = append(system, m.Content)
			}
		case "assistant":
			w.Messages = append(w.Messages, wireMessage{Role: "assistant", Content: m.Content})
		default:
			w.Messages = append(w.Messages, wireMessage{Role: "user", Content: m.Content})
		}
	}
	if len(w.Messages) == 0 {
		return nil, &provider.Error{Class: provider.ClassInvalidRequest, Message: "anthropic needs at least one user or assistant message"}
	}
	if provider.WantsJSON(req.ResponseFormat) {
		instr := JSONInstruction
		if schema := provider.SchemaOf(req.ResponseFormat); schema != nil {
			var compact bytes.Buffer
			if json.Compact(&compact, schema) == nil {
				schema = compact.Bytes()
			}
			instr += "\n" + SchemaInstruction + "\n" + string(schema)
		}
		system = append(system, instr)
	}
	w.System = strings.Join(system, "\n\n")
	body, err := json.Marshal(w)
	if err != nil {
		return nil, &provider.Error{Class: provider.ClassInvalidRequest, Message: "encoding request: " + err.Error()}
	}
	return provider.MergeOptions(body, req.Options, "model", "messages", "stream")
}

// Complete performs one Messages call.
func (a *Adapter) Complete(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := BuildBody(req)
	if err != nil {
		return nil, err
	}
	reply, err := provider.PostJSON(ctx, a.cfg.HTTPClient, a.url, a.headers, body)
	if err != nil {
		return nil, a.scrub(err)
	}
	if reply.Status < 200 || reply.Status > 299 {
		return nil, provider.RefinePrefill(StatusError(reply.Status, reply.Header, reply.Body, a.cfg.APIKey), req)
	}
	resp, err := DecodeResponse(reply.Body)
	if err != nil {
		return nil, a.scrub(err)
	}
	if provider.WantsJSON(req.ResponseFormat) {
		resp.Content = StripCodeFence(resp.Content)
	}
	resp.HTTPStatus = reply.Status
	return resp, nil
}

// StatusError classifies a non-2xx reply: the shared status table, refined
// by Anthropic's error type (overloaded_error on any status, billing_error,
// timeout_error) and message ("prompt is too long", "credit balance is too
// low", which Anthropic sends as a 400).
func StatusError(status int, h http.Header, body []byte, secret string) *provider.Error {
	typ, msg := ErrorMessage(body)
	ve := provider.StatusError(status, h, msg, secret)
	lower := strings.ToLower(msg)
	switch {
	case typ == "overloaded_error":
		ve.Reclassify(provider.ClassOverloaded)
	case typ == "billing_error" || strings.Contains(lower, "credit balance is too low"):
		ve.Reclassify(provider.ClassPaymentRequired)
	case typ == "timeout_error":
		ve.Reclassify(provider.ClassTimeout)
	case typ == "invalid_request_error" && strings.Contains(lower, "prompt is too long"):
		ve.Reclassify(provider.ClassContextLength)
	}
	return ve
}

func (a *Adapter) scrub(err error) error {
	ve := provider.AsError(err)
	ve.Message = provider.CleanMessage(ve.Message, a.cfg.APIKey)
	return ve
}

type wireErrorBody struct {
	Type  string `json:"type"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// ErrorMessage extracts the error type and a readable message from
// {"type":"error","error":{"type","message"}}.
func ErrorMessage(body []byte) (typ, msg string) {
	var eb wireErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		return "", provider.Snippet(body)
	}
	msg = eb.Error.Message
	if msg == "" {
		msg = "unknown error"
	}
	if eb.Error.Type != "" {
		msg = eb.Error.Type + ": " + msg
	}
	return eb.Error.Type, msg
}

type wireResponse struct {
	Type    string `json:"type"`
	Role    string `json:"role"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason *string `json:"stop_reason"`
	Usage      *struct {
		InputTokens              int `json:"input_tokens"`
		OutputTokens             int `json:"output_tokens"`
		CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	} `json:"usage"`
}

// DecodeResponse decodes a 2xx Messages body. Usage is normalised: the
// API's input_tokens excludes cache reads and writes, envelope.Usage's
// InputTokens includes them. Extended thinking is billed and counted in
// output_tokens; the API gives no separate figure, so ReasoningTokens is 0.
func DecodeResponse(body []byte) (*provider.Response, error) {
	var w wireResponse
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, provider.BadResponse(http.StatusOK, "unparseable message: "+err.Error(), "")
	}
	if w.Type == "error" {
		_, msg := ErrorMessage(body)
		return nil, provider.BadResponse(http.StatusOK, "error in 2xx body: "+msg, "")
	}
	if w.Type != "message" {
		return nil, provider.BadResponse(http.StatusOK, "body is not a message (type "+quote(w.Type)+")", "")
	}
	resp := &provider.Response{}
	var sb strings.Builder
	for _, c := range w.Content {
		if c.Type == "text" {
			sb.WriteString(c.Text)
		}
	}
	resp.Content = sb.String()
	reason := ""
	if w.StopReason != nil {
		reason = *w.StopReason
	}
	resp.FinishReason = normaliseStop(reason)
	if u := w.Usage; u != nil {
		resp.Usage = usageOf(u.InputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens, u.OutputTokens)
	}
	return resp, nil
}

// usageOf normalises Anthropic's counts: input_tokens excludes cache reads
// and writes, envelope.Usage's InputTokens includes them.
func usageOf(input, cacheRead, cacheWrite, output int) envelope.Usage {
	in, read, write := clampTokens(input), clampTokens(cacheRead), clampTokens(cacheWrite)
	return envelope.Usage{InputTokens: in + read + write, OutputTokens: clampTokens(output), CachedTokens: read, CacheWriteTokens: write}
}

// clampTokens bounds a reported count to [0, 2^40], so sums cannot overflow.
func clampTokens(n int) int { return min(max(n, 0), 1<<40) }

func quote(s string) string {
	if s == "" {
		return "missing"
	}
	return `"` + provider.CleanMessage(s, "") + `"`
}

// StripCodeFence removes one Markdown code fence wrapping the whole text,
// which models add to JSON answers despite being told not to.
func StripCodeFence(s string) string {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "```") || !strings.HasSuffix(t, "```") || len(t) < 6 {
		return s
	}
	t = strings.TrimSuffix(t, "```")
	nl := strings.IndexByte(t, '\n')
	if nl < 0 {
		return s
	}
	return strings.TrimSpace(t[nl+1:])
}

func normaliseStop(reason string) string {
	switch reason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	default: // end_turn, stop_sequence, pause_turn
		return "stop"
	}
}
