// Package openai is the adapter for the OpenAI Chat Completions wire
// protocol, also spoken by OpenRouter and other OpenAI-compatible endpoints.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// DefaultBaseURL is OpenAI's API root.
const DefaultBaseURL = "https://api.openai.com/v1"

// OpenRouterBaseURL is OpenRouter's OpenAI-compatible API root.
const OpenRouterBaseURL = "https://openrouter.ai/api/v1"

// Config configures an Adapter.
type Config struct {
	// BaseURL is the API root; the adapter POSTs to BaseURL + "/chat/completions".
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>" when non-empty.
	APIKey string
	// HTTPClient performs the call; provider.DefaultHTTPClient when nil.
	HTTPClient *http.Client
	// Headers are added to every call (e.g. OpenRouter's HTTP-Referer and
	// X-Title, or OpenAI-Organization / OpenAI-Project).
	Headers map[string]string
	// MaxCompletionTokens sends max_completion_tokens instead of max_tokens.
	// Models whose name marks them as reasoning models (o1, o3, o4, gpt-5)
	// use it regardless.
	MaxCompletionTokens bool
	// OpenRouter speaks OpenRouter's dialect: the body asks for usage
	// accounting (usage.include, so the reply carries usage.cost, the
	// vendor-reported cost) and errors are classified by OpenRouter's table
	// (402 insufficient credits, 403 moderation).
	OpenRouter bool
}

// Adapter speaks Chat Completions.
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
	for k, v := range cfg.Headers {
		h.Set(k, v)
	}
	if cfg.APIKey != "" {
		h.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	return &Adapter{cfg: cfg, url: strings.TrimRight(cfg.BaseURL, "/") + "/chat/completions", headers: h}
}

// Wire shapes.

type wireMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type wireRequest struct {
	Model               string                   `json:"model"`
	Messages            []wireMessage            `json:"messages"`
	MaxTokens           int                      `json:"max_tokens,omitempty"`
	MaxCompletionTokens int                      `json:"max_completion_tokens,omitempty"`
	Temperature         *float64                 `json:"temperature,omitempty"`
	ResponseFormat      *envelope.ResponseFormat `json:"response_format,omitempty"`
	Usage               *wireUsageRequest        `json:"usage,omitempty"`
	Stream              bool                     `json:"stream,omitempty"`
	StreamOptions       *wireStreamOptions       `json:"stream_options,omitempty"`
}

// wireStreamOptions asks for the final usage chunk of a stream.
type wireStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// wireUsageRequest is OpenRouter's usage-accounting switch.
type wireUsageRequest struct {
	Include bool `json:"include"`
}

// BuildBody encodes req as a Chat Completions request body, vendor options
// merged in.
func (a *Adapter) BuildBody(req *provider.Request) ([]byte, error) {
	return a.buildBody(req, false)
}

// buildBody encodes req; stream asks for an event stream with a final
// usage chunk. A trailing assistant turn (a prefill) is sent as the last
// message: the API has no continuation flag, so models that cannot
// continue it answer anew or refuse (prefill_unsupported).
func (a *Adapter) buildBody(req *provider.Request, stream bool) ([]byte, error) {
	w := wireRequest{Model: req.Model, Temperature: req.Temperature}
	if stream {
		w.Stream, w.StreamOptions = true, &wireStreamOptions{IncludeUsage: true}
	}
	w.Messages = make([]wireMessage, len(req.Messages))
	for i, m := range req.Messages {
		w.Messages[i] = wireMessage{Role: m.Role, Content: m.Content}
	}
	if req.MaxTokens > 0 {
		if a.cfg.MaxCompletionTokens || isReasoningModel(req.Model) {
			w.MaxCompletionTokens = req.MaxTokens
		} else {
			w.MaxTokens = req.MaxTokens
		}
	}
	if rf := req.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" {
		cp := *rf
		if cp.JSONSchema != nil {
			js := *cp.JSONSchema
			if js.Name == "" {
				js.Name = "response" // required by the API
			}
			cp.JSONSchema = &js
		}
		w.ResponseFormat = &cp
	}
	if a.cfg.OpenRouter {
		// Without it older OpenRouter deployments report no usage.cost.
		w.Usage = &wireUsageRequest{Include: true}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, &provider.Error{Class: provider.ClassInvalidRequest, Message: "encoding request: " + err.Error()}
	}
	return provider.MergeOptions(body, req.Options, "model", "messages", "stream", "stream_options")
}

func isReasoningModel(model string) bool {
	for _, p := range []string{"o1", "o3", "o4", "gpt-5"} {
		if model == p || strings.HasPrefix(model, p+"-") {
			return true
		}
	}
	return false
}

