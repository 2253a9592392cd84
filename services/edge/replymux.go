package edge

import (
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// replyMux receives the replies of this edge process's requests on one
// wildcard subscription and hands each to the request waiting for it. A
// subscription per request cost the NATS server an interest-graph insert
// and removal (and the edge a SUB and an UNSUB) on every call, the largest
// share of the edge's own CPU left after the key lookup went to memory.
//
// A request handled here names its reply subject, reply_to
// llm.replies.<tenant>.<token>.<id>, where token is this process's: still
// the tenant's own reply space, persisted in LLM_REPLIES like any reply.
type replyMux struct {
	nc    *nats.Conn
	token string

	mu      sync.Mutex
	sub     *nats.Subscription // made on first use, before the first publish
	waiting map[string]chan *nats.Msg
}

func newReplyMux(nc *nats.Conn) *replyMux {
	// An inbox's unique part: a NUID, letters and digits, a valid token.
	token := strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix)
	return &replyMux{nc: nc, token: token, waiting: map[string]chan *nats.Msg{}}
}

// subject is the reply subject of a request of tenant with id.
func (m *replyMux) subject(tenant, id string) string {
	return "llm.replies." + tenant + "." + m.token + "." + id
}

// expect registers subject's waiter: its reply arrives on the channel
// until done is called. The subscription exists once expect returns, and
// the publish that follows goes out on the same connection after it, so
// the server has the interest before the request can be answered.
func (m *replyMux) expect(subject string) (<-chan *nats.Msg, func(), error) {
	ch := make(chan *nats.Msg, replyBuffer)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sub == nil {
		sub, err := m.nc.Subscribe("llm.replies.*."+m.token+".*", m.deliver)
		if err != nil {
			return nil, nil, err
		}
		// One subscription takes every reply of the process: no limit
		// below the connection's own.
		_ = sub.SetPendingLimits(-1, -1)
		m.sub = sub
	}
	m.waiting[subject] = ch
	return ch, func() {
		m.mu.Lock()
		delete(m.waiting, subject)
		m.mu.Unlock()
	}, nil
}

// deliver hands a reply to its waiter; one nobody waits for any more (the
// client went away) or a redelivered copy beyond the buffer is dropped:
// the reply is in LLM_REPLIES all the same.
func (m *replyMux) deliver(msg *nats.Msg) {
	m.mu.Lock()
	ch := m.waiting[msg.Subject]
	m.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- msg:
	default:
	}
}
