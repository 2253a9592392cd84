package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// openAI is the Chat Completions dialect.
type openAI struct{}

func (openAI) name() string { return "openai" }

func (openAI) key(r *http.Request) string { return bearer(r) }

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// oaiRequest lists every parameter the edge accepts; any other is refused
// (as OpenAI refuses an unrecognized argument) rather than silently dropped.
type oaiRequest struct {
	Model               string                   `json:"model"`
	Messages            []oaiMessage             `json:"messages"`
	MaxTokens           *int                     `json:"max_tokens"`
	MaxCompletionTokens *int                     `json:"max_completion_tokens"`
	Temperature         *float64                 `json:"temperature"`
	ResponseFormat      *envelope.ResponseFormat `json:"response_format"`
	Stream              bool                     `json:"stream"`
	StreamOptions       json.RawMessage          `json:"stream_options"`
	Metadata            map[string]string        `json:"metadata"`
	User                string                   `json:"user"`
	N                   *int                     `json:"n"`
	Store               *bool                    `json:"store"`
}

type oaiMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	Name    string          `json:"name"`
}

func (openAI) decode(body []byte, req *envelope.Request) (*apiError, bool) {
	var in oaiRequest
	if err := decodeStrict(body, &in); err != nil {
		return err, false
	}
	if !in.Stream && len(in.StreamOptions) > 0 && string(in.StreamOptions) != "null" {
		return invalid("stream_options: only allowed when stream is true"), false
	}
	if in.N != nil && *in.N != 1 {
		return invalid("n: only 1 choice is supported"), false
	}
	if len(in.Messages) == 0 {
		return invalid("messages: at least one message is required"), false
	}
	req.Model, req.User, req.Temperature, req.ResponseFormat = in.Model, in.User, in.Temperature, in.ResponseFormat
	if in.MaxCompletionTokens != nil {
		req.MaxTokens = *in.MaxCompletionTokens
	} else if in.MaxTokens != nil {
		req.MaxTokens = *in.MaxTokens
	}
	if len(in.Metadata) > 0 {
		req.Metadata = in.Metadata
	}
	for i, m := range in.Messages {
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant":
		default:
			return invalid(fmt.Sprintf("messages[%d].role: %q is not supported (system, developer, user, assistant)", i, m.Role)), false
		}
		text, err := textContent(m.Content, fmt.Sprintf("messages[%d].content", i))
		if err != nil {
			return err, false
		}
		req.Messages = append(req.Messages, envelope.Message{Role: role, Content: text})
	}
	return nil, in.Stream
}

type oaiResponse struct {
	ID                string      `json:"id"`
	Object            string      `json:"object"`
	Created           int64       `json:"created"`
	Model             string      `json:"model"`
	Choices           []oaiChoice `json:"choices"`
	Usage             oaiUsage    `json:"usage"`
	SystemFingerprint *string     `json:"system_fingerprint"`
}

type oaiChoice struct {
	Index        int       `json:"index"`
	Message      oaiAnswer `json:"message"`
	FinishReason string    `json:"finish_reason"`
	Logprobs     *struct{} `json:"logprobs"`
}

type oaiAnswer struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type oaiUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func (openAI) response(rep *envelope.Reply, created time.Time) any {
	finish := rep.FinishReason
	if finish == "" {
		finish = "stop"
	}
	u := oaiUsage{PromptTokens: rep.Usage.InputTokens, CompletionTokens: rep.Usage.OutputTokens,
		TotalTokens: rep.Usage.InputTokens + rep.Usage.OutputTokens}
	u.PromptTokensDetails.CachedTokens = rep.Usage.CachedTokens
	u.CompletionTokensDetails.ReasoningTokens = rep.Usage.ReasoningTokens
	return oaiResponse{ID: "chatcmpl-" + rep.ID, Object: "chat.completion", Created: created.Unix(), Model: servedModel(rep),
		Choices: []oaiChoice{{Message: oaiAnswer{Role: "assistant", Content: rep.Content}, FinishReason: finish}}, Usage: u}
}

// servedModel is the model that answered, as <vendor>/<model>: the name
// that pins a later request to it.
func servedModel(rep *envelope.Reply) string {
	if rep.Vendor == "" {
		return rep.Model
	}
	return rep.Vendor + "/" + rep.Model
}

type oaiError struct {
	Error oaiErrorBody `json:"error"`
}

type oaiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func (openAI) errorBody(e *apiError) any {
	t := "api_error"
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		t = "invalid_request_error"
	case http.StatusUnauthorized:
		t = "authentication_error"
	case http.StatusForbidden:
		t = "permission_error"
	case http.StatusNotFound:
		t = "not_found_error"
	case http.StatusTooManyRequests:
		t = "rate_limit_error"
	case http.StatusGatewayTimeout:
		t = "timeout_error"
	}
	return oaiError{Error: oaiErrorBody{Message: e.Message, Type: t, Code: e.Code}}
}

// decodeStrict reads exactly one JSON object into v, refusing fields v
// does not list and anything after the object.
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			return invalid("unsupported parameter: " + strings.Trim(f, `"`))
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return invalid(fmt.Sprintf("%s: must be %s", typeErr.Field, typeErr.Type))
		}
		return invalid("the body is not valid JSON: " + strings.TrimPrefix(msg, "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("the body holds more than one JSON value")
	}
	return nil
}

func unmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }
