package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Outbound is one message a stage handler wants published. Handlers return
// them instead of publishing, so they can be tested without JetStream; the
// stage's runner publishes them in order with Publisher.Send.
type Outbound struct {
	Subject string
	MsgID   string
	Data    []byte
	Header  nats.Header
	// Core publishes on core NATS rather than JetStream (a reply to a
	// custom reply_to outside llm.replies.>).
	Core bool
	// Once marks a reply stored in LLM_REPLIES: a redelivered handler does
	// not publish it again when it is stored already (see Send).
	Once bool
	// Group marks a request event that a Publisher with Events stores in
	// a batch with other requests' events (see GroupCommit) rather than as
	// a message of its own.
	Group bool
}

type deliveryKey struct{}

// withDelivery lets Send know the handler's delivery count.
func withDelivery(ctx context.Context, d *Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}

// redelivered is true in a handler whose message was handled before
// (Delivery.Rerun).
func redelivered(ctx context.Context) bool {
	d, ok := ctx.Value(deliveryKey{}).(*Delivery)
	return ok && d.Rerun()
}

// stored reports whether o is already the last message of its subject (by
// its message id). JetStream unavailable: a transient error, so the handler
// waits rather than publish a second copy to core subscribers.
//
// It asks the stream's leader ($JS.API.STREAM.MSG.GET), not the direct get
// LLM_REPLIES also allows: any replica answers a direct get, and a follower
// still applying the reply just stored says it is not there, so the reply
// went out twice (seen once in TestClusterStreamLeaderKilled).
func (p Publisher) stored(ctx context.Context, o Outbound) (bool, error) {
	subject := natsx.StoredReplySubject(o.Subject)
	id, found, err := LastStoredMsgID(ctx, p.JS, natsx.StreamReplies, subject)
	if err != nil {
		return false, Transient(fmt.Errorf("is %s stored: %w", subject, err), 0)
	}
	// A replay's later, final reply (dlq replay -reanswer) answered the
	// client too: the first answer must not follow it.
	return found && (id == o.MsgID || strings.HasPrefix(id, strings.TrimSuffix(o.MsgID, ":reply")+":replay:")), nil
}

// apiPrefix is where js sends JetStream API requests ("$JS.API." unless
// a domain or prefix is set).
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return "$JS.API."
}

// Out marshals v into an Outbound.
func Out(subject, msgID string, v any, hdr nats.Header) (Outbound, error) {
	data, err := envelope.MarshalInternal(v)
	if err != nil {
		return Outbound{}, Terminal("marshal", err)
	}
	return Outbound{Subject: subject, MsgID: msgID, Data: data, Header: hdr}, nil
}

// WorkOut hands a work envelope to the next stage, with its trace context.
func WorkOut(subject, msgID string, w *envelope.Work) (Outbound, error) {
	return Out(subject, msgID, w, workHeader(w))
}

