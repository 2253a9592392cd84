// Package client is a small Go client of the public contract: publish a
// request to llm.requests with Nats-Msg-Id = <tenant>.<id>, and read its
// reply from the persisted reply subject.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
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

// Reply reads the reply of one request from the replies stream, waiting
// until it arrives or ctx is done. It works whether the reply was published
// before or after the call.
func (c *Client) Reply(ctx context.Context, tenant, id string) (*envelope.Reply, error) {
	cons, err := c.JS.OrderedConsumer(ctx, natsx.StreamReplies, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{envelope.DefaultReplySubject(tenant, id)},
	})
	if err != nil {
		return nil, err
	}
	for {
		msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(fetchWait(ctx)))
		if err != nil {
			return nil, err
		}
		for m := range msgs.Messages() {
			var r envelope.Reply
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return nil, fmt.Errorf("decode reply: %w", err)
			}
			return &r, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no reply for %s/%s: %w", tenant, id, ctx.Err())
		}
	}
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
	sub, err := c.NC.Subscribe("llm.replies."+tenant+".>", func(m *nats.Msg) {
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

// fetchWait polls in short rounds so ctx cancellation is noticed promptly.
func fetchWait(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < time.Second {
			return max(left, 10*time.Millisecond)
		}
	}
	return time.Second
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

// Waiter receives one reply on core NATS.
type Waiter struct {
	subs []*nats.Subscription
	ch   chan *nats.Msg
}

// Await subscribes on core NATS to the reply subjects of a request about
// to be published: how a tenant, whose credentials do not open the replies
// stream, gets its reply. Start it before publishing.
func (c *Client) Await(subjects ...string) (*Waiter, error) {
	w := &Waiter{ch: make(chan *nats.Msg, len(subjects))}
	for _, s := range subjects {
		sub, err := c.NC.ChanSubscribe(s, w.ch)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.subs = append(w.subs, sub)
	}
	// The server has the subscriptions before the request is published.
	if err := c.NC.Flush(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Wait returns the first reply, or an error when ctx is done first.
func (w *Waiter) Wait(ctx context.Context) (*envelope.Reply, error) {
	select {
	case m := <-w.ch:
		var r envelope.Reply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, fmt.Errorf("decode reply: %w", err)
		}
		return &r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no reply: %w", ctx.Err())
	}
}

// Close ends the subscriptions.
func (w *Waiter) Close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}
