package edge

import (
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

func (anthropic) newStream(req *envelope.Request, _ []byte, _ time.Time) (sseStream, *apiError) {
	return &antStream{id: "msg_" + req.ID}, nil
}

// antStream writes the Messages event sequence: message_start,
// content_block_start, ping, content_block_delta…, content_block_stop,
// message_delta (stop reason and usage), message_stop; or, when the answer
// breaks after it started, an error event and nothing after it.
type antStream struct{ id string }

type antStreamUsage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
}

func (s *antStream) start(w *sseWriter, model string) {
	w.event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": s.id, "type": "message", "role": "assistant", "content": []any{}, "model": model,
		"stop_reason": nil, "stop_sequence": nil, "usage": antStreamUsage{}}})
	w.event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
		"content_block": map[string]any{"type": "text", "text": ""}})
	s.ping(w)
}

func (s *antStream) delta(w *sseWriter, text string) {
	w.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
		"delta": map[string]any{"type": "text_delta", "text": text}})
}

func (s *antStream) finish(w *sseWriter, rep *envelope.Reply) {
	stop, ok := stopReasons[rep.FinishReason]
	if !ok {
		stop = "end_turn"
	}
	u := rep.Usage
	w.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	// The whole usage is known only now: message_delta carries it all (the
	// SDK merges input and cache counts from it into the final message).
	w.event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
		"usage": antStreamUsage{InputTokens: max(u.InputTokens-u.CachedTokens-u.CacheWriteTokens, 0), OutputTokens: u.OutputTokens,
			CacheReadInputTokens: u.CachedTokens, CacheCreationInputTokens: u.CacheWriteTokens}})
	w.event("message_stop", map[string]any{"type": "message_stop"})
}

func (s *antStream) fail(w *sseWriter, err *apiError) { w.event("error", anthropic{}.errorBody(err)) }

func (s *antStream) ping(w *sseWriter) { w.event("ping", map[string]any{"type": "ping"}) }
