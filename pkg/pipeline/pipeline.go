// Package pipeline runs a stage: it pulls from a durable JetStream consumer,
// passes each message through composable middleware (dead-letter → recover →
// retry → timeout → handler, after Watermill's router middleware) and settles
// it exactly once: Ack on success, NakWithDelay on a transient error, Term
// plus a dead letter on a terminal one.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Delivery is one message being handled. It remembers whether it has been
// settled so the runner never acks twice or acks a message a middleware
// already handed back.
type Delivery struct {
	Msg      jetstream.Msg
	Meta     *jetstream.MsgMetadata
	settled  atomic.Bool
	outcome  atomic.Int32 // how it was settled, for the stage metrics
	received time.Time
	// stopping is closed when the stage shuts down: a handler retried in
	// place stops retrying and hands the message back.
	stopping <-chan struct{}
	// reruns counts the handler's runs retried in place (Retry) on top of
	// the server's deliveries.
	reruns atomic.Int32
}

const (
	outcomeNone int32 = iota
	outcomeAck
	outcomeNak
	outcomeTerm
)

// Data is the message payload.
func (d *Delivery) Data() []byte { return d.Msg.Data() }

// Headers are the message headers (never nil).
func (d *Delivery) Headers() nats.Header {
	if h := d.Msg.Headers(); h != nil {
		return h
	}
	return nats.Header{}
}

// NumDelivered is how many times the server has delivered this message.
func (d *Delivery) NumDelivered() uint64 {
	if d.Meta == nil {
		return 1
	}
	return d.Meta.NumDelivered
}

// Rerun reports whether the handler already ran for this message: a
// redelivery, a run retried in place while JetStream was unavailable, or a
// message whose direct hand-off a reader may have handled
// (natsx.HeaderTriedDirect). What the first run may have published must
// then be checked for.
func (d *Delivery) Rerun() bool {
	// The message's own headers: Headers() would make a map for a message
	// without any.
	return d.NumDelivered() > 1 || d.reruns.Load() > 0 || d.Msg.Headers().Get(natsx.HeaderTriedDirect) != ""
}

// Settled reports whether the message was acked, naked or termed.
func (d *Delivery) Settled() bool { return d.settled.Load() }

// Ack acknowledges the message.
func (d *Delivery) Ack() error {
	if d.settled.Swap(true) {
		return nil
	}
	d.outcome.Store(outcomeAck)
	return d.Msg.Ack()
}

// NakWithDelay hands the message back for redelivery after delay.
func (d *Delivery) NakWithDelay(delay time.Duration) error {
	if d.settled.Swap(true) {
		return nil
	}
	d.outcome.Store(outcomeNak)
	return d.Msg.NakWithDelay(delay)
}

// Term stops redelivery for good.
func (d *Delivery) Term(reason string) error {
	if d.settled.Swap(true) {
		return nil
	}
	d.outcome.Store(outcomeTerm)
	return d.Msg.TermWithReason(reason)
}

// InProgress resets the server's ack timer during long work.
func (d *Delivery) InProgress() error {
	if d.settled.Load() {
		return nil
	}
	return d.Msg.InProgress()
}

// Handler processes one delivery. Returning nil acks it (unless the handler
// settled it already); an error is classified by the middleware.
type Handler func(ctx context.Context, d *Delivery) error

// Middleware wraps a handler.
type Middleware func(Handler) Handler

// Chain applies middleware so that the first one listed runs outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// TerminalError will not succeed on redelivery: the message is dead-lettered
// with Reason and termed.
type TerminalError struct {
	Reason string
	Err    error
}

func (e *TerminalError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *TerminalError) Unwrap() error { return e.Err }

// Terminal marks err as terminal with a stable reason code.
func Terminal(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &TerminalError{Reason: reason, Err: err}
}