// Complete performs one Chat Completions call.
func (a *Adapter) Complete(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := a.BuildBody(req)
	if err != nil {
		return nil, err
	}
	reply, err := provider.PostJSON(ctx, a.cfg.HTTPClient, a.url, a.headers, body)
	if err != nil {
		return nil, a.scrub(err)
	}
	if reply.Status < 200 || reply.Status > 299 {
		return nil, provider.RefinePrefill(a.StatusError(reply.Status, reply.Header, reply.Body), req)
	}
	resp, err := DecodeResponse(reply.Body)
	if err != nil {
		return nil, a.scrub(err)
	}
	resp.HTTPStatus = reply.Status
	return resp, nil
}

// StatusError classifies a non-2xx reply: the shared status table,
// refined by the error body. OpenAI: code context_length_exceeded, and a
// 429 insufficient_quota (an exhausted account, not a rate limit).
// OpenRouter: a 403 with flagged input is a moderation refusal; its context
// errors are recognised by message.
func (a *Adapter) StatusError(status int, h http.Header, body []byte) *provider.Error {
	ve := provider.StatusError(status, h, ErrorMessage(body), a.cfg.APIKey)
	var eb wireErrorBody
	if json.Unmarshal(body, &eb) != nil || eb.Error == nil {
		return ve
	}
	code, typ := codeString(eb.Error.Code), eb.Error.Type
	msg := strings.ToLower(eb.Error.Message)
	switch {
	case code == "context_length_exceeded" || (status == http.StatusBadRequest && strings.Contains(msg, "maximum context length")):
		ve.Reclassify(provider.ClassContextLength)
	case code == "insufficient_quota" || typ == "insufficient_quota":
		ve.Reclassify(provider.ClassPaymentRequired)
	case a.cfg.OpenRouter && status == http.StatusForbidden && (hasField(eb.Error.Metadata, "flagged_input") || strings.Contains(msg, "flagged")):
		ve.Reclassify(provider.ClassContentRefused)
	}
	return ve
}

func hasField(obj json.RawMessage, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return false
	}
	_, ok := m[key]
	return ok
}

func (a *Adapter) scrub(err error) error {
	ve := provider.AsError(err)
	ve.Message = provider.CleanMessage(ve.Message, a.cfg.APIKey)
	return ve
}

type wireError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"` // string at OpenAI, number at OpenRouter
	Param   json.RawMessage `json:"param"`
	// Metadata is OpenRouter's: moderation reasons, provider details.
	Metadata json.RawMessage `json:"metadata"`
}

type wireErrorBody struct {
	Error *wireError `json:"error"`
}

// ErrorMessage extracts a readable message from an error body:
// {"error":{"message","type","code"}}. It falls back to a snippet of the body.
func ErrorMessage(body []byte) string {
	var eb wireErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		return provider.Snippet(body)
	}
	return formatError(eb.Error)
}

func formatError(e *wireError) string {
	var parts []string
	if e.Type != "" {
		parts = append(parts, e.Type)
	}
	if c := codeString(e.Code); c != "" && c != e.Type {
		parts = append(parts, c)
	}
	msg := e.Message
	if msg == "" {
		msg = "unknown error"
	}
	if len(parts) > 0 {
		return strings.Join(parts, "/") + ": " + msg
	}
	return msg
}

func codeString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

type wireResponse struct {
	Object  string          `json:"object"`
	Choices []wireChoice    `json:"choices"`
	Usage   *wireUsage      `json:"usage"`
	Error   json.RawMessage `json:"error"`
}

type wireChoice struct {
	Index   int `json:"index"`
	Message *struct {
		Role      string          `json:"role"`
		Content   *string         `json:"content"`
		Refusal   *string         `json:"refusal"`
		ToolCalls json.RawMessage `json:"tool_calls"`
	} `json:"message"`
	FinishReason *string         `json:"finish_reason"`
	Error        json.RawMessage `json:"error"` // OpenRouter: a provider error inside a choice
}

type wireUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens     int `json:"cached_tokens"`
		CacheWriteTokens int `json:"cache_write_tokens"` // OpenRouter
	} `json:"prompt_tokens_details"`
	// Reasoning tokens are part of completion_tokens and billed as output.
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
	// Cost is OpenRouter's charge for the call in USD (credits).
	Cost *float64 `json:"cost"`
}

// DecodeResponse decodes a 2xx Chat Completions body. A body that is not a
// completion (unparseable, an error object, no choices) is a retryable
// ClassBadResponse error.
func DecodeResponse(body []byte) (*provider.Response, error) {
	return decodeResponse(body, unmarshalResponse)
}

