package edge

import (
	"context"

	"github.com/nats-io/nats.go"
)

// replySub waits for the one reply of a request. It is a channel
// subscription with a small buffer: SubscribeSync allocates a channel for
// 64k pending messages (512 KiB) on every call, which on the request path
// cost more CPU and GC than the rest of the edge together.
type replySub struct {
	*nats.Subscription
	ch chan *nats.Msg
}

// replyBuffer holds the reply and a redelivered copy or two; a subject
// that gets more is a slow consumer, not a blocked edge.
const replyBuffer = 4

func subscribeReply(nc *nats.Conn, subject string) (*replySub, error) {
	ch := make(chan *nats.Msg, replyBuffer)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		return nil, err
	}
	return &replySub{Subscription: sub, ch: ch}, nil
}

// NextMsgWithContext returns the next message or ctx's error.
func (s *replySub) NextMsgWithContext(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-s.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
