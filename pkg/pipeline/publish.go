// Stage hand-offs: what several stages share when they hand work on or
// finish a request: publishing with deduplication ids, dead letters, the
// reply and its request telemetry event.
package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Publisher publishes JSON messages with Nats-Msg-Id set, so a message
// published again after a crash or redelivery is dropped by the server.
type Publisher struct {
	JS jetstream.JetStream
	NC *nats.Conn
	// Events, when set, stores the request events that Send is given
	// (Outbound.Group) in batches of several requests' events on
	// llm.telemetry.requests: one stream write, delivery and ack for many
	// requests. Nil: each on llm.telemetry.request, a message of its own.
	Events *GroupCommit
}

// NewRequestEvents is the group commit of request events that Publisher
// Events takes: batches published on llm.telemetry.requests.
func (p Publisher) NewRequestEvents(onStored func(events int)) *GroupCommit {
	return &GroupCommit{OnStored: onStored, Publish: func(ctx context.Context, batch []byte) error {
		return p.PublishRaw(ctx, natsx.SubjectRequestBatch, "", batch, nil)
	}}
}

// Publish marshals v and publishes it to a JetStream subject.
func (p Publisher) Publish(ctx context.Context, subject, msgID string, v any, hdr nats.Header) error {
	data, err := envelope.MarshalInternal(v)
	if err != nil {
		return Terminal("marshal", err)
	}
	return p.PublishRaw(ctx, subject, msgID, data, hdr)
}

// PublishWork hands a work envelope to the next stage, carrying the W3C
// trace context in the traceparent header as well as in the envelope.
func (p Publisher) PublishWork(ctx context.Context, subject, msgID string, w *envelope.Work) error {
	return p.Publish(ctx, subject, msgID, w, workHeader(w))
}

// PublishRaw publishes bytes to a JetStream subject.
//
// A reply (published on its store subject, natsx.ReplyPublishSubject) that
// nobody answers may meet LLM_REPLIES still configured as before replies
// were delivered from the stream (llm.replies.> stored as published): in a
// rolling upgrade it is provisioned anew after the services. Only then does
// the reply go to its old subject; a stream between leaders must not have
// it published where clients listen.
func (p Publisher) PublishRaw(ctx context.Context, subject, msgID string, data []byte, hdr nats.Header) error {
	err := p.publishSync(ctx, jsMsg(subject, msgID, data, hdr))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		if old := natsx.StoredReplySubject(subject); old != subject && p.repliesStoredAsPublished(ctx) {
			err = p.publishSync(ctx, jsMsg(old, msgID, data, hdr))
		}
	}
	if err != nil {
		return Transient(fmt.Errorf("publish %s: %w", subject, err), 0)
	}
	return nil
}

// repliesStoredAsPublished reports whether LLM_REPLIES has its old
// configuration, storing llm.replies.> itself.
func (p Publisher) repliesStoredAsPublished(ctx context.Context) bool {
	s, err := p.JS.Stream(ctx, natsx.StreamReplies)
	return err == nil && slices.Contains(s.CachedInfo().Config.Subjects, natsx.SubjectReplies)
}

// publishSync is jetstream's PublishMsg (the same request, default timeout
// and retries while the stream has no responder) without decoding every
// ack with encoding/json, which was 3.5% of up's CPU: an ack that names
// its stream and no error is checked by its prefix, anything else is
// decoded as before.
func (p Publisher) publishSync(ctx context.Context, m *nats.Msg) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.JS.Options().DefaultTimeout)
		defer cancel()
	}
	nc := p.JS.Conn()
	resp, err := nc.RequestMsgWithContext(ctx, m)
	for try := 0; errors.Is(err, nats.ErrNoResponders) && try < jetstream.DefaultPubRetryAttempts; try++ {
		// A stream between leaders answers nobody for a moment.
		select {
		case <-ctx.Done():
		case <-time.After(jetstream.DefaultPubRetryWait):
		}
		resp, err = nc.RequestMsgWithContext(ctx, m)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return jetstream.ErrNoStreamResponse
	case errors.Is(err, context.DeadlineExceeded):
		return ackTimedOut(err)
	case err != nil:
		return err
	}
	return checkPubAck(resp.Data)
}

