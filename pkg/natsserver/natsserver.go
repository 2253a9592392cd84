// Package natsserver runs an embedded NATS server with JetStream. It is the
// only package that links nats-server: `switchyard up` and tests import it,
// the service binaries (which are clients) do not.
package natsserver

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an in-process NATS server with JetStream.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a random free port
	StoreDir string // JetStream file store
	// MaxPayload bounds one message; 0 keeps the server default (1 MiB).
	MaxPayload int32
}

// readyTimeout bounds the wait for a server that neither listens nor fails.
const readyTimeout = 10 * time.Second

// Start starts a JetStream-enabled server and waits until it accepts
// connections. A server that cannot start (its port is taken, its store is
// unusable) returns the server's own reason at once, e.g. "listen tcp
// 127.0.0.1:4222: bind: address already in use".
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.StoreDir == "" {
		return nil, errors.New("embedded nats: StoreDir is required")
	}
	opts := &server.Options{
		ServerName: "switchyard",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		MaxPayload: o.MaxPayload,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	fatal := &fatalLogger{err: make(chan error, 1)}
	// Only fatal errors are wanted: they are the reason a server never
	// becomes ready.
	ns.SetLoggerV2(fatal, false, false, false)
	go ns.Start()
	ready := make(chan bool, 1)
	go func() { ready <- ns.ReadyForConnections(readyTimeout) }()
	select {
	case err := <-fatal.err:
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: %w", o.Host, o.Port, err)
	case ok := <-ready:
		if !ok {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats on %s:%d: not ready after %s", o.Host, o.Port, readyTimeout)
		}
	}
	return ns, nil
}

// fatalLogger passes the server's first fatal error to Start.
type fatalLogger struct{ err chan error }

func (l *fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l.err <- fmt.Errorf(format, v...):
	default:
	}
}
func (l *fatalLogger) Noticef(string, ...any) {}
func (l *fatalLogger) Warnf(string, ...any)   {}
func (l *fatalLogger) Errorf(string, ...any)  {}
func (l *fatalLogger) Debugf(string, ...any)  {}
func (l *fatalLogger) Tracef(string, ...any)  {}
