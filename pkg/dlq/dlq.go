// Package dlq lists, inspects, replays and purges dead letters kept in the
// LLM_DLQ stream (subjects llm.dlq.<stage>).
package dlq

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

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Entry is one dead letter.
type Entry struct {
	Seq       uint64      `json:"seq"`
	Subject   string      `json:"subject"`
	Stage     string      `json:"stage"`
	Reason    string      `json:"reason"`
	Error     string      `json:"error"`
	RequestID string      `json:"request_id"`
	Tenant    string      `json:"tenant"`
	FailedAt  time.Time   `json:"failed_at"`
	Header    nats.Header `json:"headers"`
	Data      []byte      `json:"-"`
}

// Filter selects dead letters; zero fields match everything.
type Filter struct {
	Stage  string
	Reason string
	Tenant string
	Since  time.Time
	Seq    uint64
}

func (f Filter) match(e *Entry) bool {
	return (f.Reason == "" || f.Reason == e.Reason) &&
		(f.Tenant == "" || f.Tenant == e.Tenant) &&
		(f.Seq == 0 || f.Seq == e.Seq)
}

// List returns the dead letters that match f, oldest first.
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Entry, error) {
	if f.Seq != 0 {
		e, err := Get(ctx, js, f.Seq)
		if err != nil {
			return nil, err
		}
		if f.match(e) && (f.Stage == "" || f.Stage == e.Stage) {
			return []Entry{*e}, nil
		}
		return nil, nil
	}
	subject := natsx.SubjectDLQPrefix + ">"
	if f.Stage != "" {
		subject = natsx.DLQSubject(f.Stage)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if !f.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := f.Since
		cfg.OptStartTime = &since
	}
	stream, err := js.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			return nil, err
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			e := entryOf(meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data())
			if f.match(e) {
				out = append(out, *e)
			}
			last = meta.NumPending == 0
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return nil, batch.Error()
		}
		if last || n == 0 {
			return out, nil
		}
	}
}

// Get returns one dead letter by stream sequence.
func Get(ctx context.Context, js jetstream.JetStream, seq uint64) (*Entry, error) {
	stream, err := js.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		return nil, err
	}
	m, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return entryOf(m.Sequence, m.Subject, m.Header, m.Data), nil
}

func entryOf(seq uint64, subject string, h nats.Header, data []byte) *Entry {
	e := &Entry{Seq: seq, Subject: subject, Header: h, Data: data,
		Stage: h.Get(natsx.HeaderStage), Reason: h.Get(natsx.HeaderReason), Error: h.Get(natsx.HeaderError),
		RequestID: h.Get(natsx.HeaderRequestID), Tenant: h.Get(natsx.HeaderTenant)}
	e.FailedAt, _ = time.Parse(time.RFC3339Nano, h.Get(natsx.HeaderFailedAt))
	return e
}

// ReplayOptions control a replay.
type ReplayOptions struct {
	DryRun bool
	// Patch is a JSON merge patch (RFC 7386) applied to the request before
	// it is published (for a work envelope, to the request inside it; for
	// telemetry, to the event): how an operator corrects a refused envelope.
	Patch json.RawMessage
	// Reanswer lets a replay answer a request a second, final time when
	// its first answer was an error that may pass now: a retryable one, or
	// any error when Patch corrects the request. Without it a request that
	// was answered is not replayed (see answer.refusal).
	Reanswer bool
}

