package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// sseStream writes one streamed answer in an API's event format. Nothing
// is written before the first delta (or a reply without any): until then a
// failure is still an ordinary HTTP error with its status, which the SDKs
// map to their error classes.
type sseStream interface {
	// start opens the stream (OpenAI's role chunk, Anthropic's
	// message_start and content_block_start); model is the first delta's.
	start(w *sseWriter, model string)
	delta(w *sseWriter, text string)
	// finish ends a successful stream with its finish reason and usage.
	finish(w *sseWriter, rep *envelope.Reply)
	// fail ends a stream whose answer broke after it started: an explicit
	// error event, never a success terminator.
	fail(w *sseWriter, err *apiError)
	// ping keeps an idle connection alive (Anthropic's ping event; an SSE
	// comment for OpenAI, which SDKs skip).
	ping(w *sseWriter)
}

// streamAPI is an api that can stream: body is the request body, for the
// stream's own options (OpenAI's stream_options).
type streamAPI interface {
	newStream(req *envelope.Request, body []byte, created time.Time) (sseStream, *apiError)
}

// pingEvery is how often an open stream with nothing to say pings.
const pingEvery = 10 * time.Second

// sseWriter writes server-sent events into the response's buffer; flush
// sends what was written. The relay flushes once it has nothing more
// queued, so events that arrive together (the stream's opening with its
// first delta, the last delta with the ending) leave in one write instead
// of one syscall and one client wake-up each.
type sseWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	dirty bool
}

func (s *sseWriter) event(name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	if name != "" {
		_, _ = io.WriteString(s.w, "event: "+name+"\n")
	}
	_, _ = io.WriteString(s.w, "data: ")
	_, _ = s.w.Write(data)
	_, _ = io.WriteString(s.w, "\n\n")
	s.dirty = true
}

func (s *sseWriter) raw(line string) {
	_, _ = io.WriteString(s.w, line)
	s.dirty = true
}

func (s *sseWriter) flush() {
	if s.dirty {
		s.dirty = false
		_ = s.rc.Flush()
	}
}

// streamed publishes a streamed request and relays its deltas as SSE. It
// subscribes to the delta and reply subjects before publishing (core
// subscriptions see only later messages), on one channel, so deltas and
// the reply arrive in the order the server delivered them. The reply ends
// the stream and is the source of truth: text the deltas missed (a cache
// hit, a dropped delta) is sent from it before the end. A client that goes
// away ends only the relay; the request runs on (billing, telemetry). It
// returns an error only while nothing has been written.
func (e *Edge) streamed(w http.ResponseWriter, r *http.Request, a api, req *envelope.Request, body []byte, start time.Time) *apiError {
	sa, ok := a.(streamAPI)
	if !ok {
		return &apiError{Status: http.StatusBadRequest, Code: envelope.CodeInvalidRequest, Message: "this API cannot stream"}
	}
	st, aerr := sa.newStream(req, body, start)
	if aerr != nil {
		return aerr
	}
	req.Stream = true
	data, aerr := envelopeBytes(req)
	if aerr != nil {
		return aerr
	}
	ch := make(chan *nats.Msg, 4096)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, subject := range []string{envelope.DeltaSubject(req.Tenant, req.ID), req.ReplySubject()} {
		s, err := e.d.NC.ChanSubscribe(subject, ch)
		if err != nil {
			return internal(err)
		}
		subs = append(subs, s)
	}
	var stored *envelope.Reply
	if req.Metadata[metaIdempotent] != "" {
		stored, _ = e.storedReply(r.Context(), req.ReplySubject())
	}
	if stored == nil {
		if aerr := e.publish(r.Context(), req, data); aerr != nil {
			return aerr
		}
	}
	relay := &relay{st: st, sse: &sseWriter{w: w, rc: http.NewResponseController(w)}, w: w, id: req.ID}
	defer relay.sse.flush()
	// A stream lasts as long as its answer, which the request's deadline
	// bounds: so does the connection's write deadline (a client that stops
	// reading is cut off then), whatever the server's own write timeout.
	_ = relay.sse.rc.SetWriteDeadline(e.d.Now().Add(time.Duration(req.TimeoutMS)*time.Millisecond + 5*time.Second))
	if stored != nil {
		return relay.end(stored, e.d.Now())
	}
	wait := time.NewTimer(time.Duration(req.TimeoutMS)*time.Millisecond + 2*time.Second)
	defer wait.Stop()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			e.d.Log.Debug().Str("request_id", req.ID).Str("tenant", req.Tenant).Msg("stream client went away; the request runs on")
			return nil
		case <-wait.C:
			return relay.fail(&apiError{Status: http.StatusGatewayTimeout, Code: envelope.CodeDeadlineExceeded, Message: "no reply within the request's deadline"})
		case <-ping.C:
			if relay.open {
				st.ping(relay.sse)
				relay.sse.flush()
			}
		case m := <-ch:
			if strings.HasPrefix(m.Subject, "llm.deltas.") {
				relay.onDelta(m.Data)
				if len(ch) == 0 {
					relay.sse.flush()
				}
				continue
			}
			var rep envelope.Reply
			if err := envelope.UnmarshalInternal(m.Data, &rep); err != nil {
				return relay.fail(internal(fmt.Errorf("decode reply: %w", err)))
			}
			return relay.end(&rep, e.d.Now())
		}
	}
}

