package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// defaultStallMS is how long a stall lasts when the scenario names no
// length: longer than any sane idle limit; the client's disconnect ends it.
const defaultStallMS = 60_000

// hugeLineBytes is the size of the huge_line marker's line: above the 1 MiB
// line limit of Switchyard's decoders.
const hugeLineBytes = 2 << 20

// streamer writes one vendor's event stream.
type streamer interface {
	start()               // what precedes the first content chunk
	delta(text string)    // one content chunk
	malformed()           // a chunk that is not valid JSON
	midError()            // the vendor's mid-stream error
	finish(reason string) // the final reason and usage: stop, length or refuse
	end()                 // the end marker
}

// sseWriter writes events and flushes each.
type sseWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func (s sseWriter) event(event string, v any) {
	data, _ := json.Marshal(v)
	s.raw(event, string(data))
}

func (s sseWriter) raw(event, data string) {
	if event != "" {
		fmt.Fprintf(s.w, "event: %s\n", event)
	}
	fmt.Fprintf(s.w, "data: %s\n\n", data)
	if s.f != nil {
		s.f.Flush()
	}
}

func (s sseWriter) comment(text string) {
	fmt.Fprintf(s.w, ": %s\n\n", text)
	if s.f != nil {
		s.f.Flush()
	}
}

// stream answers req as an event stream: the same content and usage as
// the non-streamed answer, chunked by words, with the scenario's (or the
// prompt marker's) faults.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, req *request, g generation, beh *resolved, mk markers) {
	plan := beh.stream
	if mk.stream != nil {
		// A marker's fault replaces the scenario's; the pacing stays.
		m := *mk.stream
		m.ChunkDelayMS, m.WordsPerChunk = plan.ChunkDelayMS, plan.WordsPerChunk
		plan = m
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	out := sseWriter{w: w}
	out.f, _ = w.(http.Flusher)
	if out.f != nil {
		out.f.Flush()
	}
	ctx := r.Context()
	if plan.StallFirstMS > 0 && !sleep(ctx, time.Duration(plan.StallFirstMS)*time.Millisecond) {
		return
	}
	first := beh.latencyBase
	if beh.jitter > 0 {
		first += time.Duration(fnv64a(req.prompt, "jitter") % uint64(beh.jitter))
	}
	if !sleep(ctx, first) {
		return
	}
	st := newStreamer(req, g, beh.price, out)
	if req.proto == protoOpenRouter {
		out.comment("OPENROUTER PROCESSING")
	}
	st.start()
	pieces := splitWords(g.content, max(plan.WordsPerChunk, 1))
	at := func(p *int, i int) bool { return p != nil && *p == i }
	for i := 0; i <= len(pieces); i++ {
		// Faults set beyond the answer's length happen at its end.
		last := i == len(pieces)
		hits := func(p *int) bool { return at(p, i) || (last && p != nil && *p > i) }
		if hits(plan.CutAfterChunks) {
			panic(http.ErrAbortHandler) // drops the connection mid-body
		}
		if hits(plan.MalformedAfterChunks) {
			st.malformed()
		}
		if hits(plan.hugeLineAfter) {
			out.raw("", `{"pad":"`+strings.Repeat("x", hugeLineBytes)+`"}`)
		}
		if hits(plan.ErrorAfterChunks) {
			st.midError()
			return
		}
		if hits(plan.StallAfterChunks) {
			stall := plan.StallMS
			if stall == 0 {
				stall = defaultStallMS
			}
			if !sleep(ctx, time.Duration(stall)*time.Millisecond) {
				return
			}
		}
		if hits(plan.RefuseAfterChunks) {
			st.finish("refuse")
			if !plan.OmitEndMarker {
				st.end()
			}
			return
		}
		if last {
			break
		}
		if i > 0 {
			d := time.Duration(plan.ChunkDelayMS)*time.Millisecond + beh.perToken*time.Duration(tokens(pieces[i]))
			if !sleep(ctx, d) {
				return
			}
		}
		st.delta(pieces[i])
	}
	if g.length {
		st.finish("length")
	} else {
		st.finish("stop")
	}
	if !plan.OmitEndMarker {
		st.end()
	}
}

