package natsx

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ConnectTimeout bounds the wait for the first server of the list to
// answer at start: long enough for a cluster node restarting, short enough
// that a wrong URL stops the process with a message.
const ConnectTimeout = 20 * time.Second

// Connect dials NATS with settings suited to long-running services. urls is
// one server or a comma-separated list (the nodes of a cluster): the first
// is tried first (list the node nearest the process first), the others are
// shuffled so processes spread over the cluster when they move, and the
// servers the cluster announces are added. A name that resolves to several
// addresses is dialled at them in random order: processes that all read one
// list (a Kubernetes ConfigMap) spread when its first URL is such a name. A failed first connect is
// retried across the list until ConnectTimeout; a lost connection is
// re-established forever on any node, so neither a restarting node nor a
// NATS restart ends a service. Disconnects and reconnects are logged with
// the server they concern. extra adds options (credentials, TLS, inbox
// prefix: see ClientAuth.Options).
func Connect(urls, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	list := SplitURLs(urls)
	if len(list) == 0 {
		return nil, errors.New("connect nats: no server URL")
	}
	connected := make(chan struct{}, 1)
	signal := func(*nats.Conn) {
		select {
		case connected <- struct{}{}:
		default:
		}
	}
	opts := nats.GetDefaultOptions()
	opts.Url, opts.Servers = list[0], list[1:]
	for _, o := range []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(signal),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				// Closed on purpose: nothing to reconnect, and the line would
				// be written after the caller's Close returned (nats.go runs
				// the handler on its own goroutine), to a log it may have
				// let go of.
				return
			}
			log.Warn().Err(err).Str("server", nc.ConnectedServerName()).Msg("nats disconnected; reconnecting")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats error")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			signal(nc)
			log.Info().Str("server", nc.ConnectedServerName()).Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	} {
		if err := o(&opts); err != nil {
			return nil, err
		}
	}
	for _, o := range extra {
		if err := o(&opts); err != nil {
			return nil, err
		}
	}
	nc, err := opts.Connect()
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", urls, err)
	}
	deadline := time.After(ConnectTimeout)
	for !nc.IsConnected() {
		select {
		case <-connected:
		case <-time.After(100 * time.Millisecond):
			// Refused credentials will not get better with retries.
			if err := nc.LastError(); IsAuthError(err) {
				nc.Close()
				return nil, fmt.Errorf("connect nats %s: %w (check SWITCHYARD_NATS_CREDS)", urls, err)
			}
		case <-deadline:
			nc.Close()
			return nil, fmt.Errorf("connect nats %s: no server answered within %s", urls, ConnectTimeout)
		}
	}
	return nc, nil
}

// IsAuthError says whether err is the server refusing the credentials (or
// a CONNECT line too long for it: a user JWT over its max_control_line).
func IsAuthError(err error) bool {
	if err == nil {
		return false
	}
	msg := strings.ToLower(err.Error())
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		strings.Contains(msg, "authorization violation") || strings.Contains(msg, "maximum control line exceeded")
}

// SplitURLs parses SWITCHYARD_NATS_URL: one URL or a comma-separated list,
// blanks around each ignored.
func SplitURLs(urls string) []string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// ValidateURLs reports a list with no URL.
func ValidateURLs(urls string) error {
	if len(SplitURLs(urls)) == 0 {
		return errors.New("no server URL")
	}
	return nil
}

// Joined describes where a connection landed, for the start-up log line.
func Joined(ev *zerolog.Event, nc *nats.Conn) *zerolog.Event {
	cluster := nc.ConnectedClusterName()
	if cluster == "" {
		cluster = "(single server)"
	}
	return ev.Str("nats_cluster", cluster).Str("server", nc.ConnectedServerName()).
		Str("url", nc.ConnectedUrlRedacted()).Int("known_servers", len(nc.Servers()))
}
