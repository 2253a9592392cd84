package gemini

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// StreamURL is the streamGenerateContent endpoint of a model, asking for
// server-sent events (alt=sse).
func (a *Adapter) StreamURL(model string) string {
	model = strings.TrimPrefix(model, "models/")
	return a.base + "/v1beta/models/" + url.PathEscape(model) + ":streamGenerateContent?alt=sse"
}

// Stream performs one streamGenerateContent call. Each event is a
// GenerateContentResponse; the stream has no end marker, so it is complete
// when it carried a finish reason and usage before the body ended. A
// trailing assistant turn goes out as a last "model" content, which Gemini
// continues where the model allows it.
func (a *Adapter) Stream(ctx context.Context, req *provider.Request, opt provider.StreamOptions, onDelta func(provider.Delta) error) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := a.BuildBody(req)
	if err != nil {
		return nil, err
	}
	resp, err := provider.RunStream(ctx, provider.StreamCall{
		Client: a.cfg.HTTPClient, URL: a.StreamURL(req.Model), Header: a.headers, Body: body, Options: opt,
		StatusError: func(status int, h http.Header, body []byte) *provider.Error {
			return provider.RefinePrefill(StatusError(status, h, body, a.cfg.APIKey), req)
		},
	}, &StreamDecoder{}, onDelta)
	if err != nil {
		return nil, provider.ScrubStreamError(err, a.cfg.APIKey)
	}
	return resp, nil
}

// StreamDecoder decodes a streamGenerateContent?alt=sse body.
type StreamDecoder struct {
	content strings.Builder
	finish  string
	usage   *wireUsage
}

var _ provider.StreamDecoder = (*StreamDecoder)(nil)

// Event handles one GenerateContentResponse chunk.
func (d *StreamDecoder) Event(ev provider.SSEEvent) (string, bool, error) {
	var w wireResponse
	if err := json.Unmarshal(ev.Data, &w); err != nil {
		return "", false, provider.BadResponse(http.StatusOK, "malformed stream chunk: "+err.Error()+": "+provider.Snippet(ev.Data), "")
	}
	if w.Error != nil {
		status := w.Error.Code
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		ve := StatusError(status, nil, ev.Data, "")
		ve.HTTPStatus, ve.Message = http.StatusOK, "error in stream: "+ve.Message
		return "", false, ve
	}
	if w.UsageMetadata != nil {
		d.usage = w.UsageMetadata
	}
	if w.PromptFeedback != nil && w.PromptFeedback.BlockReason != "" {
		return "", false, refused("blockReason " + w.PromptFeedback.BlockReason)
	}
	if len(w.Candidates) == 0 {
		return "", false, nil
	}
	c := w.Candidates[0]
	var sb strings.Builder
	if c.Content != nil {
		for _, p := range c.Content.Parts {
			if !p.Thought {
				sb.WriteString(p.Text)
			}
		}
	}
	text := sb.String()
	d.content.WriteString(text)
	if c.FinishReason != "" {
		d.finish = c.FinishReason
		if normaliseFinish(c.FinishReason) == "content_filter" {
			return "", false, refused("finishReason " + c.FinishReason)
		}
	}
	return text, false, nil
}

func refused(msg string) *provider.Error {
	return &provider.Error{Class: provider.ClassContentRefused, HTTPStatus: http.StatusOK,
		Retryable: provider.ClassContentRefused.Retryable(), Message: provider.CleanMessage(msg, "")}
}

// Finish builds the answer.
func (d *StreamDecoder) Finish(bool) (*provider.Response, error) {
	switch {
	case d.finish == "":
		return nil, provider.StreamCut("finishReason")
	case d.usage == nil:
		return nil, provider.StreamCut("usageMetadata")
	}
	return &provider.Response{Content: d.content.String(), FinishReason: normaliseFinish(d.finish), Usage: usageOf(d.usage)}, nil
}