// unmarshalResponse decodes a completion body with go-json, a fraction of
// encoding/json's allocations per call (BenchmarkDecodeResponse), and with
// encoding/json wherever the two read differently, so every body is read,
// and refused with the same message, as before
// (TestDecodeResponseMatchesEncodingJSON, FuzzDecodeResponseMatchesEncodingJSON):
//   - the body is not valid JSON (json.Valid, the check encoding/json makes
//     first: go-json skips unknown fields without checking them);
//   - go-json refuses (its messages differ, and it refuses 1.0 for an int
//     where encoding/json names the field);
//   - invalid UTF-8 (go-json before v0.12 kept the bytes where encoding/json
//     writes U+FFFD; the check stays as a guard that costs one scan);
//   - a body holding the two non-ASCII runes that fold to ASCII letters
//     (U+212A Kelvin sign, U+017F long s), raw or escaped: encoding/json
//     matches "prompt_to\u212aens" to prompt_tokens, go-json does not (both
//     match ASCII keys of any case).
func unmarshalResponse(body []byte, w *wireResponse) error {
	if json.Valid(body) && utf8.Valid(body) && !mayFoldToASCII(body) {
		if gojson.Unmarshal(body, w) == nil {
			return nil
		}
		*w = wireResponse{}
	}
	return json.Unmarshal(body, w)
}

func mayFoldToASCII(body []byte) bool {
	if bytes.Contains(body, []byte("\u212a")) || bytes.Contains(body, []byte("\u017f")) {
		return true
	}
	for rest := body; ; {
		i := bytes.Index(rest, []byte(`\u`))
		if i < 0 || len(rest) < i+6 {
			return false
		}
		if esc := rest[i+2 : i+6]; bytes.EqualFold(esc, []byte("212a")) || bytes.EqualFold(esc, []byte("017f")) {
			return true
		}
		rest = rest[i+2:]
	}
}

func decodeResponse(body []byte, unmarshal func([]byte, *wireResponse) error) (*provider.Response, error) {
	var w wireResponse
	if err := unmarshal(body, &w); err != nil {
		return nil, provider.BadResponse(http.StatusOK, "unparseable completion: "+err.Error(), "")
	}
	if e := bytes.TrimSpace(w.Error); len(e) > 0 && !bytes.Equal(e, []byte("null")) {
		return nil, provider.BadResponse(http.StatusOK, "error in 2xx body: "+ErrorMessage(body), "")
	}
	if len(w.Choices) == 0 {
		return nil, provider.BadResponse(http.StatusOK, "completion has no choices", "")
	}
	c := w.Choices[0]
	if e := bytes.TrimSpace(c.Error); len(e) > 0 && !bytes.Equal(e, []byte("null")) {
		var we wireError
		msg := provider.Snippet(e)
		if json.Unmarshal(e, &we) == nil && we.Message != "" {
			msg = formatError(&we)
		}
		return nil, provider.BadResponse(http.StatusOK, "error in choice: "+msg, "")
	}
	if c.Message == nil {
		return nil, provider.BadResponse(http.StatusOK, "choice has no message", "")
	}
	resp := &provider.Response{}
	switch {
	case c.Message.Content != nil:
		resp.Content = *c.Message.Content
	case c.Message.Refusal != nil:
		resp.Content = *c.Message.Refusal
	}
	reason := ""
	if c.FinishReason != nil {
		reason = *c.FinishReason
	}
	resp.FinishReason = normaliseFinish(reason)
	if c.Message.Content == nil && c.Message.Refusal != nil {
		resp.FinishReason = "content_filter"
	}
	if w.Usage != nil {
		resp.Usage = usageOf(w.Usage)
	}
	return resp, nil
}

// usageOf normalises a usage object: cached and cache-write tokens inside
// the prompt count, reasoning inside the completion count, OpenRouter's
// reported cost.
func usageOf(u *wireUsage) envelope.Usage {
	out := envelope.Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens}
	if d := u.PromptTokensDetails; d != nil {
		out.CachedTokens = d.CachedTokens
		out.CacheWriteTokens = d.CacheWriteTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		out.ReasoningTokens = d.ReasoningTokens
	}
	if u.Cost != nil && *u.Cost >= 0 && !math.IsInf(*u.Cost, 0) {
		out.VendorCostUSD, out.VendorCostReported = *u.Cost, true
	}
	sanitiseUsage(&out)
	return out
}

func sanitiseUsage(u *envelope.Usage) {
	if u.InputTokens < 0 {
		u.InputTokens = 0
	}
	if u.OutputTokens < 0 {
		u.OutputTokens = 0
	}
	if u.CachedTokens < 0 {
		u.CachedTokens = 0
	}
	if u.CachedTokens > u.InputTokens {
		u.CachedTokens = u.InputTokens
	}
	u.CacheWriteTokens = min(max(u.CacheWriteTokens, 0), u.InputTokens-u.CachedTokens)
	u.ReasoningTokens = min(max(u.ReasoningTokens, 0), u.OutputTokens)
}

func normaliseFinish(r string) string {
	switch strings.ToLower(r) {
	case "", "stop", "end_turn", "stop_sequence", "eos":
		return "stop"
	case "length", "max_tokens":
		return "length"
	case "content_filter":
		return "content_filter"
	case "tool_calls", "function_call", "tool_use":
		return "tool_calls"
	default:
		return "stop"
	}
}