// Send publishes messages in order; the first failure stops it (a
// redelivered handler publishes them again, deduplicated by message id).
//
// JetStream messages are published without waiting for each ack in turn
// (PublishMsgAsync) and their acks are awaited together, except before a
// message a client sees (a reply, Once, or a core message such as the
// terminal delta): that one is published only once every earlier message
// is stored. So the request's telemetry is in LLM_TELEMETRY before its
// reply goes out, and a client that saw a reply can find the request in
// the ledger eventually; work hand-offs and attempt telemetry (the gate's
// two messages) share one wait. A request event for the publisher's Events
// waits for every earlier message too, and is then stored in a batch with
// other requests' events; Send goes on once that batch is stored. A
// redelivered handler's event goes in a new batch: the ledger's tables keep
// one row per request and attempt whatever it is given twice.
//
// The stream drops a duplicate, but a core subscriber to the reply subject
// would see it: a redelivered handler skips a reply already stored (its
// first publish went through and only the ack was lost, e.g. with a NATS
// node).
func (p Publisher) Send(ctx context.Context, outs []Outbound) error {
	var pending []jetstream.PubAckFuture
	for i, o := range outs {
		if p.waitsForEarlier(o) && len(pending) > 0 {
			if err := awaitAcks(ctx, pending); err != nil {
				return err
			}
			pending = pending[:0]
		}
		if p.batched(o) {
			// Stored with other requests' events; returns once stored.
			if err := p.Events.Store(ctx, o.Data); err != nil {
				return err
			}
			continue
		}
		if o.Once && p.JS != nil && redelivered(ctx) {
			done, err := p.stored(ctx, o)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		if o.Core && p.NC != nil {
			if err := p.NC.PublishMsg(&nats.Msg{Subject: o.Subject, Data: o.Data, Header: o.Header}); err != nil {
				return Transient(fmt.Errorf("publish %s: %w", o.Subject, err), 0)
			}
			continue
		}
		if len(pending) == 0 && (i+1 == len(outs) || p.waitsForEarlier(outs[i+1])) {
			// Alone until the next wait: nothing to overlap, and the
			// synchronous publish is the cheaper one.
			if err := p.PublishRaw(ctx, o.Subject, o.MsgID, o.Data, o.Header); err != nil {
				return err
			}
			continue
		}
		f, err := p.JS.PublishMsgAsync(jsMsg(o.Subject, o.MsgID, o.Data, o.Header))
		if err != nil {
			return Transient(fmt.Errorf("publish %s: %w", o.Subject, err), 0)
		}
		pending = append(pending, f)
	}
	return awaitAcks(ctx, pending)
}

// waitsForEarlier reports whether o goes out only once every message
// before it is stored: a message a client sees (a stored reply, a core
// message), or a request event stored in a batch.
func (p Publisher) waitsForEarlier(o Outbound) bool { return o.Once || o.Core || p.batched(o) }

// batched reports whether o is a request event that p stores in a batch.
func (p Publisher) batched(o Outbound) bool { return o.Group && p.Events != nil }

// awaitAcks waits for the stream's ack of every message in pending.
func awaitAcks(ctx context.Context, pending []jetstream.PubAckFuture) error {
	for _, f := range pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				// The ack never came (a node died with it): as a timed-out
				// synchronous publish, JetStream counts as unavailable.
				err = fmt.Errorf("%w: %w", nats.ErrTimeout, err)
			}
			return Transient(fmt.Errorf("publish %s: %w", f.Msg().Subject, err), 0)
		case <-ctx.Done():
			err := ctx.Err()
			if errors.Is(err, context.DeadlineExceeded) {
				err = ackTimedOut(err)
			}
			return Transient(fmt.Errorf("publish %s: %w", f.Msg().Subject, err), 0)
		}
	}
	return nil
}

// FinishOuts are the messages that finish a request: its telemetry first,
// then the reply, so a client that saw a reply can always find the request
// in the ledger eventually. The request event carries the finished rows of
// its vendor calls (one stream write for the request and all its attempts).
// A hedged branch's rows go as attempt events of their own (AttemptRowOuts):
// the request event's message id is the request's, so a second branch's
// event would be dropped as a duplicate with its rows.
func FinishOuts(w *envelope.Work, r *envelope.Reply, now time.Time) ([]Outbound, error) {
	var outs []Outbound
	rev := RequestEventFor(w, r, now)
	if w.Hedged {
		rows, err := AttemptRowOuts(w)
		if err != nil {
			return nil, err
		}
		outs = rows
	} else {
		rev.AttemptEvents = FinishedAttemptEvents(w)
	}
	ev, err := Out(natsx.SubjectRequest, w.Key+":request", rev, traceHeader(w))
	if err != nil {
		return nil, err
	}
	ev.Group = true
	outs = append(outs, ev)
	subject, stored := natsx.ReplyPublishSubject(w.Request.ReplySubject())
	reply, err := Out(subject, w.Key+":reply", r, traceHeader(w))
	if err != nil {
		return nil, err
	}
	reply.Core, reply.Once = !stored, stored
	if !w.Request.Stream {
		return append(outs, reply), nil
	}
	end, err := Out(envelope.DeltaSubject(w.Request.Tenant, w.Request.ID), "", TerminalDelta(w, r), nil)
	if err != nil {
		return nil, err
	}
	end.Core = true
	return append(outs, end, reply), nil
}

// FinishedAttemptEvents are the attempts-table rows of every vendor call
// w made, finished: its Attempts with the id and start the executor noted
// in Calls.
func FinishedAttemptEvents(w *envelope.Work) []envelope.AttemptEvent {
	if len(w.Attempts) == 0 {
		return nil
	}
	out := make([]envelope.AttemptEvent, len(w.Attempts))
	noted := len(w.Calls) == len(w.Attempts)
	for i := range w.Attempts {
		a := &w.Attempts[i]
		var call envelope.Call
		switch {
		case noted:
			call = w.Calls[i]
		default:
			// Work an executor of an older version called, which did not
			// note its calls: the id and start it gave the started row.
			call.AttemptID, call.StartedAt = envelope.AttemptID(w.Key, a.Attempt), w.ReceivedAt.UTC()
			if i == len(w.Attempts)-1 && w.Current != nil && w.Current.AttemptID != "" {
				call.AttemptID, call.StartedAt = w.Current.AttemptID, w.Current.StartedAt
			}
		}
		attemptEvent(&out[i], w, a, call.AttemptID, call.StartedAt)
	}
	return out
}

