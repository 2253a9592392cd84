// Package gemini is the adapter for the Google Gemini generateContent wire
// protocol (Generative Language API, v1beta).
package gemini

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// DefaultBaseURL is the Generative Language API root.
const DefaultBaseURL = "https://generativelanguage.googleapis.com"

// Config configures an Adapter.
type Config struct {
	// BaseURL is the API root; the adapter POSTs to
	// BaseURL + "/v1beta/models/{model}:generateContent".
	BaseURL    string
	APIKey     string // sent as x-goog-api-key
	HTTPClient *http.Client
	Headers    map[string]string
	// LegacySchema sends the schema as generationConfig.responseSchema (the
	// OpenAPI subset) instead of responseJsonSchema (full JSON Schema).
	LegacySchema bool
}

// Adapter speaks generateContent.
type Adapter struct {
	cfg     Config
	base    string
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
		h.Set("x-goog-api-key", cfg.APIKey)
	}
	return &Adapter{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), headers: h}
}

// URL returns the generateContent endpoint for model.
func (a *Adapter) URL(model string) string {
	model = strings.TrimPrefix(model, "models/")
	return a.base + "/v1beta/models/" + url.PathEscape(model) + ":generateContent"
}

type wirePart struct {
	Text string `json:"text"`
}

type wireContent struct {
	Role  string     `json:"role,omitempty"`
	Parts []wirePart `json:"parts"`
}

type wireGenConfig struct {
	MaxOutputTokens    int             `json:"maxOutputTokens,omitempty"`
	Temperature        *float64        `json:"temperature,omitempty"`
	ResponseMimeType   string          `json:"responseMimeType,omitempty"`
	ResponseSchema     json.RawMessage `json:"responseSchema,omitempty"`
	ResponseJSONSchema json.RawMessage `json:"responseJsonSchema,omitempty"`
}

type wireRequest struct {
	Contents          []wireContent  `json:"contents"`
	SystemInstruction *wireContent   `json:"systemInstruction,omitempty"`
	GenerationConfig  *wireGenConfig `json:"generationConfig,omitempty"`
}

// BuildBody encodes req as a generateContent body, vendor options merged in
// (nested objects such as generationConfig merge key by key).
func (a *Adapter) BuildBody(req *provider.Request) ([]byte, error) {
	var w wireRequest
	var system []wirePart
	for _, m := range req.Messages {
		switch m.Role {
		case "system", "developer":
			if m.Content != "" {
				system = append(system, wirePart{Text: m.Content})
			}
		case "assistant", "model":
			w.Contents = append(w.Contents, wireContent{Role: "model", Parts: []wirePart{{Text: m.Content}}})
		default:
			w.Contents = append(w.Contents, wireContent{Role: "user", Parts: []wirePart{{Text: m.Content}}})
		}
	}
	if len(w.Contents) == 0 {
		return nil, &provider.Error{Class: provider.ClassInvalidRequest, Message: "gemini needs at least one user or model message"}
	}
	if len(system) > 0 {
		w.SystemInstruction = &wireContent{Parts: system}
	}
	gc := wireGenConfig{MaxOutputTokens: req.MaxTokens, Temperature: req.Temperature}
	if provider.WantsJSON(req.ResponseFormat) {
		gc.ResponseMimeType = "application/json"
		if schema := provider.SchemaOf(req.ResponseFormat); schema != nil {
			if a.cfg.LegacySchema {
				gc.ResponseSchema = schema
			} else {
				gc.ResponseJSONSchema = schema
			}
		}
	}
	if gc.MaxOutputTokens != 0 || gc.Temperature != nil || gc.ResponseMimeType != "" {
		w.GenerationConfig = &gc
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, &provider.Error{Class: provider.ClassInvalidRequest, Message: "encoding request: " + err.Error()}
	}
	return provider.MergeOptions(body, req.Options, "contents")
}

// Complete performs one generateContent call.
func (a *Adapter) Complete(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := a.BuildBody(req)
	if err != nil {
		return nil, err
	}
	reply, err := provider.PostJSON(ctx, a.cfg.HTTPClient, a.URL(req.Model), a.headers, body)
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
	resp.HTTPStatus = reply.Status
	return resp, nil
}

// StatusError classifies a non-2xx reply: the shared status table, refined
// by the google.rpc status, reason and message. 400 FAILED_PRECONDITION is
// an account problem (no billing in the caller's region), a 400 with reason
// API_KEY_INVALID (or "API key not valid") a refused key, "exceeds the maximum number of tokens" a
// context overflow, 504 DEADLINE_EXCEEDED a timeout. RetryInfo's delay
// counts when no retry-after header was sent.
func StatusError(status int, h http.Header, body []byte, secret string) *provider.Error {
	e := ParseError(body)
	ve := provider.StatusError(status, h, e.Message, secret)
	if ve.RetryAfter == 0 {
		ve.RetryAfter = e.RetryDelay
	}
	lower := strings.ToLower(e.Message)
	switch {
	case e.Reason == "API_KEY_INVALID" || strings.Contains(lower, "api key not valid"):
		ve.Reclassify(provider.ClassAuth)
	case e.Status == "FAILED_PRECONDITION":
		ve.Reclassify(provider.ClassPaymentRequired)
	case strings.Contains(lower, "exceeds the maximum number of tokens"):
		ve.Reclassify(provider.ClassContextLength)
	case e.Status == "DEADLINE_EXCEEDED":
		ve.Reclassify(provider.ClassTimeout)
	}
	return ve
}

