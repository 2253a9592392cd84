package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// Stream performs one streaming Chat Completions call (stream: true with
// stream_options.include_usage, so the last chunk carries usage). OpenRouter
// comment lines (": OPENROUTER PROCESSING") keep the idle limit at bay and
// are otherwise ignored.
func (a *Adapter) Stream(ctx context.Context, req *provider.Request, opt provider.StreamOptions, onDelta func(provider.Delta) error) (*provider.Response, error) {
	if err := provider.CheckRequest(req); err != nil {
		return nil, err
	}
	body, err := a.buildBody(req, true)
	if err != nil {
		return nil, err
	}
	resp, err := provider.RunStream(ctx, provider.StreamCall{
		Client: a.cfg.HTTPClient, URL: a.url, Header: a.headers, Body: body, Options: opt,
		StatusError: func(status int, h http.Header, body []byte) *provider.Error {
			return provider.RefinePrefill(a.StatusError(status, h, body), req)
		},
	}, &StreamDecoder{}, onDelta)
	if err != nil {
		return nil, provider.ScrubStreamError(err, a.cfg.APIKey)
	}
	return resp, nil
}

// StreamDecoder decodes chat.completion.chunk events ending with
// "data: [DONE]".
type StreamDecoder struct {
	content strings.Builder
	refusal strings.Builder
	finish  string
	usage   *wireUsage
}

var _ provider.StreamDecoder = (*StreamDecoder)(nil)

type wireChunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Content *string `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"delta"`
		FinishReason *string         `json:"finish_reason"`
		Error        json.RawMessage `json:"error"`
	} `json:"choices"`
	Usage *wireUsage      `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// Event handles one chunk.
func (d *StreamDecoder) Event(ev provider.SSEEvent) (string, bool, error) {
	data := bytes.TrimSpace(ev.Data)
	if bytes.Equal(data, []byte("[DONE]")) {
		return "", true, nil
	}
	var c wireChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return "", false, provider.BadResponse(http.StatusOK, "malformed stream chunk: "+err.Error()+": "+provider.Snippet(data), "")
	}
	if isSet(c.Error) {
		return "", false, midStreamError(c.Error)
	}
	if c.Object == "error" { // vLLM's shape: the error object is the chunk
		return "", false, midStreamError(data)
	}
	if c.Usage != nil {
		d.usage = c.Usage
	}
	content := ""
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		if isSet(ch.Error) {
			return "", false, midStreamError(ch.Error)
		}
		if ch.Delta != nil {
			if ch.Delta.Content != nil {
				content = *ch.Delta.Content
			}
			if ch.Delta.Refusal != nil {
				d.refusal.WriteString(*ch.Delta.Refusal)
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			d.finish = *ch.FinishReason
		}
	}
	d.content.WriteString(content)
	switch d.finish {
	case "content_filter":
		msg := "finish_reason content_filter"
		if r := d.refusal.String(); r != "" {
			msg += ": " + r
		}
		return "", false, refused(msg)
	case "error": // OpenRouter: the upstream provider failed mid-stream
		return "", false, &provider.Error{Class: provider.ClassServerError, HTTPStatus: http.StatusOK, Retryable: true,
			Message: "stream ended with finish_reason error"}
	}
	return content, false, nil
}

// Finish builds the answer.
func (d *StreamDecoder) Finish(ended bool) (*provider.Response, error) {
	if r := d.refusal.String(); r != "" {
		return nil, refused("refusal: " + r)
	}
	if !ended {
		switch {
		case d.finish == "":
			return nil, provider.StreamCut("finish_reason")
		case d.usage == nil:
			return nil, provider.StreamCut("usage chunk")
		}
	}
	resp := &provider.Response{Content: d.content.String(), FinishReason: normaliseFinish(d.finish)}
	if d.usage != nil {
		resp.Usage = usageOf(d.usage)
	}
	return resp, nil
}

func refused(msg string) *provider.Error {
	return &provider.Error{Class: provider.ClassContentRefused, HTTPStatus: http.StatusOK,
		Retryable: provider.ClassContentRefused.Retryable(), Message: provider.CleanMessage(msg, "")}
}

func isSet(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

// midStreamError classifies an error object sent inside a 200 stream: its
// numeric code (OpenRouter sends the HTTP status) by the status table,
// anything else as a vendor failure.
func midStreamError(raw json.RawMessage) *provider.Error {
	var we wireError
	msg := provider.Snippet(raw)
	if json.Unmarshal(raw, &we) == nil && (we.Message != "" || len(we.Code) > 0) {
		msg = formatError(&we)
	}
	class := provider.ClassServerError
	if n, err := strconv.Atoi(codeString(we.Code)); err == nil && n >= 400 && n <= 599 {
		class, _ = provider.ClassifyStatus(n)
	}
	return &provider.Error{Class: class, HTTPStatus: http.StatusOK, Retryable: class.Retryable(),
		Message: provider.CleanMessage("error in stream: "+msg, "")}
}
