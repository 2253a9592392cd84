package natsx

import (
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Unavailable reports an error that means JetStream cannot take a request
// right now, as opposed to refusing it: no stream leader (a cluster electing
// one after losing a node), no responders, a connection moving to another
// node. It clears by itself within an election (about 4 to 9 s by default),
// so a stage retries it for longer than a flaky call.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{jetstream.ErrNoStreamResponse, nats.ErrNoResponders, nats.ErrTimeout,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected} {
		if errors.Is(err, target) {
			return true
		}
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == http.StatusServiceUnavailable
}
