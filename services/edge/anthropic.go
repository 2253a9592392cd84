package edge

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// anthropic is the Messages dialect.
type anthropic struct{}

func (anthropic) name() string { return "anthropic" }

// key is x-api-key (what the SDK sends), else a bearer token.
func (anthropic) key(r *http.Request) string {
	if k := r.Header.Get("x-api-key"); k != "" {
		return k
	}
	return bearer(r)
}

type antRequest struct {
	Model       string          `json:"model"`
	Messages    []antMessage    `json:"messages"`
	System      json.RawMessage `json:"system"`
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float64        `json:"temperature"`
	Stream      bool            `json:"stream"`
	Metadata    *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
}

type antMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

func (anthropic) decode(body []byte, req *envelope.Request) (*apiError, bool) {
	var in antRequest
	if err := decodeStrict(body, &in); err != nil {
		return err, false
	}
	if in.MaxTokens == nil {
		return invalid("max_tokens: Field required"), false
	}
	if len(in.Messages) == 0 {
		return invalid("messages: at least one message is required"), false
	}
	req.Model, req.MaxTokens, req.Temperature = in.Model, *in.MaxTokens, in.Temperature
	if in.Metadata != nil {
		req.User = in.Metadata.UserID
	}
	if len(in.System) > 0 && string(in.System) != "null" {
		sys, err := textContent(in.System, "system")
		if err != nil {
			return err, false
		}
		req.Messages = append(req.Messages, envelope.Message{Role: "system", Content: sys})
	}
	for i, m := range in.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return invalid(fmt.Sprintf("messages.%d.role: %q is not user or assistant", i, m.Role)), false
		}
		text, err := textContent(m.Content, fmt.Sprintf("messages.%d.content", i))
		if err != nil {
			return err, false
		}
		req.Messages = append(req.Messages, envelope.Message{Role: m.Role, Content: text})
	}
	return nil, in.Stream
}

type antResponse struct {
	ID           string     `json:"id"`
	Type         string     `json:"type"`
	Role         string     `json:"role"`
	Content      []antBlock `json:"content"`
	Model        string     `json:"model"`
	StopReason   string     `json:"stop_reason"`
	StopSequence *string    `json:"stop_sequence"`
	Usage        antUsage   `json:"usage"`
}

type antBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type antUsage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
}

// stopReasons maps the normalised finish reason to Anthropic's.
var stopReasons = map[string]string{"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}

func (anthropic) response(rep *envelope.Reply, _ time.Time) any {
	stop, ok := stopReasons[rep.FinishReason]
	if !ok {
		stop = "end_turn"
	}
	// Anthropic's input_tokens excludes cache reads and writes; Switchyard's
	// InputTokens includes them.
	u := rep.Usage
	return antResponse{ID: "msg_" + rep.ID, Type: "message", Role: "assistant",
		Content: []antBlock{{Type: "text", Text: rep.Content}}, Model: servedModel(rep), StopReason: stop,
		Usage: antUsage{InputTokens: max(u.InputTokens-u.CachedTokens-u.CacheWriteTokens, 0), OutputTokens: u.OutputTokens,
			CacheReadInputTokens: u.CachedTokens, CacheCreationInputTokens: u.CacheWriteTokens}}
}

type antError struct {
	Type  string       `json:"type"`
	Error antErrorBody `json:"error"`
}

type antErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (anthropic) errorBody(e *apiError) any {
	t := "api_error"
	switch e.Status {
	case http.StatusBadRequest:
		t = "invalid_request_error"
	case http.StatusUnauthorized:
		t = "authentication_error"
	case http.StatusForbidden:
		t = "permission_error"
	case http.StatusNotFound:
		t = "not_found_error"
	case http.StatusRequestEntityTooLarge:
		t = "request_too_large"
	case http.StatusTooManyRequests:
		t = "rate_limit_error"
	case http.StatusGatewayTimeout:
		t = "timeout_error"
	}
	return antError{Type: "error", Error: antErrorBody{Type: t, Message: e.Message}}
}
