// Package dlq lists, inspects, replays and purges dead letters kept in the
// LLM_DLQ stream (subjects llm.dlq.<stage>).
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	// it is published: how an operator corrects a refused envelope.
	Patch json.RawMessage
}

// Result says what happened to one dead letter.
type Result struct {
	Seq       uint64 `json:"seq"`
	RequestID string `json:"request_id"`
	MsgID     string `json:"msg_id"`
	Replayed  bool   `json:"replayed"`
	Error     string `json:"error,omitempty"`
}

// Payload returns the request envelope a dead letter holds: the payload
// itself, or the request inside an internal work envelope.
func (e *Entry) Payload() []byte {
	var w struct {
		Key     string          `json:"key"`
		Request json.RawMessage `json:"request"`
	}
	if json.Unmarshal(e.Data, &w) == nil && w.Key != "" && len(w.Request) > 0 {
		return w.Request
	}
	return e.Data
}

// Replay publishes one dead letter back to llm.requests with a new message
// id (so the dedupe window does not drop it, and each replay is distinct
// downstream), then deletes it from the DLQ so it cannot be replayed twice.
func Replay(ctx context.Context, js jetstream.JetStream, e *Entry, o ReplayOptions) Result {
	r := Result{Seq: e.Seq, RequestID: e.RequestID}
	payload := e.Payload()
	if len(o.Patch) > 0 {
		patched, err := MergePatch(payload, o.Patch)
		if err != nil {
			r.Error = err.Error()
			return r
		}
		payload = patched
	}
	var id struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(payload, &id)
	if id.ID != "" {
		r.RequestID = id.ID
	}
	base := r.RequestID
	if base == "" {
		base = "unidentified"
	}
	r.MsgID = base + ":replay:" + strconv.FormatUint(e.Seq, 10)
	if o.DryRun {
		return r
	}
	m := &nats.Msg{Subject: natsx.SubjectRequests, Data: payload, Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, r.MsgID)
	if _, err := js.PublishMsg(ctx, m); err != nil {
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