// splitWords cuts s into pieces of n words each, every piece carrying the
// spaces that follow its words, so the pieces concatenate to s.
func splitWords(s string, n int) []string {
	var out []string
	words, start, inSpace := 0, 0, false
	for i, r := range s {
		space := r == ' ' || r == '\n' || r == '\t'
		if !space && inSpace {
			words++
			if words == n {
				out = append(out, s[start:i])
				start, words = i, 0
			}
		}
		inSpace = space
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func newStreamer(req *request, g generation, price Price, out sseWriter) streamer {
	id := fmt.Sprintf("%016x%06x", fnv64a(req.prompt), req.id&0xffffff)
	switch req.proto {
	case protoAnthropic:
		return &anthropicStream{sseWriter: out, req: req, g: g, id: "msg_" + id}
	case protoGemini:
		return &geminiStream{sseWriter: out, req: req, g: g, id: id}
	default:
		return &openaiStream{sseWriter: out, req: req, g: g, price: price, id: id, created: time.Now().Unix()}
	}
}

// ---- OpenAI and OpenRouter: chat.completion.chunk, data: [DONE] ----

type openaiStream struct {
	sseWriter
	req     *request
	g       generation
	price   Price
	id      string
	created int64
	sent    strings.Builder
}

func (o *openaiStream) chunk(choices []any, usage any) map[string]any {
	c := map[string]any{"object": "chat.completion.chunk", "created": o.created, "model": o.req.model, "choices": choices}
	if o.req.proto == protoOpenRouter {
		c["id"], c["provider"] = "gen-"+o.id, "Simulated"
	} else {
		c["id"], c["system_fingerprint"] = "chatcmpl-"+o.id, "fp_sim"
	}
	if o.req.streamUsage || o.req.proto == protoOpenRouter {
		c["usage"] = usage
	}
	return c
}

func (o *openaiStream) choice(delta map[string]any, finish any) []any {
	return []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}
}

func (o *openaiStream) start() {
	o.event("", o.chunk(o.choice(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil), nil))
}

func (o *openaiStream) delta(text string) {
	o.sent.WriteString(text)
	o.event("", o.chunk(o.choice(map[string]any{"content": text}, nil), nil))
}

func (o *openaiStream) malformed() {
	o.raw("", `{"id":"chatcmpl-`+o.id+`","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"trunc`)
}

func (o *openaiStream) midError() {
	if o.req.proto == protoOpenRouter {
		c := o.chunk(o.choice(map[string]any{"content": ""}, "error"), nil)
		c["error"] = map[string]any{"code": 502, "message": "Provider returned error: upstream disconnected"}
		o.event("", c)
		return
	}
	o.event("", map[string]any{"error": map[string]any{"message": "The server had an error while processing your request. Sorry about that!",
		"type": "server_error", "param": nil, "code": nil}})
}

func (o *openaiStream) finish(reason string) {
	g := o.g
	if reason == "refuse" {
		reason = "content_filter"
		g.out = tokens(o.sent.String())
	}
	o.event("", o.chunk(o.choice(map[string]any{}, reason), nil))
	if !o.req.streamUsage && o.req.proto != protoOpenRouter {
		return
	}
	usage := map[string]any{
		"prompt_tokens":             g.in,
		"completion_tokens":         g.billedOut(),
		"total_tokens":              g.in + g.billedOut(),
		"prompt_tokens_details":     map[string]int{"cached_tokens": g.cached, "audio_tokens": 0},
		"completion_tokens_details": map[string]int{"reasoning_tokens": g.reasoning, "audio_tokens": 0},
	}
	if o.req.proto == protoOpenRouter && o.req.usageInclude {
		usage["cost"] = o.price.Cost(g.in, g.billedOut())
	}
	o.event("", o.chunk([]any{}, usage))
}

func (o *openaiStream) end() { o.raw("", "[DONE]") }

// ---- Anthropic: message_start ... message_stop ----

type anthropicStream struct {
	sseWriter
	req  *request
	g    generation
	id   string
	sent strings.Builder
}

func (a *anthropicStream) start() {
	a.event("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": a.id, "type": "message", "role": "assistant", "model": a.req.model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": a.g.in - a.g.cached, "cache_creation_input_tokens": 0,
			"cache_read_input_tokens": a.g.cached, "output_tokens": 1},
	}})
	a.event("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
		"content_block": map[string]any{"type": "text", "text": ""}})
	a.event("ping", map[string]any{"type": "ping"})
}

