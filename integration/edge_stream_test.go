package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// sseEvent is one server-sent event: its name (Anthropic's event: line,
// empty for OpenAI) and its data.
type sseEvent struct{ name, data string }

type streamResp struct {
	status int
	header http.Header
	events []sseEvent
	body   string // a non-stream answer (an error before the stream)
}

// edgeStream posts a streaming request and reads the whole event stream,
// as an SSE client does: events are separated by blank lines, comments
// (": ping") skipped.
func (e *env) edgeStream(path string, hdr map[string]string, body string) streamResp {
	e.t.Helper()
	req, err := http.NewRequest("POST", "http://"+e.sys.EdgeAddr+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	out := streamResp{status: res.StatusCode, header: res.Header}
	if res.Header.Get("x-switchyard-request-id") == "" {
		e.t.Errorf("%s: no x-switchyard-request-id", path)
	}
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		var b strings.Builder
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			b.WriteString(sc.Text())
		}
		out.body = b.String()
		return out
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.data != "" || cur.name != "" {
				out.events = append(out.events, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data += strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

// oaiStreamed is what an OpenAI stream said: its text, finish reason,
// usage chunk, in-stream error and whether it ended with [DONE].
type oaiStreamed struct {
	text, finish, model, errCode string
	usage                        map[string]any
	done                         bool
	chunks                       int
}

func readOpenAIStream(t *testing.T, r streamResp) oaiStreamed {
	t.Helper()
	var s oaiStreamed
	for i, ev := range r.events {
		if ev.data == "[DONE]" {
			if i != len(r.events)-1 {
				t.Fatalf("[DONE] is not the last event: %v", r.events)
			}
			s.done = true
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
			t.Fatalf("chunk %q: %v", ev.data, err)
		}
		if c["error"] != nil {
			s.errCode = fmt.Sprint(dig(c, "error.code"))
			continue
		}
		if c["object"] != "chat.completion.chunk" {
			t.Fatalf("not a chunk: %s", ev.data)
		}
		s.chunks++
		s.model = fmt.Sprint(c["model"])
		if u, ok := c["usage"].(map[string]any); ok {
			s.usage = u
		}
		if txt, ok := dig(c, "choices.0.delta.content").(string); ok {
			s.text += txt
		}
		if f, ok := dig(c, "choices.0.finish_reason").(string); ok {
			s.finish = f
		}
	}
	return s
}

// antStreamed is what an Anthropic stream said.
type antStreamed struct {
	names                  []string
	text, stop, errType    string
	inputTokens, outTokens float64
}

func readAnthropicStream(t *testing.T, r streamResp) antStreamed {
	t.Helper()
	var s antStreamed
	for _, ev := range r.events {
		var d map[string]any
		if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
			t.Fatalf("event %s %q: %v", ev.name, ev.data, err)
		}
		if d["type"] != ev.name {
			t.Fatalf("event %s carries type %v", ev.name, d["type"])
		}
		s.names = append(s.names, ev.name)
		switch ev.name {
		case "content_block_delta":
			s.text += fmt.Sprint(dig(d, "delta.text"))
		case "message_delta":
			s.stop = fmt.Sprint(dig(d, "delta.stop_reason"))
			s.inputTokens, _ = dig(d, "usage.input_tokens").(float64)
			s.outTokens, _ = dig(d, "usage.output_tokens").(float64)
		case "error":
			s.errType = fmt.Sprint(dig(d, "error.type"))
		}
	}
	return s
}

// wantAnthropicSequence checks the Messages event grammar: message_start,
// content_block_start, then pings and deltas, content_block_stop,
// message_delta, message_stop.
func wantAnthropicSequence(t *testing.T, names []string) {
	t.Helper()
	var core []string
	for _, n := range names {
		if n != "ping" && n != "content_block_delta" {
			core = append(core, n)
		}
	}
	want := []string{"message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop"}
	if strings.Join(core, ",") != strings.Join(want, ",") {
		t.Fatalf("event sequence %v", names)
	}
}

// reply reads a request's reply from LLM_REPLIES.
func (e *env) replyOf(tenant, id string) *envelope.Reply {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := e.client.Reply(ctx, tenant, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

// Streaming through the edge: both APIs stream the pipeline's answer in
// their own event format, the streamed text is the reply's content, usage
// comes at the end, and the streamed request's reply and ledger rows are
// those of the same request sent without stream, plus time to first token.
func TestEdgeStream(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		// Vendors take a moment before answering: time to first token > 0.
		c.Scenario = &sim.Scenario{Defaults: sim.Behavior{Latency: &sim.Latency{BaseMS: 20}}}
	})
	key := e.edgeKey("")
	prompt := "Tell me a short story about a lighthouse"

	plain := e.edgeCall("POST", "/v1/chat/completions", bearerKey(key), chatBody("chat", prompt, `,"max_tokens":64`))
	if plain.status != 200 {
		t.Fatalf("non-streamed: %d %s", plain.status, plain.raw)
	}
	plainID := plain.header.Get("x-switchyard-request-id")

	r := e.edgeStream("/v1/chat/completions", bearerKey(key), chatBody("chat", prompt, `,"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}`))
	if r.status != 200 {
		t.Fatalf("stream: status %d %s", r.status, r.body)
	}
	s := readOpenAIStream(t, r)
	streamID := r.header.Get("x-switchyard-request-id")
	rep := e.replyOf(e.tenant, streamID)
	if !s.done || s.errCode != "" || s.finish != "stop" || s.text == "" || s.text != rep.Content {
		t.Fatalf("openai stream: done %v err %q finish %q text %q (reply %q)", s.done, s.errCode, s.finish, s.text, rep.Content)
	}
	if s.text != dig(plain.body, "choices.0.message.content") {
		t.Fatalf("streamed %q, non-streamed %q", s.text, dig(plain.body, "choices.0.message.content"))
	}
	if p, _ := s.usage["prompt_tokens"].(float64); p <= 0 || int(p) != rep.Usage.InputTokens {
		t.Fatalf("usage chunk %v, reply usage %+v", s.usage, rep.Usage)
	}
	if rep.TTFTMS < 20 || rep.TTFTMS > rep.LatencyMS {
		t.Fatalf("reply ttft_ms %d (latency %d ms), want at least the vendor's 20 ms", rep.TTFTMS, rep.LatencyMS)
	}

	t.Run("without include_usage no usage chunk", func(t *testing.T) {
		r := e.edgeStream("/v1/chat/completions", bearerKey(key), chatBody("chat", "Hello stream", `,"stream":true`))
		s := readOpenAIStream(t, r)
		if !s.done || s.usage != nil || s.text == "" {
			t.Fatalf("done %v usage %v text %q", s.done, s.usage, s.text)
		}
	})
	t.Run("anthropic", func(t *testing.T) {
		r := e.edgeStream("/v1/messages", map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"},
			`{"model":"chat","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello Claude stream"}]}`)
		if r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
		s := readAnthropicStream(t, r)
		wantAnthropicSequence(t, s.names)
		rep := e.replyOf(e.tenant, r.header.Get("x-switchyard-request-id"))
		if s.text != rep.Content || s.stop != "end_turn" || s.outTokens != float64(rep.Usage.OutputTokens) || s.inputTokens <= 0 {
			t.Fatalf("text %q (reply %q) stop %q usage in %v out %v", s.text, rep.Content, s.stop, s.inputTokens, s.outTokens)
		}
	})
	// A cached answer has no deltas: the reply's content is streamed whole.
	t.Run("cached answer", func(t *testing.T) {
		body := chatBody("cheap", "A question worth caching", `,"stream":true,"stream_options":{"include_usage":true}`)
		first := readOpenAIStream(t, e.edgeStream("/v1/chat/completions", bearerKey(key), body))
		r := e.edgeStream("/v1/chat/completions", bearerKey(key), body)
		s := readOpenAIStream(t, r)
		rep := e.replyOf(e.tenant, r.header.Get("x-switchyard-request-id"))
		if !rep.Cached || !s.done || s.text != first.text || s.text != rep.Content || s.usage == nil {
			t.Fatalf("cached %v done %v text %q (first %q, reply %q) usage %v", rep.Cached, s.done, s.text, first.text, rep.Content, s.usage)
		}
	})
	t.Run("error before the stream keeps its status", func(t *testing.T) {
		r := e.edgeStream("/v1/chat/completions", bearerKey(key), chatBody("nosuchroute", "hi", `,"stream":true`))
		if r.status < 400 || len(r.events) != 0 || !strings.Contains(r.body, `"error"`) {
			t.Fatalf("status %d events %v body %s", r.status, r.events, r.body)
		}
	})

	// The ledger: the same rows but for ttft_ms.
	e.settled(30 * time.Second)
	for _, id := range []string{plainID, streamID} {
		if n := e.eventually("SELECT count() FROM %s.attempts FINAL WHERE request_id = '"+id+"' AND outcome != 'started'", 1, 30*time.Second); n != 1 {
			t.Fatalf("request %s: %d finished attempt rows", id, n)
		}
		if n := e.eventually("SELECT count() FROM %s.requests FINAL WHERE request_id = '"+id+"'", 1, 30*time.Second); n != 1 {
			t.Fatalf("request %s: %d request rows", id, n)
		}
	}
	q := func(table, cols, id string) string {
		var out string
		if err := e.ch.QueryRow(context.Background(), fmt.Sprintf("SELECT toString(tuple(%s)) FROM %s.%s FINAL WHERE request_id = '%s'", cols, e.db, table, id)).Scan(&out); err != nil {
			t.Fatalf("%s %s: %v", table, id, err)
		}
		return out
	}
	reqCols := "status, error_code, vendor, model, route, attempts, fallback, input_tokens, output_tokens, cost_usd"
	attCols := "attempt, vendor, model, outcome, error_class, input_tokens, output_tokens, cost_usd, price_known"
	if a, b := q("requests", reqCols, plainID), q("requests", reqCols, streamID); a != b {
		t.Errorf("requests rows differ: plain %s, streamed %s", a, b)
	}
	if a, b := q("attempts", attCols, plainID), q("attempts", attCols, streamID); a != b {
		t.Errorf("attempts rows differ: plain %s, streamed %s", a, b)
	}
	var ttftPlain, ttftStream uint32
	_ = e.ch.QueryRow(context.Background(), fmt.Sprintf("SELECT ttft_ms FROM %s.attempts FINAL WHERE request_id = '%s'", e.db, plainID)).Scan(&ttftPlain)
	_ = e.ch.QueryRow(context.Background(), fmt.Sprintf("SELECT ttft_ms FROM %s.attempts FINAL WHERE request_id = '%s'", e.db, streamID)).Scan(&ttftStream)
	if ttftPlain != 0 || uint32(rep.TTFTMS) != ttftStream || ttftStream > uint32(rep.LatencyMS) {
		t.Errorf("ttft_ms: plain %d, streamed %d (reply %d, latency %d)", ttftPlain, ttftStream, rep.TTFTMS, rep.LatencyMS)
	}
}

// A NATS client streams without the edge: it subscribes to
// llm.deltas.<tenant>.<id> before publishing, gets the deltas in sequence
// and a done event whose usage is the reply's, or, for a stream cut after
// deltas (every vendor cuts this prompt's stream), an error event with the
// reply's error.
func TestNATSDeltaSubscription(t *testing.T) {
	e := start(t)
	for _, tt := range []struct {
		id, prompt string
		want       string // terminal event type
	}{
		{"nats-stream-1", "Stream me a haiku about rivers", envelope.DeltaDone},
		{"nats-stream-cut", "[[sim:stream=cut:2]] Stream me a haiku about rivers", envelope.DeltaError},
	} {
		t.Run(tt.id, func(t *testing.T) { natsStream(t, e, tt.id, tt.prompt, tt.want) })
	}
}

func natsStream(t *testing.T, e *env, id, prompt, want string) {
	req := e.request(id, "chat", prompt)
	req.Stream = true
	ch := make(chan *nats.Msg, 1024)
	sub, err := e.sys.NC.ChanSubscribe(envelope.DeltaSubject(req.Tenant, req.ID), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := e.client.Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	var seq, attempt int
	var done *envelope.DeltaEvent
	for done == nil {
		select {
		case m := <-ch:
			var ev envelope.DeltaEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			switch ev.Type {
			case envelope.DeltaContent:
				// A cut answer may continue on a prefill-capable
				// fallback: a later attempt, the sequence unbroken.
				if ev.RequestID != req.ID || ev.Attempt < max(attempt, 1) || ev.Vendor == "" || ev.Seq != seq {
					t.Fatalf("delta %+v, want seq %d of attempt %d or later", ev, seq, max(attempt, 1))
				}
				attempt = ev.Attempt
				seq++
				text += ev.Content
			default:
				done = &ev
			}
		case <-ctx.Done():
			t.Fatalf("no terminal event; text so far %q", text)
		}
	}
	if done.Type != want || done.Seq != seq {
		t.Fatalf("terminal %+v after %d deltas, want %s", done, seq, want)
	}
	if want == envelope.DeltaError {
		if text == "" || rep.Status != envelope.StatusError || *done.Error != *rep.Error || rep.Error.Code != envelope.CodeStreamInterrupted {
			t.Fatalf("error %+v text %q, reply %+v", done.Error, text, rep.Error)
		}
		return
	}
	if text != rep.Content || done.Usage == nil || *done.Usage != rep.Usage ||
		done.Vendor != rep.Vendor || done.Model != rep.Model || done.TTFTMS != rep.TTFTMS {
		t.Fatalf("done %+v text %q, reply %+v", done, text, rep)
	}
}

// edgeHandlers counts the edge's request handlers still running.
func edgeHandlers() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "services/edge.(*Edge).serve") {
			n++
		}
	}
	return n
}