// ackTimedOut marks a publish whose ack did not come in time as JetStream
// unavailable: the message may still be stored a moment later (a leader
// slow to commit), so the retry waits the unavailable backoff before a
// redelivered handler asks whether its reply is stored; an 80 ms retry
// asked too early and published the reply a second time.
func ackTimedOut(err error) error {
	return fmt.Errorf("%w: %w", nats.ErrTimeout, err)
}

// ackPrefix starts every successful ack the server writes
// ({"stream":"NAME","seq":N} with "domain" or "duplicate" at most).
var ackPrefix = []byte(`{"stream":"`)

// checkPubAck reports the error in a JetStream publish ack, if any.
func checkPubAck(data []byte) error {
	if bytes.HasPrefix(data, ackPrefix) && len(data) > len(ackPrefix)+1 && data[len(ackPrefix)] != '"' &&
		!bytes.Contains(data, []byte(`"error"`)) {
		return nil
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(data, &ack); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream == "" {
		return jetstream.ErrInvalidJSAck
	}
	return nil
}

// jsMsg is the message to publish: hdr copied (a caller's map is never
// changed, and an async publish retried after "no responders" resends the
// map it was given) plus the deduplication id.
func jsMsg(subject, msgID string, data []byte, hdr nats.Header) *nats.Msg {
	h := make(nats.Header, len(hdr)+1)
	for k, v := range hdr {
		h[k] = v
	}
	if msgID != "" {
		h[natsx.HeaderMsgID] = []string{msgID}
	}
	return &nats.Msg{Subject: subject, Data: data, Header: h}
}

// DeadLetter writes the original payload to llm.dlq.<stage> with headers
// that say why, so `switchyard dlq replay` can send it back.
func (p Publisher) DeadLetter(ctx context.Context, stageName, reason string, cause error, d *Delivery, requestID, tenant string) error {
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, stageName)
	hdr.Set(natsx.HeaderReason, reason)
	if cause != nil {
		hdr.Set(natsx.HeaderError, truncate(cause.Error(), 1024))
	}
	hdr.Set(natsx.HeaderOrigSubject, d.Msg.Subject())
	hdr.Set(natsx.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	hdr.Set(natsx.HeaderDeliveries, strconv.FormatUint(d.NumDelivered(), 10))
	if requestID != "" {
		hdr.Set(natsx.HeaderRequestID, requestID)
	}
	if tenant != "" {
		hdr.Set(natsx.HeaderTenant, tenant)
	}
	id := "dlq:" + stageName
	if d.Meta != nil {
		id += ":" + d.Meta.Stream + ":" + strconv.FormatUint(d.Meta.Sequence.Stream, 10)
	}
	return p.PublishRaw(ctx, natsx.DLQSubject(stageName), id, d.Data(), hdr)
}

// DeadLetterRequest dead-letters the client's original request (not the
// internal envelope), so a replay goes back through llm.requests.
func (p Publisher) DeadLetterRequest(ctx context.Context, stageName, reason, detail string, w *envelope.Work) error {
	data, err := json.Marshal(&w.Request)
	if err != nil {
		return Terminal("marshal", err)
	}
	hdr := nats.Header{}
	hdr.Set(natsx.HeaderStage, stageName)
	hdr.Set(natsx.HeaderReason, reason)
	hdr.Set(natsx.HeaderError, truncate(detail, 1024))
	hdr.Set(natsx.HeaderOrigSubject, natsx.SubjectRequests)
	hdr.Set(natsx.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	hdr.Set(natsx.HeaderRequestID, w.Request.ID)
	hdr.Set(natsx.HeaderTenant, w.Request.Tenant)
	return p.PublishRaw(ctx, natsx.DLQSubject(stageName), "dlq:"+stageName+":"+w.Key, data, hdr)
}

// ReplyFor builds the reply skeleton shared by success and failure.
func ReplyFor(w *envelope.Work, now time.Time) *envelope.Reply {
	r := &envelope.Reply{
		ID:        w.Request.ID,
		Tenant:    w.Request.Tenant,
		Route:     w.Route,
		Attempts:  w.Attempts,
		LatencyMS: now.Sub(w.ReceivedAt).Milliseconds(),
		Quality:   w.Quality,
	}
	if r.Attempts == nil {
		r.Attempts = []envelope.AttemptResult{}
	}
	for _, a := range w.Attempts {
		r.CostUSD += a.CostUSD
	}
	// A retry on the same target is not a fallback; moving down the chain is.
	// (Step is len(Chain) once the chain is exhausted.)
	r.Fallback = min(w.Step, len(w.Chain)-1) > 0
	return r
}

// RequestEventFor derives the requests-table row from a finished request.
func RequestEventFor(w *envelope.Work, r *envelope.Reply, now time.Time) *envelope.RequestEvent {
	ev := &envelope.RequestEvent{
		RequestID:      w.Request.ID,
		TS:             w.ReceivedAt.UTC(),
		FinishedAt:     now.UTC(),
		Tenant:         w.Request.Tenant,
		UserHash:       HashUser(w.Request.Tenant, w.Request.User),
		EndpointTag:    w.Request.EndpointTag,
		PromptVersion:  w.Request.PromptVersion,
		Environment:    w.Request.Environment,
		Route:          w.Route,
		Strategy:       w.Strategy,
		Task:           w.Class.Task,
		Status:         r.Status,
		Vendor:         r.Vendor,
		Model:          r.Model,
		Attempts:       len(w.Attempts),
		Fallback:       r.Fallback,
		FallbackReason: w.FallbackReason,
		Escalated:      w.Escalated,
		Degraded:       r.Degraded,
		QualityPassed:  r.Quality != nil && r.Quality.Passed,
		Cached:         r.Cached,
		CostUSD:        r.CostUSD,
		LatencyMS:      r.LatencyMS,
		TraceID:        TraceID(w.TraceParent),
	}
	for _, a := range w.Attempts {
		ev.AddUsage(a.Usage)
	}
	if r.Error != nil {
		ev.ErrorCode = r.Error.Code
	}
	return ev
}

// HashUser pseudonymises a user id per tenant: reports can count users
// without the ledger holding who they are.
func HashUser(tenant, user string) string {
	if user == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(tenant + "\x00" + user))
	return hex.EncodeToString(sum[:12])
}

// TraceID extracts the trace id from a W3C traceparent.
// It is called several times per message (loggers, events), so it does
// not allocate.
func TraceID(traceparent string) string {
	// version-traceid-parentid-flags
	if strings.Count(traceparent, "-") != 3 {
		return ""
	}
	_, rest, _ := strings.Cut(traceparent, "-")
	id, _, _ := strings.Cut(rest, "-")
	if len(id) != 32 {
		return ""
	}
	return id
}

// workHeader is the trace context plus the request's id and tenant, so a
// stage can log about a message (retries, dead letters) before decoding it.
func workHeader(w *envelope.Work) nats.Header {
	h := traceHeader(w)
	if h == nil {
		h = nats.Header{}
	}
	h.Set(natsx.HeaderRequestID, w.Request.ID)
	h.Set(natsx.HeaderTenant, w.Request.Tenant)
	return h
}

func traceHeader(w *envelope.Work) nats.Header {
	if w.TraceParent == "" {
		return nil
	}
	return nats.Header{natsx.HeaderTraceParent: []string{w.TraceParent}}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// DecodeWork decodes an internal envelope; a malformed one is terminal.
func DecodeWork(data []byte) (*envelope.Work, error) {
	var w envelope.Work
	if err := envelope.UnmarshalWork(data, &w); err != nil {
		return nil, Terminal("malformed_work", err)
	}
	if w.Request.ID == "" || w.Key == "" {
		return nil, Terminal("malformed_work", fmt.Errorf("work envelope without request id or key"))
	}
	return &w, nil
}