// relay is the state of one stream being relayed.
type relay struct {
	st   sseStream
	sse  *sseWriter
	w    http.ResponseWriter
	id   string
	open bool
	// next is the sequence number expected; sent the text relayed. A
	// delta seen twice (a call repeated after an executor died) is
	// dropped; after a gap nothing more is relayed until the reply.
	next   int
	gap    bool
	sent   strings.Builder
	header bool
}

func (rl *relay) begin(model string) {
	if rl.open {
		return
	}
	h := rl.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set(HeaderRequestID, rl.id)
	rl.w.WriteHeader(http.StatusOK)
	rl.open = true
	rl.st.start(rl.sse, model)
}

func (rl *relay) onDelta(data []byte) {
	var ev envelope.DeltaEvent
	if envelope.UnmarshalInternal(data, &ev) != nil || ev.Type != envelope.DeltaContent || rl.gap {
		return // terminal events are followed by the reply, which ends the stream
	}
	switch {
	case ev.Seq < rl.next:
		return
	case ev.Seq > rl.next:
		rl.gap = true
		return
	}
	rl.next++
	rl.begin(ev.Vendor + "/" + ev.Model)
	rl.sent.WriteString(ev.Content)
	rl.st.delta(rl.sse, ev.Content)
}

// end finishes with the reply: an error reply before anything was sent is
// an ordinary HTTP error; otherwise the rest of the answer, then the API's
// success or error ending.
func (rl *relay) end(rep *envelope.Reply, now time.Time) *apiError {
	if rep.Status != envelope.StatusOK {
		return rl.fail(replyError(rep, now))
	}
	rl.begin(servedModel(rep))
	if rest, ok := strings.CutPrefix(rep.Content, rl.sent.String()); ok && rest != "" {
		rl.st.delta(rl.sse, rest)
	}
	rl.st.finish(rl.sse, rep)
	return nil
}

func (rl *relay) fail(err *apiError) *apiError {
	if !rl.open {
		return err
	}
	rl.st.fail(rl.sse, err)
	return nil
}

// envelopeBytes is the request as published, within the intake's limit.
func envelopeBytes(req *envelope.Request) ([]byte, *apiError) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, internal(err)
	}
	if len(data) > MaxEnvelopeBytes {
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: envelope.CodePayloadTooLarge,
			Message: fmt.Sprintf("the request is %d bytes as an envelope; the limit is %d", len(data), MaxEnvelopeBytes)}
	}
	return data, nil
}

// publish sends the envelope to llm.requests. It does not follow the
// client's context: once accepted, the request runs to its end.
func (e *Edge) publish(ctx context.Context, req *envelope.Request, data []byte) *apiError {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	// The stages' publish: its ack is checked without encoding/json.
	pub := pipeline.Publisher{JS: e.d.JS, NC: e.d.NC}
	if err := pub.PublishRaw(pctx, natsx.SubjectRequests, req.MsgID(), data, nil); err != nil {
		if te := (*pipeline.TransientError)(nil); errors.As(err, &te) {
			err = te.Err
		}
		return &apiError{Status: http.StatusServiceUnavailable, Code: envelope.CodeInternal, Message: "the pipeline did not accept the request: " + err.Error(), RetryAfter: 1}
	}
	return nil
}
