package natsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// ClientAuth is how a process proves who it is to NATS and checks the
// server: the same SWITCHYARD_NATS_* names in every service binary and in
// the CLI.
type ClientAuth struct {
	// Creds is a NATS credentials file (a user JWT and its seed); `up`
	// writes one per service into <data>/creds.
	Creds string `envconfig:"NATS_CREDS"`
	// TLSCA verifies the server's certificate; TLSCert/TLSKey are the
	// client's own when the server asks for one.
	TLSCA   string `envconfig:"NATS_TLS_CA"`
	TLSCert string `envconfig:"NATS_TLS_CERT"`
	TLSKey  string `envconfig:"NATS_TLS_KEY"`
}

// Validate reports what can be told before connecting (a missing file is
// reported by the connect, naming the variable).
func (c ClientAuth) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("SWITCHYARD_NATS_TLS_CERT and SWITCHYARD_NATS_TLS_KEY go together")
	}
	return nil
}

// Options are the nats.go options of c. A restricted user (a service, a
// tenant) gets the private inbox prefix its permissions allow it to read.
func (c ClientAuth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Creds != "" {
		u, err := natsauth.ReadCreds(c.Creds)
		if err != nil {
			return nil, fmt.Errorf("SWITCHYARD_NATS_CREDS: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.Creds))
		if p := u.InboxPrefix(); p != "" {
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
	}
	if c.TLSCA != "" || c.TLSCert != "" {
		cfg, err := c.TLSConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// OwnStreams are the prefixes of the streams c's user creates itself (see
// natsauth.OwnStreams).
func (c ClientAuth) OwnStreams() []string {
	u, err := natsauth.ReadCreds(c.Creds)
	if err != nil {
		return nil
	}
	return natsauth.OwnStreams(u.Name)
}

// Manages says whether the process may create and update streams and
// buckets: without credentials (no authentication) or as an unrestricted
// user (the operator); a service's user only uses what `up` created.
func (c ClientAuth) Manages() bool {
	if c.Creds == "" {
		return true
	}
	u, err := natsauth.ReadCreds(c.Creds)
	return err == nil && !u.Restricted
}

// TLSConfig is the client side TLS of c.
func (c ClientAuth) TLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pool, err := LoadCAPool(c.TLSCA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("nats tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// LoadCAPool reads PEM certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("nats tls ca %s: no PEM certificate", path)
	}
	return pool, nil
}
