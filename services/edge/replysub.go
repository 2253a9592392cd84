package edge

import (
	"github.com/nats-io/nats.go"
)

// replySub waits for the one reply of a request that has a subscription
// of its own (one with an idempotency key; others use replyMux). It is a channel
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
