package natsx

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect dials NATS with settings suited to long-running services:
// unlimited reconnects, so a NATS restart does not end a service.
func Connect(url, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", url, err)
	}
	return nc, nil
}