func (a *anthropicStream) delta(text string) {
	a.sent.WriteString(text)
	a.event("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
		"delta": map[string]any{"type": "text_delta", "text": text}})
}

func (a *anthropicStream) malformed() {
	a.raw("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"trunc`)
}

func (a *anthropicStream) midError() {
	a.event("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})
}

func (a *anthropicStream) finish(reason string) {
	out := a.g.billedOut()
	switch reason {
	case "refuse":
		reason, out = "refusal", tokens(a.sent.String())
	case "length":
		reason = "max_tokens"
	default:
		reason = "end_turn"
	}
	a.event("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	a.event("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": reason, "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": out}})
}

func (a *anthropicStream) end() { a.event("message_stop", map[string]any{"type": "message_stop"}) }

// ---- Gemini: GenerateContentResponse chunks, no end marker ----

type geminiStream struct {
	sseWriter
	req  *request
	g    generation
	id   string
	sent strings.Builder
}

func (s *geminiStream) usage(final bool, out int) map[string]any {
	u := map[string]any{"promptTokenCount": s.g.in, "totalTokenCount": s.g.in,
		"promptTokensDetails": []any{map[string]any{"modality": "TEXT", "tokenCount": s.g.in}}}
	if final {
		u["candidatesTokenCount"] = out
		u["totalTokenCount"] = s.g.in + out + s.g.reasoning
		if s.g.reasoning > 0 {
			u["thoughtsTokenCount"] = s.g.reasoning
		}
	}
	if s.g.cached > 0 {
		u["cachedContentTokenCount"] = s.g.cached
	}
	return u
}

func (s *geminiStream) chunk(parts []any, finish string, usage map[string]any) map[string]any {
	content := map[string]any{"role": "model"}
	if parts != nil {
		content["parts"] = parts
	}
	cand := map[string]any{"content": content, "index": 0}
	if finish != "" {
		cand["finishReason"] = finish
	}
	return map[string]any{"candidates": []any{cand}, "usageMetadata": usage, "modelVersion": s.req.model, "responseId": s.id}
}

func (s *geminiStream) start() {}

func (s *geminiStream) delta(text string) {
	s.sent.WriteString(text)
	s.event("", s.chunk([]any{map[string]string{"text": text}}, "", s.usage(false, 0)))
}

func (s *geminiStream) malformed() {
	s.raw("", `{"candidates":[{"content":{"parts":[{"text":"trunc`)
}

func (s *geminiStream) midError() {
	s.event("", map[string]any{"error": map[string]any{"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
}

func (s *geminiStream) finish(reason string) {
	out := s.g.out
	switch reason {
	case "refuse":
		reason, out = "SAFETY", tokens(s.sent.String())
	case "length":
		reason = "MAX_TOKENS"
	default:
		reason = "STOP"
	}
	// The last chunk carries the finish reason and the whole usage, with
	// an empty text part as the real API sends.
	s.event("", s.chunk([]any{map[string]string{"text": ""}}, reason, s.usage(true, out)))
}

func (s *geminiStream) end() {}

// prefillRejection is the vendor's 400 for a request ending with an
// assistant turn on a model that cannot continue one.
func prefillRejection(p protocol) apiError {
	switch p {
	case protoAnthropic:
		return apiError{status: 400, retryAfter: -1, code: "invalid_request_error",
			msg: "This model does not support assistant message prefill. The conversation must end with a user message."}
	case protoGemini:
		return apiError{status: 400, retryAfter: -1, code: "INVALID_ARGUMENT",
			msg: "Assistant message prefill is not supported for this model: the last content must have role user."}
	default:
		return apiError{status: 400, retryAfter: -1, param: "messages", code: "invalid_value",
			msg: "This model does not support assistant message prefill: the last message must have role 'user'."}
	}
}
