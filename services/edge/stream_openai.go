package edge

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// oaiStreamOptions is Chat Completions' stream_options.
type oaiStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

func (openAI) newStream(req *envelope.Request, body []byte, created time.Time) (sseStream, *apiError) {
	var in struct {
		StreamOptions json.RawMessage `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &in)
	var opt oaiStreamOptions
	if raw := bytes.TrimSpace(in.StreamOptions); len(raw) > 0 && string(raw) != "null" {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&opt); err != nil {
			return nil, invalid("stream_options: only include_usage (a boolean) is supported")
		}
	}
	return &oaiStream{id: "chatcmpl-" + req.ID, created: created.Unix(), usage: opt.IncludeUsage}, nil
}

// oaiStream writes chat.completion.chunk events: a role chunk, content
// chunks, a finish chunk, the usage chunk when include_usage asked for it,
// and data: [DONE] only after a complete answer.
type oaiStream struct {
	id      string
	created int64
	model   string
	usage   bool
}

type oaiChunk struct {
	ID                string           `json:"id"`
	Object            string           `json:"object"`
	Created           int64            `json:"created"`
	Model             string           `json:"model"`
	SystemFingerprint *string          `json:"system_fingerprint"`
	Choices           []oaiChunkChoice `json:"choices"`
	// Usage is null on every chunk but the last when include_usage is set,
	// absent otherwise.
	Usage *oaiUsage `json:"usage,omitempty"`
}

type oaiChunkChoice struct {
	Index        int       `json:"index"`
	Delta        oaiDelta  `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type oaiDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

func (s *oaiStream) write(w *sseWriter, d oaiDelta, finish *string) {
	c := oaiChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []oaiChunkChoice{{Delta: d, FinishReason: finish}}}
	if s.usage {
		w.event("", withNullUsage{c})
		return
	}
	w.event("", c)
}

// withNullUsage writes "usage": null, as OpenAI does on the chunks before
// the usage chunk when include_usage is set.
type withNullUsage struct{ oaiChunk }

func (c withNullUsage) MarshalJSON() ([]byte, error) {
	type plain oaiChunk
	b, err := json.Marshal(plain(c.oaiChunk))
	if err != nil {
		return nil, err
	}
	return append(b[:len(b)-1], []byte(`,"usage":null}`)...), nil
}

func (s *oaiStream) start(w *sseWriter, model string) {
	s.model = model
	empty := ""
	s.write(w, oaiDelta{Role: "assistant", Content: &empty}, nil)
}

func (s *oaiStream) delta(w *sseWriter, text string) { s.write(w, oaiDelta{Content: &text}, nil) }

func (s *oaiStream) finish(w *sseWriter, rep *envelope.Reply) {
	s.model = servedModel(rep)
	finish := rep.FinishReason
	if finish == "" {
		finish = "stop"
	}
	s.write(w, oaiDelta{}, &finish)
	if s.usage {
		u := rep.Usage
		ou := oaiUsage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.InputTokens + u.OutputTokens}
		ou.PromptTokensDetails.CachedTokens = u.CachedTokens
		ou.CompletionTokensDetails.ReasoningTokens = u.ReasoningTokens
		w.event("", oaiChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model, Choices: []oaiChunkChoice{}, Usage: &ou})
	}
	w.raw("data: [DONE]\n\n")
}

// fail sends OpenAI's in-stream error (the SDK raises it) and no [DONE].
func (s *oaiStream) fail(w *sseWriter, err *apiError) { w.event("", openAI{}.errorBody(err)) }

func (s *oaiStream) ping(w *sseWriter) { w.raw(": ping\n\n") }