// A streaming client that goes away mid-answer ends only the relay: the
// request is answered and billed as if it had stayed, and the edge keeps
// neither its subscriptions nor its handler goroutines.
func TestEdgeStreamClientGone(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		slow := sim.Behavior{Stream: &sim.StreamBehavior{ChunkDelayMS: 100}}
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: slow}}}
	})
	key := e.edgeKey("")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	open := func(i int) (*http.Response, *bufio.Reader) {
		body := chatBody("chat", fmt.Sprintf("Tell me a long story number %d", i), `,"stream":true`)
		req, _ := http.NewRequest("POST", "http://"+e.sys.EdgeAddr+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := client.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i, err, res)
		}
		br := bufio.NewReader(res.Body)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("stream %d: first line %q %v", i, line, err)
		}
		return res, br
	}
	// One whole stream first: a client that stays to the end.
	res, br := open(100)
	_, _ = io.Copy(io.Discard, br)
	_ = res.Body.Close()
	e.replyOf(e.tenant, res.Header.Get("x-switchyard-request-id"))
	e.settled(30 * time.Second)
	var ids []string
	for i := range 10 {
		res, _ := open(i)
		if i == 0 && edgeHandlers() != 1 {
			t.Fatalf("%d edge handlers during one stream", edgeHandlers())
		}
		ids = append(ids, res.Header.Get("x-switchyard-request-id"))
		_ = res.Body.Close() // the client goes away after the first chunk
	}
	// The answers take seconds more; the relays (and with them their
	// subscriptions, removed as they return) end now.
	waitFor(t, time.Second, func() bool { return edgeHandlers() == 0 })
	for _, id := range ids {
		if rep := e.replyOf(e.tenant, id); rep.Status != envelope.StatusOK || rep.Content == "" {
			t.Fatalf("request %s after its client left: %+v", id, rep)
		}
	}
	e.settled(30 * time.Second)
	in := "'" + strings.Join(ids, "','") + "'"
	if n := e.eventually("SELECT count() FROM %s.requests FINAL WHERE status = 'ok' AND request_id IN ("+in+")", 10, 30*time.Second); n != 10 {
		t.Fatalf("%d of 10 requests billed", n)
	}
}