// TransientError may succeed later; RetryAfter overrides the backoff.
type TransientError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *TransientError) Error() string { return "transient: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient marks err as worth retrying. Errors that are neither terminal
// nor transient are treated as transient: a bug or an outage should not
// lose a message, and MaxDeliver bounds the retries.
func Transient(err error, retryAfter time.Duration) error {
	return &TransientError{Err: err, RetryAfter: retryAfter}
}

// For is the logger attached to ctx (zerolog's WithContext), or log. A stage
// that attaches a logger carrying the request's identity before the
// middleware runs gets it on the middleware's lines too (retries, dead
// letters, panics).
func For(ctx context.Context, log zerolog.Logger) *zerolog.Logger {
	if l := zerolog.Ctx(ctx); l != zerolog.DefaultContextLogger && l.GetLevel() != zerolog.Disabled {
		return l
	}
	return &log
}

// logFunc picks the logger of a middleware's line about d. It runs only
// when a line is written, so a message handled without one costs no
// logger.
type logFunc func(ctx context.Context, d *Delivery) *zerolog.Logger

// plainLog is For(ctx, log).
func plainLog(log zerolog.Logger) logFunc {
	return func(ctx context.Context, _ *Delivery) *zerolog.Logger { return For(ctx, log) }
}

// Recover turns a panic into a terminal error, so one poison message cannot
// crash a stage.
func Recover(log zerolog.Logger) Middleware { return recoverWith(plainLog(log)) }

func recoverWith(logFor logFunc) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) (err error) {
			defer func() {
				if r := recover(); r != nil {
					l := logFor(ctx, d)
					l.Error().Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).Str("subject", d.Msg.Subject()).Msg("handler panicked")
					err = Terminal("panic", fmt.Errorf("handler panicked: %v", r))
				}
			}()
			return next(ctx, d)
		}
	}
}

// DeadLetterFunc records a dead letter (and may send the client an error
// reply). It must be idempotent: a crash after it ran redelivers the message.
type DeadLetterFunc func(ctx context.Context, d *Delivery, reason string, cause error) error

// DeadLetter sends terminal failures to dl and terms the message. If dl
// itself fails, the message is handed back so the dead letter is not lost.
func DeadLetter(log zerolog.Logger, dl DeadLetterFunc) Middleware {
	return deadLetterWith(plainLog(log), dl)
}

func deadLetterWith(logFor logFunc, dl DeadLetterFunc) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) error {
			err := next(ctx, d)
			var te *TerminalError
			if err == nil || !errors.As(err, &te) {
				return err
			}
			if d.Settled() {
				return nil
			}
			// The handler's context may be spent (timeout); the dead letter
			// must still be written.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if dlErr := deadLetterRetrying(dctx, d, dl, te); dlErr != nil {
				l := logFor(ctx, d)
				l.Error().Err(dlErr).Str("reason", te.Reason).Msg("dead letter failed, handing message back")
				_ = d.NakWithDelay(time.Second)
				return nil
			}
			l := logFor(ctx, d)
			l.Warn().Err(te.Err).Str("reason", te.Reason).Str("subject", d.Msg.Subject()).Uint64("deliveries", d.NumDelivered()).Msg("message dead-lettered")
			_ = d.Term(te.Reason)
			return nil
		}
	}
}

// unavailableWaits space the in-place retries of a dead letter while
// JetStream is unavailable: about 20 s in all, longer than an election.
var unavailableWaits = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}

// deadLetterRetrying writes the dead letter, retrying in place (keeping the
// message alive) while JetStream is unavailable: a nak at the last delivery
// would leave the message undelivered for good, since the server stops
// delivering at MaxDeliver.
func deadLetterRetrying(ctx context.Context, d *Delivery, dl DeadLetterFunc, te *TerminalError) error {
	err := dl(ctx, d, te.Reason, te.Err)
	for _, wait := range unavailableWaits {
		if err == nil || !natsx.Unavailable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		_ = d.InProgress()
		err = dl(ctx, d, te.Reason, te.Err)
	}
	return err
}

// Backoff is capped exponential backoff with full jitter.
type Backoff struct {
	Base, Max time.Duration
}

// Delay for the n-th delivery (1-based).
func (b Backoff) Delay(n uint64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := b.Base << min(n-1, 20)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	return d/2 + rand.N(d/2+1)
}

// unavailableBackoff spaces the redeliveries of a message whose handler
// found JetStream unavailable (natsx.Unavailable): the four naks before
// MaxDeliver (5) add up to 12 to 24 s, past a leader election (4 to 9 s),
// where the ordinary backoff would dead-letter it within 1.5 s.
var unavailableBackoff = Backoff{Base: 2 * time.Second, Max: 10 * time.Second}

