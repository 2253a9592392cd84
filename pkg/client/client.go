// Package client is a small Go client of the public contract: publish a
// request to llm.requests with Nats-Msg-Id = <tenant>.<id>, and read its
// reply live or, when missed, from the replies stream (direct get, which a
// tenant's credentials allow on its own replies).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Client publishes requests and collects replies.
type Client struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// New wraps a NATS connection.
func New(nc *nats.Conn) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Client{NC: nc, JS: js}, nil
}

// Publish sends a request with Nats-Msg-Id = <tenant>.<id> (ids are unique
// per tenant).
func (c *Client) Publish(ctx context.Context, req *envelope.Request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return c.PublishRaw(ctx, req.MsgID(), data)
}

// PublishRaw sends raw bytes as a request with the given Nats-Msg-Id.
func (c *Client) PublishRaw(ctx context.Context, msgID string, data []byte) error {
	m := &nats.Msg{Subject: natsx.SubjectRequests, Data: data, Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set(natsx.HeaderMsgID, msgID)
	}
	_, err := c.JS.PublishMsg(ctx, m)
	return err
}

// Reply returns the reply of one request, waiting until it arrives or ctx
// is done. It works whether the reply was published before or after the
// call, with a tenant's credentials too: it listens live and reads the
// stored reply (Waiter.Wait).
func (c *Client) Reply(ctx context.Context, tenant, id string) (*envelope.Reply, error) {
	w, err := c.Await(envelope.DefaultReplySubject(tenant, id))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	return w.Wait(ctx)
}

// ErrNoStoredReply: LLM_REPLIES holds no reply on the subject (not yet, or
// no longer after its retention).
var ErrNoStoredReply = errors.New("no stored reply")