// Result says what happened to one dead letter.
type Result struct {
	Seq       uint64 `json:"seq"`
	RequestID string `json:"request_id"`
	// Kind is what is replayed: request, work or telemetry.
	Kind    string `json:"kind,omitempty"`
	Subject string `json:"subject,omitempty"`
	MsgID   string `json:"msg_id"`
	// Payload is what is (or, in a dry run, would be) published, after the patch.
	Payload  json.RawMessage `json:"payload,omitempty"`
	Replayed bool            `json:"replayed"`
	// Skipped says why a dead letter was not replayed although it could
	// be (its request was answered, or is still in flight).
	Skipped string `json:"skipped,omitempty"`
	// Reanswer: the replay gives its client a second, final reply.
	Reanswer bool   `json:"reanswer,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Replay kinds.
const (
	KindRequest   = "request"
	KindWork      = "work"
	KindTelemetry = "telemetry"
)

// Truncated is the original payload size of a dead letter whose payload was
// cut to fit the DLQ (CapPayload), or 0.
func (e *Entry) Truncated() int {
	n, _ := strconv.Atoi(e.Header.Get(HeaderTruncated))
	return n
}

// workEnvelope is the part of an internal work envelope a replay looks at;
// the rest is kept as it is.
type workEnvelope struct {
	Key     string          `json:"key"`
	Request json.RawMessage `json:"request"`
}

func (e *Entry) work() (map[string]json.RawMessage, *workEnvelope) {
	var w workEnvelope
	var all map[string]json.RawMessage
	if json.Unmarshal(e.Data, &w) != nil || w.Key == "" || len(w.Request) == 0 || json.Unmarshal(e.Data, &all) != nil {
		return nil, nil
	}
	return all, &w
}

// Payload returns the request envelope a dead letter holds: the payload
// itself, or the request inside an internal work envelope.
func (e *Entry) Payload() []byte {
	if _, w := e.work(); w != nil {
		return w.Request
	}
	return e.Data
}

// replayMsg is what Replay publishes.
type replayMsg struct {
	kind, subject, msgID, requestID string
	data                            []byte
	hdr                             nats.Header
}

// plan decides where a dead letter goes back to: each stage's dead letter
// to that stage's input. A request (intake's dead letters, and the client
// request the router dead-letters when a chain is exhausted) goes to
// llm.requests under a replay key, so the intake neither drops it as a
// duplicate nor takes its replies for the first run's; a work envelope goes
// back to its original subject (Switchyard-Original-Subject) with a replay
// key; telemetry goes back to llm.telemetry.*, where the ledger stores it
// once (its tables collapse a row stored twice).
func (e *Entry) plan(patch json.RawMessage) (replayMsg, error) {
	if n := e.Truncated(); n > 0 {
		return replayMsg{}, fmt.Errorf("payload was truncated from %d bytes to fit the DLQ; it cannot be replayed", n)
	}
	seq := strconv.FormatUint(e.Seq, 10)
	orig := e.Header.Get(natsx.HeaderOrigSubject)
	all, w := e.work()
	switch {
	case strings.HasPrefix(orig, "llm.telemetry."):
		data, err := patched(e.Data, patch)
		if err != nil {
			return replayMsg{}, err
		}
		hdr := nats.Header{}
		if tp := e.Header.Get(natsx.HeaderTraceParent); tp != "" {
			hdr.Set(natsx.HeaderTraceParent, tp)
		}
		hdr.Set(natsx.HeaderMsgID, "dlq-replay:"+natsx.StreamDLQ+":"+seq)
		return replayMsg{kind: KindTelemetry, subject: orig, msgID: hdr.Get(natsx.HeaderMsgID), requestID: e.RequestID, data: data, hdr: hdr}, nil
	case w != nil && orig != "" && !natsx.IsRequestSubject(orig) && isPipelineSubject(orig):
		req, err := patched(w.Request, patch)
		if err != nil {
			return replayMsg{}, err
		}
		key := w.Key + ":replay:" + seq
		all["request"] = req
		all["key"], _ = json.Marshal(key)
		data, err := json.Marshal(all)
		if err != nil {
			return replayMsg{}, err
		}
		hdr := nats.Header{}
		if tp := e.Header.Get(natsx.HeaderTraceParent); tp != "" {
			hdr.Set(natsx.HeaderTraceParent, tp)
		}
		hdr.Set(natsx.HeaderMsgID, key+":replayed")
		return replayMsg{kind: KindWork, subject: orig, msgID: key + ":replayed", requestID: requestID(req, e.RequestID), data: data, hdr: hdr}, nil
	case orig == "" || natsx.IsRequestSubject(orig):
		req, err := patched(e.Payload(), patch)
		if err != nil {
			return replayMsg{}, err
		}
		id := requestID(req, e.RequestID)
		if id == "" {
			id = "unidentified"
		}
		var ident struct {
			Tenant string `json:"tenant"`
		}
		_ = json.Unmarshal(req, &ident)
		base := id + ":replay:" + seq
		hdr := nats.Header{}
		hdr.Set(natsx.HeaderDedupeKey, base)
		hdr.Set(natsx.HeaderMsgID, ident.Tenant+"."+base)
		// A tenant's request goes back to its tenant's subject: the intake
		// checks it against the publisher again.
		subject := natsx.SubjectRequests
		if orig != "" {
			subject = orig
		}
		return replayMsg{kind: KindRequest, subject: subject, msgID: hdr.Get(natsx.HeaderMsgID), requestID: id, data: req, hdr: hdr}, nil
	default:
		return replayMsg{}, fmt.Errorf("no replay target: original subject %q is not a stage's input", orig)
	}
}

func isPipelineSubject(s string) bool {
	switch s {
	case natsx.SubjectClassified, natsx.SubjectResults, natsx.SubjectEscalations, natsx.SubjectVerdicts:
		return true
	}
	return strings.HasPrefix(s, natsx.SubjectExecPrefix)
}

func patched(doc, patch json.RawMessage) ([]byte, error) {
	if len(patch) == 0 {
		return doc, nil
	}
	return MergePatch(doc, patch)
}

func requestID(req []byte, fallback string) string {
	var id struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(req, &id) == nil && id.ID != "" {
		return id.ID
	}
	return fallback
}

// Replay publishes one dead letter back to its stage's input (see plan)
// with a message id derived from its DLQ sequence, so replaying it twice
// publishes it once, then deletes it from the DLQ so it cannot be replayed
// again. A request (or work envelope) whose client was answered already is
// skipped unless o.Reanswer allows a second, final reply, and one still in
// flight is always skipped: a replay never sends a duplicate reply or
// makes a duplicate vendor call. A skipped dead letter stays listed. A dry
// run only fills in what would be published, or why it would be skipped.
func Replay(ctx context.Context, js jetstream.JetStream, e *Entry, o ReplayOptions) Result {
	r := Result{Seq: e.Seq, RequestID: e.RequestID}
	m, err := e.plan(o.Patch)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Kind, r.Subject, r.MsgID, r.RequestID, r.Payload = m.kind, m.subject, m.msgID, m.requestID, asJSON(m.data)
	release := func() {}
	// Telemetry is stored once by the ledger whatever is replayed; a
	// request's replay answers its client, so it is checked first.
	if m.kind != KindTelemetry {
		a, err := e.answerOf(ctx, js)
		if err != nil {
			r.Error = err.Error()
			return r
		}
		if r.Skipped = a.refusal(o); r.Skipped != "" {
			return r
		}
		r.Reanswer = a.subject != "" && (a.stored != nil || a.core || a.expired)
		if o.DryRun {
			return r
		}
		var why string
		if release, why, err = a.claim(ctx, js, e); err != nil || why != "" {
			r.Skipped, r.Reanswer = why, false
			if err != nil {
				r.Error = err.Error()
			}
			return r
		}
	}
	if o.DryRun {
		return r
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.subject, Data: m.data, Header: m.hdr}); err != nil {
		release()
		r.Error = err.Error()
		return r
	}
	r.Replayed = true
	stream, err := js.Stream(ctx, natsx.StreamDLQ)
	if err == nil {
		err = stream.DeleteMsg(ctx, e.Seq)
	}
	if err != nil {
		// Replayed but still listed: a second replay reuses the same msg id
		// and is dropped by the dedupe window.
		r.Error = "replayed, but not removed from the DLQ: " + err.Error()
	}
	return r
}

// asJSON keeps a JSON payload as it is and quotes anything else.
func asJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

// Purge deletes the matching dead letters and returns how many.
func Purge(ctx context.Context, js jetstream.JetStream, entries []Entry) (int, error) {
	stream, err := js.Stream(ctx, natsx.StreamDLQ)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := stream.DeleteMsg(ctx, e.Seq); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// MergePatch applies an RFC 7386 JSON merge patch.
func MergePatch(doc, patch []byte) ([]byte, error) {
	var d, p any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("dead letter is not JSON, cannot patch: %w", err)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("patch is not JSON: %w", err)
	}
	return json.Marshal(merge(d, p))
}

func merge(doc, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	dm, ok := doc.(map[string]any)
	if !ok {
		dm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(dm, k)
			continue
		}
		dm[k] = merge(dm[k], v)
	}
	return dm
}
