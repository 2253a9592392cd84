package anthropic

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// Stream performs one streaming Messages call (stream: true): message_start,
// content_block_start, content_block_delta (text_delta), content_block_stop,
// message_delta (stop_reason, usage.output_tokens), message_stop, with ping
// and error events anywhere.
func (a *Adapter) Stream(ctx context.Context, req *provider.Request, opt provider.StreamOptions, onDelta func(provider.Delta) error) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := buildBody(req, true)
	if err != nil {
		return nil, err
	}
	resp, err := provider.RunStream(ctx, provider.StreamCall{
		Client: a.cfg.HTTPClient, URL: a.url, Header: a.headers, Body: body, Options: opt,
		StatusError: func(status int, h http.Header, body []byte) *provider.Error {
			return provider.RefinePrefill(StatusError(status, h, body, a.cfg.APIKey), req)
		},
	}, &StreamDecoder{}, onDelta)
	if err != nil {
		return nil, provider.ScrubStreamError(err, a.cfg.APIKey)
	}
	if provider.WantsJSON(req.ResponseFormat) {
		resp.Content = StripCodeFence(resp.Content)
	}
	return resp, nil
}

// StreamDecoder decodes the Messages event stream.
type StreamDecoder struct {
	content  strings.Builder
	started  bool
	stop     string
	usage    wireStreamUsage
	hasUsage bool // a message_delta reported the final output count
}

var _ provider.StreamDecoder = (*StreamDecoder)(nil)

type wireStreamUsage struct {
	InputTokens              *int `json:"input_tokens"`
	OutputTokens             *int `json:"output_tokens"`
	CacheCreationInputTokens *int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     *int `json:"cache_read_input_tokens"`
}

// merge takes every count u sets: message_delta's counts are cumulative
// and override message_start's.
func (u *wireStreamUsage) merge(o *wireStreamUsage) {
	if o == nil {
		return
	}
	for _, f := range []struct{ dst, src **int }{{&u.InputTokens, &o.InputTokens}, {&u.OutputTokens, &o.OutputTokens},
		{&u.CacheCreationInputTokens, &o.CacheCreationInputTokens}, {&u.CacheReadInputTokens, &o.CacheReadInputTokens}} {
		if *f.src != nil {
			*f.dst = *f.src
		}
	}
}

type wireEvent struct {
	Type    string `json:"type"`
	Message *struct {
		Usage *wireStreamUsage `json:"usage"`
	} `json:"message"`
	Delta *struct {
		Type       string  `json:"type"`
		Text       string  `json:"text"`
		StopReason *string `json:"stop_reason"`
	} `json:"delta"`
	Usage *wireStreamUsage `json:"usage"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// Event handles one event.
func (d *StreamDecoder) Event(ev provider.SSEEvent) (string, bool, error) {
	var e wireEvent
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return "", false, provider.BadResponse(http.StatusOK, "malformed stream event "+quote(ev.Event)+": "+err.Error()+": "+provider.Snippet(ev.Data), "")
	}
	typ := e.Type
	if typ == "" {
		typ = ev.Event
	}
	switch typ {
	case "message_start":
		d.started = true
		if e.Message != nil {
			d.usage.merge(e.Message.Usage)
		}
	case "content_block_delta":
		if e.Delta != nil && e.Delta.Type == "text_delta" {
			d.content.WriteString(e.Delta.Text)
			return e.Delta.Text, false, nil
		}
	case "message_delta":
		if e.Delta != nil && e.Delta.StopReason != nil {
			d.stop = *e.Delta.StopReason
			if d.stop == "refusal" {
				return "", false, &provider.Error{Class: provider.ClassContentRefused, HTTPStatus: http.StatusOK,
					Retryable: provider.ClassContentRefused.Retryable(), Message: "stop_reason refusal"}
			}
		}
		if e.Usage != nil {
			d.usage.merge(e.Usage)
			d.hasUsage = e.Usage.OutputTokens != nil
		}
	case "message_stop":
		return "", true, nil
	case "error":
		return "", false, streamError(e.Error)
	}
	// ping, content_block_start/stop, and event types added later: nothing
	// to take.
	return "", false, nil
}

// streamError classifies an error event by its type, as the same error
// would be classified as an HTTP reply.
func streamError(e *struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}) *provider.Error {
	if e == nil {
		return provider.BadResponse(http.StatusOK, "error event without an error", "")
	}
	status := http.StatusInternalServerError
	for s, t := range errorTypes {
		if t == e.Type {
			status = s
		}
	}
	body, _ := json.Marshal(map[string]any{"type": "error", "error": e})
	ve := StatusError(status, nil, body, "")
	ve.HTTPStatus = http.StatusOK
	ve.Message = "error event: " + ve.Message
	return ve
}

// errorTypes maps Anthropic's error types to the status they come with.
var errorTypes = map[int]string{
	400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
	404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
	504: "timeout_error", 529: "overloaded_error",
}

// Finish builds the answer.
func (d *StreamDecoder) Finish(ended bool) (*provider.Response, error) {
	switch {
	case !d.started:
		return nil, provider.StreamCut("message_start")
	case !ended && d.stop == "":
		return nil, provider.StreamCut("stop_reason")
	case !ended && !d.hasUsage:
		return nil, provider.StreamCut("final usage")
	}
	u := d.usage
	val := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	return &provider.Response{
		Content:      d.content.String(),
		FinishReason: normaliseStop(d.stop),
		Usage:        usageOf(val(u.InputTokens), val(u.CacheReadInputTokens), val(u.CacheCreationInputTokens), val(u.OutputTokens)),
	}, nil
}