// Retry naks transient errors with backoff until maxDeliver deliveries, then
// turns them terminal ("max_deliveries") for the dead-letter middleware.
// With inPlace, a handler that found JetStream unavailable (a leader
// election, a partition) is first run again here, keeping its message
// alive, at unavailableWaits (about 20 s in all): it goes on within a
// second or two of JetStream answering again, where a nak waits out its
// delay (up to 10 s), and an outage no longer uses up the message's
// deliveries. Only for handlers that check what an earlier run published
// (Delivery.Rerun), as they do for a redelivery.
func Retry(log zerolog.Logger, maxDeliver int, b Backoff, inPlace bool) Middleware {
	return retryWith(plainLog(log), maxDeliver, b, inPlaceWaits(inPlace))
}

// inPlaceWaits is the schedule of in-place retries: none, or unavailableWaits.
func inPlaceWaits(inPlace bool) []time.Duration {
	if inPlace {
		return unavailableWaits
	}
	return nil
}

func retryWith(logFor logFunc, maxDeliver int, b Backoff, waits []time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) error {
			err := retryInPlace(ctx, logFor, next, d, next(ctx, d), waits)
			if err == nil || d.Settled() {
				return err
			}
			var te *TerminalError
			if errors.As(err, &te) {
				return err
			}
			if maxDeliver > 0 && d.NumDelivered() >= uint64(maxDeliver) {
				return Terminal("max_deliveries", err)
			}
			delay := b.Delay(d.NumDelivered())
			if natsx.Unavailable(err) {
				delay = max(delay, unavailableBackoff.Delay(d.NumDelivered()))
			}
			var tr *TransientError
			if errors.As(err, &tr) && tr.RetryAfter > 0 {
				delay = tr.RetryAfter
			}
			l := logFor(ctx, d)
			l.Warn().Err(err).Str("subject", d.Msg.Subject()).Uint64("deliveries", d.NumDelivered()).Dur("retry_in", delay).Msg("transient failure, retrying")
			_ = d.NakWithDelay(delay)
			return nil
		}
	}
}

// retryInPlace runs next again after each of waits while its error says
// JetStream is unavailable, unless the stage is stopping, within twice the
// waits' sum in all: a run may take up to its handler's timeout.
func retryInPlace(ctx context.Context, logFor logFunc, next Handler, d *Delivery, err error, waits []time.Duration) error {
	if err == nil || len(waits) == 0 {
		return err // the common case: nothing to retry
	}
	var total time.Duration
	for _, w := range waits {
		total += w
	}
	until := time.Now().Add(2 * total)
	for _, wait := range waits {
		var te *TerminalError
		if err == nil || d.Settled() || errors.As(err, &te) || !natsx.Unavailable(err) || time.Now().Add(wait).After(until) {
			return err
		}
		if d.reruns.Load() == 0 {
			l := logFor(ctx, d)
			l.Warn().Err(err).Str("subject", d.Msg.Subject()).Msg("jetstream unavailable; retrying in place")
		}
		_ = d.InProgress()
		select {
		case <-ctx.Done():
			return err
		case <-d.stopping:
			return err
		case <-time.After(wait):
		}
		d.reruns.Add(1)
		err = next(ctx, d)
	}
	return err
}

// Timeout bounds one handler call.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, del *Delivery) error {
			if d <= 0 {
				return next(ctx, del)
			}
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, del)
		}
	}
}

// Stage is the standard middleware stack for a stage's handler. Recover
// sits just inside DeadLetter so a panicking (poison) message is dead-lettered
// at once instead of being redelivered until MaxDeliver.
func Stage(log zerolog.Logger, h Handler, dl DeadLetterFunc, maxDeliver int, timeout time.Duration) Handler {
	return stage(plainLog(log), h, dl, maxDeliver, timeout, true)
}

// StageWithLog is Stage whose own lines (retries, dead letters, panics)
// take their logger from logFor, called only when a line is written: a
// stage that knows how to name the request in a message gets its identity
// on those lines without building a logger per message.
func StageWithLog(logFor func(ctx context.Context, d *Delivery) *zerolog.Logger, h Handler, dl DeadLetterFunc, maxDeliver int, timeout time.Duration) Handler {
	return stage(logFor, h, dl, maxDeliver, timeout, true)
}

func stage(logFor logFunc, h Handler, dl DeadLetterFunc, maxDeliver int, timeout time.Duration, inPlace bool) Handler {
	return Chain(h,
		deadLetterWith(logFor, dl),
		recoverWith(logFor),
		retryWith(logFor, maxDeliver, Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second}, inPlaceWaits(inPlace)),
		Timeout(timeout),
	)
}