// AttemptRowOuts are w's finished attempt rows as attempt events of their
// own: the rows of a hedged branch, which ends apart from its request
// (a lost or cancelled branch, or one whose request another branch
// finishes).
func AttemptRowOuts(w *envelope.Work) ([]Outbound, error) {
	evs := FinishedAttemptEvents(w)
	outs := make([]Outbound, 0, len(evs))
	for i := range evs {
		o, err := AttemptOut(&evs[i], w.TraceParent)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return outs, nil
}

// TerminalDelta is the last event on a streamed request's delta subject,
// published just before its reply: done with the served model and usage,
// or the reply's error.
func TerminalDelta(w *envelope.Work, r *envelope.Reply) *envelope.DeltaEvent {
	// The router folds a failed attempt's deltas into StreamSeq.
	seq := w.StreamSeq
	if w.Current.OK() {
		seq += w.Current.Deltas
	}
	ev := &envelope.DeltaEvent{Type: envelope.DeltaDone, RequestID: r.ID, Attempt: len(w.Attempts), Seq: seq}
	if r.Status != envelope.StatusOK {
		ev.Type, ev.Error = envelope.DeltaError, r.Error
		return ev
	}
	u := r.Usage
	ev.Vendor, ev.Model, ev.FinishReason, ev.Usage, ev.TTFTMS = r.Vendor, r.Model, r.FinishReason, &u, r.TTFTMS
	return ev
}

// DeadLetterRequestOut dead-letters the client's original request (not the
// internal envelope), so a replay goes back through llm.requests.
func DeadLetterRequestOut(stageName, reason, detail string, w *envelope.Work, now time.Time) (Outbound, error) {
	data, err := json.Marshal(&w.Request)
	if err != nil {
		return Outbound{}, Terminal("marshal", err)
	}
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, stageName)
	hdr.Set(natsx.HeaderReason, reason)
	hdr.Set(natsx.HeaderError, truncate(detail, 1024))
	hdr.Set(natsx.HeaderOrigSubject, natsx.SubjectRequests)
	hdr.Set(natsx.HeaderFailedAt, now.UTC().Format(time.RFC3339Nano))
	hdr.Set(natsx.HeaderRequestID, w.Request.ID)
	hdr.Set(natsx.HeaderTenant, w.Request.Tenant)
	return Outbound{Subject: natsx.DLQSubject(stageName), MsgID: "dlq:" + stageName + ":" + w.Key, Data: data, Header: hdr}, nil
}

// CallID is the attempt id of a's call: the one the executor gave res (a
// call repeated after a redelivery has its own), else the attempt's.
func CallID(w *envelope.Work, a *envelope.AttemptResult, res *envelope.Result) string {
	if res != nil && res.AttemptID != "" {
		return res.AttemptID
	}
	return envelope.AttemptID(w.Key, a.Attempt)
}

// AttemptEventFor is the attempts-table row of one attempt. id is the
// attempt's id (Result.AttemptID when the executor set one).
func AttemptEventFor(w *envelope.Work, a *envelope.AttemptResult, res *envelope.Result) *envelope.AttemptEvent {
	id := CallID(w, a, res)
	ev := &envelope.AttemptEvent{}
	var ts time.Time
	if res != nil {
		ts = res.StartedAt
	}
	attemptEvent(ev, w, a, id, ts)
	if res != nil {
		ev.PriceKnown = res.PriceKnown
	}
	return ev
}

func attemptEvent(ev *envelope.AttemptEvent, w *envelope.Work, a *envelope.AttemptResult, id string, ts time.Time) {
	*ev = envelope.AttemptEvent{
		RequestID:     w.Request.ID,
		AttemptID:     id,
		Attempt:       a.Attempt,
		TS:            ts,
		Tenant:        w.Request.Tenant,
		UserHash:      HashUser(w.Request.Tenant, w.Request.User),
		EndpointTag:   w.Request.EndpointTag,
		PromptVersion: w.Request.PromptVersion,
		Environment:   w.Request.Environment,
		Route:         w.Route,
		Strategy:      w.Strategy,
		Vendor:        a.Vendor,
		Model:         a.Model,
		Outcome:       a.Outcome,
		ErrorClass:    a.ErrorClass,
		HTTPStatus:    a.HTTPStatus,
		CostUSD:       a.CostUSD,
		LatencyMS:     a.LatencyMS,
		TTFTMS:        a.TTFTMS,
		Hedged:        w.Hedged,
		// A vendor prompt-cache hit: some prompt tokens were read from it.
		CacheHit: a.Usage.CachedTokens > 0,
		TraceID:  TraceID(w.TraceParent),
	}
	// Every count, reasoning tokens and the vendor-reported cost included
	// (the ledger stores that cost as the attempt's).
	ev.SetUsage(a.Usage)
}