func (a *Adapter) scrub(err error) error {
	ve := provider.AsError(err)
	ve.Message = provider.CleanMessage(ve.Message, a.cfg.APIKey)
	return ve
}

// ErrorInfo is what an error body says.
type ErrorInfo struct {
	Message    string
	Status     string // google.rpc status, e.g. RESOURCE_EXHAUSTED
	Reason     string // google.rpc.ErrorInfo reason, e.g. API_KEY_INVALID
	RetryDelay time.Duration
}

type wireError struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Status  string            `json:"status"`
	Details []json.RawMessage `json:"details"`
}

type wireErrorBody struct {
	Error *wireError `json:"error"`
}

// ErrorInfoType is the @type of google.rpc.ErrorInfo in error details.
const ErrorInfoType = "type.googleapis.com/google.rpc.ErrorInfo"

// RetryInfoType is the @type of google.rpc.RetryInfo in error details.
const RetryInfoType = "type.googleapis.com/google.rpc.RetryInfo"

// ParseError reads {"error":{"code","message","status","details"}} (also
// wrapped in a one-element array, as some Google front ends send it),
// including google.rpc.RetryInfo's retryDelay.
func ParseError(body []byte) ErrorInfo {
	var eb wireErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		var arr []wireErrorBody
		if json.Unmarshal(body, &arr) == nil && len(arr) > 0 {
			eb = arr[0]
		}
	}
	if eb.Error == nil {
		return ErrorInfo{Message: provider.Snippet(body)}
	}
	e := eb.Error
	info := ErrorInfo{Status: e.Status, Message: e.Message}
	if info.Message == "" {
		info.Message = "unknown error"
	}
	if e.Status != "" {
		info.Message = e.Status + ": " + info.Message
	}
	for _, d := range e.Details {
		var ri struct {
			Type       string `json:"@type"`
			RetryDelay string `json:"retryDelay"`
			Reason     string `json:"reason"`
		}
		if json.Unmarshal(d, &ri) != nil {
			continue
		}
		if ri.Type == ErrorInfoType {
			info.Reason = ri.Reason
		}
		if ri.Type != RetryInfoType {
			continue
		}
		if dur, err := time.ParseDuration(strings.TrimSpace(ri.RetryDelay)); err == nil && dur > 0 {
			info.RetryDelay = dur
		}
	}
	return info
}

type wireResponse struct {
	Candidates []struct {
		Content *struct {
			Role  string `json:"role"`
			Parts []struct {
				Text    string `json:"text"`
				Thought bool   `json:"thought"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata *wireUsage `json:"usageMetadata"`
	Error         *wireError `json:"error"`
}

type wireUsage struct {
	PromptTokenCount        int `json:"promptTokenCount"`
	CandidatesTokenCount    int `json:"candidatesTokenCount"`
	CachedContentTokenCount int `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int `json:"thoughtsTokenCount"`
}

// usageOf normalises usageMetadata: thoughts are billed as output but not
// counted in candidates.
func usageOf(u *wireUsage) envelope.Usage {
	return envelope.Usage{
		InputTokens:     clampTokens(u.PromptTokenCount),
		OutputTokens:    clampTokens(u.CandidatesTokenCount) + clampTokens(u.ThoughtsTokenCount),
		CachedTokens:    min(clampTokens(u.CachedContentTokenCount), clampTokens(u.PromptTokenCount)),
		ReasoningTokens: clampTokens(u.ThoughtsTokenCount),
	}
}

// DecodeResponse decodes a 2xx generateContent body. A prompt blocked by
// safety filters is a completion with finish reason content_filter and no
// content, not an error. Thinking tokens count as output (they are billed so).
func DecodeResponse(body []byte) (*provider.Response, error) {
	var w wireResponse
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, provider.BadResponse(http.StatusOK, "unparseable response: "+err.Error(), "")
	}
	if w.Error != nil {
		return nil, provider.BadResponse(http.StatusOK, "error in 2xx body: "+ParseError(body).Message, "")
	}
	resp := &provider.Response{}
	if u := w.UsageMetadata; u != nil {
		resp.Usage = usageOf(u)
	}
	if len(w.Candidates) == 0 {
		if w.PromptFeedback != nil && w.PromptFeedback.BlockReason != "" {
			resp.FinishReason = "content_filter"
			return resp, nil
		}
		return nil, provider.BadResponse(http.StatusOK, "response has no candidates", "")
	}
	c := w.Candidates[0]
	if c.Content != nil {
		var sb strings.Builder
		for _, p := range c.Content.Parts {
			if !p.Thought {
				sb.WriteString(p.Text)
			}
		}
		resp.Content = sb.String()
	}
	resp.FinishReason = normaliseFinish(c.FinishReason)
	return resp, nil
}

// clampTokens bounds a reported count to [0, 2^40], so sums cannot overflow.
func clampTokens(n int) int { return min(max(n, 0), 1<<40) }

func normaliseFinish(r string) string {
	switch r {
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY":
		return "content_filter"
	case "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL":
		return "tool_calls"
	default: // STOP, FINISH_REASON_UNSPECIFIED, OTHER, LANGUAGE
		return "stop"
	}
}