// RunOptions tunes a consumer loop.
type RunOptions struct {
	// Concurrency is the number of messages handled at once by this replica.
	Concurrency int
	// Grace is how long in-flight handlers may finish after ctx is done.
	Grace time.Duration
	// Stage labels the stage metrics (default: the consumer's name).
	Stage string
	// Metrics receives the stage's queue wait, handler time and outcomes
	// (NewStageMetrics; nil: not exported).
	Metrics prometheus.Registerer
	// PullExpiry is how long each pull request waits on the server
	// (default DefaultPullExpiry); the server heartbeats at half of it.
	PullExpiry time.Duration
}

// DefaultPullExpiry bounds how long a stage can wait on a pull request the
// server lost (its consumer leader moved, or its node was partitioned
// away): the client notices after two missed heartbeats (= one expiry,
// heartbeats come at half of it) and pulls again. nats.go's default of 30 s
// stalled every stage for about 30 s after each partition; 5 s costs one
// pull request per consumer every 5 s while idle.
const DefaultPullExpiry = 5 * time.Second

// Run consumes until ctx is done. On shutdown it stops pulling, lets
// in-flight handlers finish within Grace, and hands buffered messages back
// with a Nak so another replica takes them at once.
func Run(ctx context.Context, log zerolog.Logger, cons jetstream.Consumer, h Handler, o RunOptions) error {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.PullExpiry <= 0 {
		o.PullExpiry = DefaultPullExpiry
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(o.Concurrency*2), jetstream.PullExpiry(o.PullExpiry))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	stage := o.Stage
	if ci := cons.CachedInfo(); stage == "" && ci != nil {
		stage = ci.Name
	}
	sm, err := NewStageMetrics(o.Metrics)
	if err != nil {
		return fmt.Errorf("stage metrics: %w", err)
	}
	obsv := sm.forStage(stage)
	// Handlers run on a context that outlives ctx by Grace, so a vendor call
	// in flight at SIGTERM can finish and be acked.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var wg sync.WaitGroup
	var closedErr, lastErr atomic.Pointer[error] // how the iterator closed; the last error it reported before
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msg, err := iter.Next()
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					closedErr.CompareAndSwap(nil, &err)
					return
				}
				if err != nil {
					// Only a closed iterator ends a worker. A missed heartbeat
					// (and every other error Next reports on a live iterator)
					// is one the iterator recovers from by pulling again; on a
					// terminal one (consumer deleted) it stops itself, and the
					// next Next says closed.
					log.Warn().Err(err).Msg("consumer iterator reported an error; consuming on")
					lastErr.Store(&err)
					continue
				}
				start := time.Now()
				d := &Delivery{Msg: msg, received: start, stopping: ctx.Done()}
				d.Meta, _ = msg.Metadata()
				if ctx.Err() != nil {
					_ = d.NakWithDelay(0) // hand back: we are shutting down
					continue
				}
				handle(workCtx, log, h, d)
				if obsv != nil {
					var stored time.Time
					if d.Meta != nil {
						stored = d.Meta.Timestamp
					}
					obsv.observe(d, stored, start, time.Now())
				}
			}
		}()
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
	case <-done:
		// Every worker stopped while the stage should run: the consumer was
		// deleted (or its stream), or the connection closed. Returning says
		// so, so the caller can recreate it or exit, instead of idling.
		iter.Stop()
		if ctx.Err() == nil {
			var err error = jetstream.ErrMsgIteratorClosed
			if e := closedErr.Load(); e != nil {
				err = *e
			}
			if e := lastErr.Load(); e != nil {
				return fmt.Errorf("consumer stopped: %w (last reported: %w)", err, *e)
			}
			return fmt.Errorf("consumer stopped: %w", err)
		}
	}
	iter.Drain()
	select {
	case <-done:
	case <-time.After(o.Grace):
		log.Warn().Dur("grace", o.Grace).Msg("in-flight work did not finish in time; it will be redelivered")
		cancelWork()
		iter.Stop()
		<-done
	}
	return nil
}

// handle runs h on d and settles d if h did not: ack on success, a nak on an
// error (only reachable without the Retry middleware).
func handle(ctx context.Context, log zerolog.Logger, h Handler, d *Delivery) {
	if err := h(withDelivery(ctx, d), d); err != nil && !d.Settled() {
		_ = d.NakWithDelay(time.Second)
		return
	}
	if !d.Settled() {
		if err := d.Ack(); err != nil {
			log.Warn().Err(err).Msg("ack failed; message will be redelivered and deduplicated downstream")
		}
	}
}