// AttemptOut is the attempt event's message; its id is the attempt id, so a
// redelivered result is stored once.
func AttemptOut(ev *envelope.AttemptEvent, traceParent string) (Outbound, error) {
	id := ev.AttemptID
	if ev.Outcome == envelope.OutcomeStarted {
		id += ":started"
	}
	return Out(natsx.SubjectAttempt, id, ev, nats.Header{natsx.HeaderTraceParent: []string{traceParent}})
}

// RequestLogger derives the logger for lines about one request: request id,
// tenant and trace id as typed fields on every line.
func RequestLogger(log zerolog.Logger, w *envelope.Work) zerolog.Logger {
	return log.With().Str("request_id", w.Request.ID).Str("tenant", w.Request.Tenant).Str("trace_id", TraceID(w.TraceParent)).Logger()
}

// LazyRequestLogger is RequestLogger built on the first call, for a
// handler that may write no line about the request at all (the usual
// case): deriving the logger allocates its fields every time.
func LazyRequestLogger(log zerolog.Logger, w *envelope.Work) func() *zerolog.Logger {
	var l *zerolog.Logger
	return func() *zerolog.Logger {
		if l == nil {
			rl := RequestLogger(log, w)
			l = &rl
		}
		return l
	}
}

// RequestStage is Stage whose own lines (retries, dead letters)
// carry the request's id, tenant and trace id, read from the work message's
// headers (see PublishWork), like every other line about a request.
// The chain is built once and the request's logger only when a line is
// written: building both per message was about 2% of a stage's CPU.
// inPlace: see Retry.
func RequestStage(log zerolog.Logger, h Handler, dl DeadLetterFunc, maxDeliver int, timeout time.Duration, inPlace bool) Handler {
	return stage(func(ctx context.Context, d *Delivery) *zerolog.Logger {
		if l := zerolog.Ctx(ctx); l != zerolog.DefaultContextLogger && l.GetLevel() != zerolog.Disabled {
			return l
		}
		l := log
		if hd := d.Headers(); hd.Get(natsx.HeaderRequestID) != "" {
			l = log.With().Str("request_id", hd.Get(natsx.HeaderRequestID)).Str("tenant", hd.Get(natsx.HeaderTenant)).
				Str("trace_id", TraceID(hd.Get(natsx.HeaderTraceParent))).Logger()
		}
		return &l
	}, h, dl, maxDeliver, timeout, inPlace)
}

// HandToRouter is the dead-letter action of the stages after the router
// (executor, gate): the message goes to the stage's DLQ and, when it decodes,
// the work goes back to the router on llm.verdicts marked as failed. Only
// the router finishes requests, so only it replies and settles the budget.
func HandToRouter(p Publisher, stageName string, log zerolog.Logger) DeadLetterFunc {
	return func(ctx context.Context, d *Delivery, reason string, cause error) error {
		var w envelope.Work
		if json.Unmarshal(d.Data(), &w) != nil || w.Request.ID == "" || w.Key == "" {
			return p.DeadLetter(ctx, stageName, reason, cause, d, "", "")
		}
		if err := p.DeadLetter(ctx, stageName, reason, cause, d, w.Request.ID, w.Request.Tenant); err != nil {
			return err
		}
		msg := stageName + " could not process the request (" + reason + "); it was dead-lettered"
		if cause != nil {
			msg += ": " + truncate(cause.Error(), 300)
		}
		w.Failed = &envelope.StageFailure{Stage: stageName, Reason: reason, Message: msg}
		rl := RequestLogger(log, &w)
		rl.Warn().Str("stage", stageName).Str("reason", reason).Msg("dead-lettered; handing the request back to the router")
		id := w.Key + ":failed:" + stageName + ":" + strconv.Itoa(w.Branch) + ":" + strconv.Itoa(w.Dispatch)
		return p.PublishWork(ctx, natsx.SubjectVerdicts, id, &w)
	}
}
