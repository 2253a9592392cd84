// Package natsserver runs an embedded NATS server with JetStream. It is the
// only package that links nats-server: `switchyard up` and tests import it,
// the service binaries (which are clients) do not.
package natsserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an in-process NATS server with JetStream.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a random free port
	StoreDir string // JetStream file store
	// MaxPayload bounds one message; 0 keeps the server default (1 MiB).
	MaxPayload int32
	// Auth turns on the decentralized JWT model (nil: no authentication).
	Auth *Auth
	// TLS, when set, is required of every client connection.
	TLS *tls.Config
}

// Auth is the operator the server trusts and the accounts it starts with.
type Auth struct {
	Operator      *jwt.OperatorClaims
	SystemAccount string
	// ResolverDir keeps the account JWTs; accounts pushed while running
	// (a revocation) are stored there too.
	ResolverDir string
	// Accounts (public key → JWT) are stored in the resolver before start;
	// an older JWT there is replaced.
	Accounts map[string]string
}

// MaxControlLine is the control line limit with authentication on (a
// server of your own needs `max_control_line: 32KB` for the services'
// credentials).
const MaxControlLine = 32 * 1024

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
	if a := o.Auth; a != nil {
		res, err := server.NewDirAccResolver(a.ResolverDir, 0, time.Minute, server.NoDelete)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: account resolver: %w", err)
		}
		for pub, token := range a.Accounts {
			if err := res.Store(pub, token); err != nil {
				res.Close()
				return nil, fmt.Errorf("embedded nats: store account %s: %w", pub, err)
			}
		}
		opts.TrustedOperators = []*jwt.OperatorClaims{a.Operator}
		opts.SystemAccount = a.SystemAccount
		opts.AccountResolver = res
		// A service's user JWT lists its permissions and is sent in the
		// CONNECT line: the default 4 KiB cannot hold it.
		opts.MaxControlLine = MaxControlLine
	}
	if o.TLS != nil {
		opts.TLSConfig = o.TLS
		opts.TLS, opts.TLSVerify = true, o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 2
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
