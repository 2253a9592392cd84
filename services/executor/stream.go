package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pii"
	"github.com/switchyard-llm/switchyard/pkg/provider"
)

// streamCall is what a streamed vendor call learned besides the answer:
// when its first delta came and what it published before it ended.
type streamCall struct {
	first   time.Time
	deltas  int
	partial strings.Builder
}

// complete calls the vendor: whole, or, for a streamed request, streaming
// with every delta published on the request's delta subject as it comes
// (core NATS: a delta nobody reads is not kept). Deltas are numbered from
// w.StreamSeq, so a target continuing a cut answer carries on the
// numbering. The route's stream limits bound the waits for the first
// token and between chunks.
func (e *Executor) complete(ctx context.Context, w *envelope.Work, req *provider.Request, redactor *pii.Redactor, touch func()) (*provider.Response, *streamCall, error) {
	if !e.streams(w) {
		resp, err := e.d.Adapter.Complete(ctx, req)
		return resp, nil, err
	}
	st := e.d.Adapter.(provider.Streamer)
	var opt provider.StreamOptions
	if route, ok := e.d.Policy.Current().Route(w.Route); ok {
		opt = provider.StreamOptions{FirstTokenTimeout: route.Stream.FirstTokenTimeout.Duration, IdleTimeout: route.Stream.IdleTimeout.Duration}
	}
	// space is whitespace the cut text ends with: vendors refuse a prefill
	// ending with whitespace (Anthropic), so it is sent without, and the
	// same whitespace opening the continuation is not published twice.
	var space string
	if w.StreamText != "" {
		// Continue the answer the client already holds: the text so far is
		// an assistant prefill, and only what follows it is published.
		prefill := strings.TrimRightFunc(w.StreamText, unicode.IsSpace)
		space = w.StreamText[len(prefill):]
		if redactor != nil {
			prefill = redactor.Redact(prefill)
		}
		req.Messages = append(append([]envelope.Message(nil), req.Messages...), envelope.Message{Role: "assistant", Content: prefill})
	}
	sc := &streamCall{}
	subject := envelope.DeltaSubject(w.Request.Tenant, w.Request.ID)
	attempt, t := w.AttemptNumber(), w.Target()
	publish := func(text string) error {
		if text == "" {
			return nil
		}
		data, err := json.Marshal(envelope.DeltaEvent{Type: envelope.DeltaContent, RequestID: w.Request.ID,
			Attempt: attempt, Seq: w.StreamSeq + sc.deltas, Content: text, Vendor: t.Vendor, Model: t.Model})
		if err != nil {
			return err
		}
		if err := e.d.NC.Publish(subject, data); err != nil {
			return fmt.Errorf("publish delta: %w: %w", errOurSide, err)
		}
		sc.deltas++
		sc.partial.WriteString(text)
		return nil
	}
	rs := &restorer{r: redactor}
	resp, err := st.Stream(ctx, req, opt, func(d provider.Delta) error {
		touch()
		text := d.Content
		if sc.first.IsZero() {
			sc.first = e.d.Now()
			text = strings.TrimPrefix(text, space)
		}
		return publish(rs.take(text))
	})
	if err == nil {
		err = publish(rs.flush())
	}
	return resp, sc, err
}

// maxPlaceholder bounds the text held back as a possible PII placeholder
// ("[EMAIL_1]") not yet closed.
const maxPlaceholder = 40

// restorer puts redacted values back into streamed deltas. A placeholder
// may arrive split over deltas: text from an unclosed "[" on is held back
// until the placeholder closes (or grows too long to be one), so the
// client never sees a placeholder and the deltas add up to the restored
// answer. Without a redactor deltas pass unchanged.
type restorer struct {
	r       *pii.Redactor
	pending string
}

// take returns what of s may be published now.
func (x *restorer) take(s string) string {
	if x.r == nil {
		return s
	}
	x.pending += s
	cut := len(x.pending)
	if i := strings.LastIndexByte(x.pending, '['); i >= 0 && !strings.Contains(x.pending[i:], "]") && cut-i <= maxPlaceholder {
		cut = i
	}
	out := x.pending[:cut]
	x.pending = x.pending[cut:]
	return x.r.Restore(out)
}

// flush returns what is still held back, at the end of the answer.
func (x *restorer) flush() string {
	if x.r == nil {
		return ""
	}
	out := x.r.Restore(x.pending)
	x.pending = ""
	return out
}

// streams reports whether w's call streams: a streamed request, an adapter
// that streams, and a NATS connection to publish the deltas on.
func (e *Executor) streams(w *envelope.Work) bool {
	_, ok := e.d.Adapter.(provider.Streamer)
	return w.Request.Stream && ok && e.d.NC != nil
}

// errQuiet is the cause of a streamed call cancelled for its silence.
var errQuiet = errors.New("the stream was silent for the attempt's time budget")

// quietWatch cancels a streamed call that sends nothing for the attempt's
// time budget (the router's share of the request's deadline), counted
// afresh from each delta: a silent vendor fails over as early as a whole
// call would, while an answer that keeps flowing may take until the
// request's deadline instead of being cut at its share. A nil watch does
// nothing.
type quietWatch struct {
	budget time.Duration
	timer  *time.Timer
	ctx    context.Context
}

func watchQuiet(ctx context.Context, budget time.Duration) (context.Context, *quietWatch) {
	cctx, cancel := context.WithCancelCause(ctx)
	q := &quietWatch{budget: budget, ctx: cctx}
	q.timer = time.AfterFunc(budget, func() { cancel(errQuiet) })
	return cctx, q
}

func (q *quietWatch) touch() {
	if q != nil {
		q.timer.Reset(q.budget)
	}
}

func (q *quietWatch) stop() {
	if q != nil {
		q.timer.Stop()
	}
}

func (q *quietWatch) fired() bool {
	return q != nil && errors.Is(context.Cause(q.ctx), errQuiet)
}

// streamed fills a result with what a streamed call published: time to
// first token, the deltas and their text (the router needs them when the
// call failed), and on success the whole answer, prefix included.
func (sc *streamCall) fill(res *envelope.Result, w *envelope.Work, start time.Time) {
	if sc == nil {
		return
	}
	if !sc.first.IsZero() {
		res.TTFTMS = max(sc.first.Sub(start).Milliseconds(), 0)
	}
	res.Deltas = sc.deltas
	if res.ErrorClass != "" {
		res.Partial = sc.partial.String()
		return
	}
	if w.StreamText != "" {
		// The answer is what the client got: the text so far and the
		// continuation as published (its repeated leading space dropped).
		res.Content = w.StreamText + sc.partial.String()
	}
}