// StoredReply reads the last reply stored on subject
// (llm.replies.<tenant>.<id>) in LLM_REPLIES, through the stream's direct
// get: the one JetStream call a tenant's credentials may make, and only on
// its own subjects (docs/security.md).
func (c *Client) StoredReply(ctx context.Context, subject string) (*envelope.Reply, error) {
	m, err := c.NC.RequestWithContext(ctx, natsauth.DirectGetReplies+subject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("read stored reply %s: %w (a stream without direct get, or credentials that may not read this subject)", subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read stored reply %s: %w", subject, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, ErrNoStoredReply
	default:
		return nil, fmt.Errorf("read stored reply %s: %s %s", subject, status, m.Header.Get("Description"))
	}
	var r envelope.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return &r, nil
}

// Submit publishes a request and waits for its reply.
func (c *Client) Submit(ctx context.Context, req *envelope.Request) (*envelope.Reply, error) {
	if err := c.Publish(ctx, req); err != nil {
		return nil, err
	}
	return c.Reply(ctx, req.Tenant, req.ID)
}

// Collector gathers replies for a tenant as they are published, for
// workloads that submit many requests at once.
type Collector struct {
	sub     *nats.Subscription
	mu      sync.Mutex
	replies map[string][]*envelope.Reply
	notify  chan struct{}
}

// Collect subscribes to llm.replies.<tenant>.> on core NATS. Start it
// before publishing: core subscriptions see only new messages.
func (c *Client) Collect(tenant string) (*Collector, error) {
	col := &Collector{replies: map[string][]*envelope.Reply{}, notify: make(chan struct{}, 1)}
	sub, err := c.NC.Subscribe(natsx.SubjectRepliesPrefix+tenant+".>", func(m *nats.Msg) {
		var r envelope.Reply
		if json.Unmarshal(m.Data, &r) != nil {
			return
		}
		col.mu.Lock()
		col.replies[r.ID] = append(col.replies[r.ID], &r)
		col.mu.Unlock()
		select {
		case col.notify <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	col.sub = sub
	return col, nil
}

// Wait blocks until replies for n distinct ids arrived or ctx is done.
func (col *Collector) Wait(ctx context.Context, n int) error {
	for {
		if col.Distinct() >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d replies: %w", col.Distinct(), n, ctx.Err())
		case <-col.notify:
		}
	}
}

// Distinct is the number of ids with at least one reply.
func (col *Collector) Distinct() int {
	col.mu.Lock()
	defer col.mu.Unlock()
	return len(col.replies)
}

// All returns every reply received, by id.
func (col *Collector) All() map[string][]*envelope.Reply {
	col.mu.Lock()
	defer col.mu.Unlock()
	out := make(map[string][]*envelope.Reply, len(col.replies))
	for k, v := range col.replies {
		out[k] = append([]*envelope.Reply(nil), v...)
	}
	return out
}

// Close unsubscribes.
func (col *Collector) Close() error {
	if col.sub == nil {
		return errors.New("collector not started")
	}
	return col.sub.Unsubscribe()
}

// PublishAsync sends a request without waiting for the server's ack; for
// load generators. Errors surface through the JetStream async error handler.
func (c *Client) PublishAsync(req *envelope.Request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: natsx.SubjectRequests, Data: data, Header: nats.Header{}}
	m.Header.Set(natsx.HeaderMsgID, req.MsgID())
	_, err = c.JS.PublishMsgAsync(m)
	return err
}

// Waiter receives one reply: live on core NATS, or from LLM_REPLIES when
// the live one was missed (published before the subscription, or while
// the connection was down).
type Waiter struct {
	c      *Client
	subs   []*nats.Subscription
	ch     chan *nats.Msg
	stored []string // the subjects LLM_REPLIES keeps
}

// storedPoll is how often Wait looks for a stored reply it may have missed
// live; storedGetTimeout bounds one look (a refused request gets no answer).
const (
	storedSubjectPrefix = natsx.SubjectRepliesPrefix // LLM_REPLIES's subjects
	storedPoll          = time.Second
	storedGetTimeout    = 2 * time.Second
)

// Await subscribes on core NATS to the reply subjects of a request about
// to be published. Start it before publishing.
func (c *Client) Await(subjects ...string) (*Waiter, error) {
	w := &Waiter{c: c, ch: make(chan *nats.Msg, len(subjects))}
	for _, s := range subjects {
		sub, err := c.NC.ChanSubscribe(s, w.ch)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
		if strings.HasPrefix(s, storedSubjectPrefix) {
			w.stored = append(w.stored, s)
		}
	}
	// The server has the subscriptions before the request is published.
	if err := c.NC.Flush(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Wait returns the first reply, live or stored, or an error when ctx is
// done first. It looks for a stored reply at once (a request published
// twice is answered once) and then every storedPoll, each look in its own
// goroutine so a slow one never delays a live reply. A subject whose look
// fails (refused to these credentials, a stream without direct get) is
// only listened to from then on.
func (w *Waiter) Wait(ctx context.Context) (*envelope.Reply, error) {
	type look struct {
		subject string
		reply   *envelope.Reply
		err     error
	}
	// One look in flight per subject, so the buffer never blocks a sender.
	looks := make(chan look, len(w.stored))
	inFlight := map[string]bool{}
	dropped := map[string]bool{}
	var storedErr error
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case m := <-w.ch:
			var r envelope.Reply
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return nil, fmt.Errorf("decode reply: %w", err)
			}
			return &r, nil
		case <-poll.C:
			for _, s := range w.stored {
				if inFlight[s] || dropped[s] {
					continue
				}
				inFlight[s] = true
				go func() {
					r, err := w.lookStored(ctx, s)
					looks <- look{s, r, err}
				}()
			}
			poll.Reset(storedPoll)
		case l := <-looks:
			inFlight[l.subject] = false
			if l.reply != nil {
				return l.reply, nil
			}
			if l.err != nil && ctx.Err() == nil {
				dropped[l.subject], storedErr = true, l.err
			}
		case <-ctx.Done():
			if storedErr != nil {
				return nil, fmt.Errorf("no reply: %w (%w)", ctx.Err(), storedErr)
			}
			return nil, fmt.Errorf("no reply: %w", ctx.Err())
		}
	}
}

// lookStored reads one stored reply; none yet is no error.
func (w *Waiter) lookStored(ctx context.Context, subject string) (*envelope.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, storedGetTimeout)
	defer cancel()
	r, err := w.c.StoredReply(ctx, subject)
	if errors.Is(err, ErrNoStoredReply) {
		return nil, nil
	}
	return r, err
}

// Close ends the subscriptions.
func (w *Waiter) Close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}
