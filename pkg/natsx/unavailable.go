package natsx

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// JetStream API error codes that mean "not now" rather than "no".
const (
	// errCodeNoSuitablePeers: no peer set for the replicas. Transient
	// while a cluster starts or a node is down ("peer offline"; peers not
	// yet met look like a cluster too small); permanent only for the
	// placement reasons listed in placementRefusals.
	errCodeNoSuitablePeers jetstream.ErrorCode = 10005
	// errCodeClusterNotLeader: "JetStream cluster can not handle request",
	// the meta leader is being elected.
	errCodeClusterNotLeader jetstream.ErrorCode = 10009
)

// placementRefusals are the reasons of a no-suitable-peers error that come
// from configuration (storage, tags), which no wait clears.
var placementRefusals = []string{"insufficient storage", "exclude tag", "tags not matched", "tags excluded", "server tag not unique", "jetstream not enabled"}

// Unavailable reports an error that means JetStream cannot take a request
// right now, as opposed to refusing it: no stream leader (a cluster electing
// one after losing a node), no responders, a connection moving to another
// node, no peers online yet for a stream's replicas. It clears by itself
// within an election (about 4 to 9 s by default), so a stage retries it for
// longer than a flaky call.
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
	if !errors.As(err, &apiErr) {
		return false
	}
	switch {
	case apiErr.Code == http.StatusServiceUnavailable, apiErr.ErrorCode == errCodeClusterNotLeader:
		return true
	case apiErr.ErrorCode == errCodeNoSuitablePeers:
		for _, reason := range placementRefusals {
			if strings.Contains(apiErr.Description, reason) {
				return false
			}
		}
		return true
	}
	return false
}

// retryAtStart runs op until it succeeds or fails for good, retrying an
// Unavailable error with a growing delay (a cluster still meeting its
// peers or electing leaders) for up to ConnectTimeout or until ctx ends.
// Each retry is logged with the logger in ctx (zerolog.Ctx).
func retryAtStart(ctx context.Context, what string, op func(context.Context) error) error {
	return retryUnavailable(ctx, what, ConnectTimeout, 100*time.Millisecond, op)
}

// Attempt timeouts of retryUnavailable: short, because an API request sent
// as the server went away (a restart during start-up) is never answered,
// and waiting for ctx's own deadline for it would spend the whole start-up
// budget on one lost reply; doubled after each attempt that timed out, up
// to jetstream's default API timeout, for a cluster that is slow rather
// than gone.
const (
	firstAttemptTimeout = time.Second
	maxAttemptTimeout   = 5 * time.Second
)

func retryUnavailable(ctx context.Context, what string, budget, delay time.Duration, op func(context.Context) error) error {
	deadline := time.Now().Add(budget)
	wait := firstAttemptTimeout
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, wait)
		err := op(actx)
		cancel()
		// An attempt's timeout is a lost reply or a slow cluster, not a
		// refusal.
		timedOut := errors.Is(err, context.DeadlineExceeded)
		if timedOut {
			wait = min(2*wait, maxAttemptTimeout)
		}
		transient := Unavailable(err) || timedOut
		if err == nil || !transient || ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return err
		}
		zerolog.Ctx(ctx).Warn().Err(err).Str("what", what).Int("attempt", attempt).Dur("retry_in", delay).
			Msg("jetstream not ready at start; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}
