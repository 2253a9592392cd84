package pipeline

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/obs"
)

// A direct hand-off gives a stage's output to the next stage on core NATS
// (request-reply, the readers' queue group) instead of through a work-queue
// stream: the reader handles it exactly as it would the stream's message
// and answers once what it publishes is stored. Only when no reader says
// so does the writer publish to the stream, marked natsx.HeaderTriedDirect.
// The writer holds its own message meanwhile, so a crash on either side
// loses nothing. What it saves is the stream's round for one hop: a
// write, its acknowledgement, a delivery, an ack and a removal from the
// work queue (docs/performance.md, "Direct hand-offs").

// drainFor bounds how long a stopping door answers what it has received.
const drainFor = 5 * time.Second

// DirectDoor serves one stage's direct hand-offs.
type DirectDoor struct {
	NC      *nats.Conn
	Subject string // natsx.SubjectRouterRoute, natsx.SubjectGateJudge, natsx.SubjectRouterVerdict
	Queue   string // the stage's replicas share the hand-offs
	Stage   string // the metrics' stage label
	// Concurrency is the number of workers, so the hand-offs handled at
	// once; as many more wait in their queue, the rest in the
	// subscription's buffer.
	Concurrency int
	// Timeout bounds one handling (what it publishes included).
	Timeout time.Duration
	Log     zerolog.Logger
	// Handle is the stage's handling of one message's payload; an error
	// is the answer's natsx.HeaderDirectError (the writer then uses the
	// stream, where the stage's middleware retries or dead-letters it).
	Handle func(ctx context.Context, data []byte) error
	// Metrics receives switchyard_stage_direct_total{stage,outcome} and
	// switchyard_stage_direct_seconds{stage} (nil: recorded, exported
	// nowhere).
	Metrics prometheus.Registerer
}

// doorMetrics are one door's curried metrics.
type doorMetrics struct {
	handled, refused prometheus.Counter
	seconds          prometheus.Observer
}

func (dd DirectDoor) metrics() (*doorMetrics, error) {
	answers, err := obs.Register(dd.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_stage_direct_total",
		Help: "Direct hand-offs a stage answered (llm.router.route, llm.gate.judge, llm.router.verdict), by outcome: handled (what it publishes is stored) or refused (the writer uses the stream)."},
		[]string{"stage", "outcome"}))
	if err != nil {
		return nil, err
	}
	seconds, err := obs.Register(dd.Metrics, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_stage_direct_seconds",
		Help: "Time a stage took for one direct hand-off, what it publishes stored included.", Buckets: stageBuckets}, []string{"stage"}))
	if err != nil {
		return nil, err
	}
	return &doorMetrics{handled: answers.WithLabelValues(dd.Stage, "handled"), refused: answers.WithLabelValues(dd.Stage, "refused"),
		seconds: seconds.WithLabelValues(dd.Stage)}, nil
}

// Serve answers hand-offs until stop is called. stop drains: what the door
// has received is handled and answered first.
func (dd DirectDoor) Serve(ctx context.Context) (stop func(), err error) {
	m, err := dd.metrics()
	if err != nil {
		return nil, err
	}
	// A fixed set of workers rather than a goroutine per hand-off: a new
	// goroutine grows its stack again for every message (the encoder's
	// depth), which cost 6% of `up`'s CPU at 1,500 req/s.
	workers := max(dd.Concurrency, 1)
	queue := make(chan *nats.Msg, workers)
	var inflight sync.WaitGroup
	// A stopping stage still finishes what it received.
	actx := context.WithoutCancel(ctx)
	for range workers {
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			for msg := range queue {
				dd.answer(actx, msg, m)
			}
		}()
	}
	// closing guards the queue against a callback still running after an
	// Unsubscribe that did not wait for it. What arrives then goes
	// unanswered: its writer uses the stream.
	var closing sync.RWMutex
	closed := false
	closeQueue := func() {
		closing.Lock()
		defer closing.Unlock()
		if !closed {
			closed = true
			close(queue)
		}
	}
	sub, err := dd.NC.QueueSubscribe(dd.Subject, dd.Queue, func(msg *nats.Msg) {
		closing.RLock()
		defer closing.RUnlock()
		if !closed {
			queue <- msg
		}
	})
	if err != nil {
		closeQueue()
		inflight.Wait()
		return nil, fmt.Errorf("direct hand-offs on %s: %w", dd.Subject, err)
	}
	return func() {
		if err := sub.Drain(); err == nil {
			for end := time.Now().Add(drainFor); sub.IsValid() && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		_ = sub.Unsubscribe()
		closeQueue()
		inflight.Wait()
	}, nil
}

// answer handles one hand-off and tells the writer whether it is done. A
// panic is a refusal too: the message then goes to the stream, whose
// middleware dead-letters a poison.
func (dd DirectDoor) answer(ctx context.Context, m *nats.Msg, dm *doorMetrics) {
	start := time.Now()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		hctx, cancel := context.WithTimeout(ctx, dd.Timeout)
		defer cancel()
		return dd.Handle(hctx, m.Data)
	}()
	dm.seconds.Observe(time.Since(start).Seconds())
	reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
	if err != nil {
		dm.refused.Inc()
		reply.Header.Set(natsx.HeaderDirectError, err.Error())
		dd.Log.Debug().Err(err).Str("subject", dd.Subject).Msg("direct hand-off refused; the writer uses the stream")
	} else {
		dm.handled.Inc()
	}
	if m.Reply == "" {
		return
	}
	// A lost answer costs a second handling from the stream, marked as a
	// possible rerun.
	if err := m.RespondMsg(reply); err != nil {
		dd.Log.Warn().Err(err).Str("subject", dd.Subject).Msg("direct hand-off answer not sent")
	}
}

// directPause is how long a writer uses the stream alone after a hand-off
// nobody answered (no reader subscribed, an older reader without the door,
// a reader cut off): each such try would cost the timeout or a round trip.
const directPause = 10 * time.Second

// DirectHandOff is a writer's side of one door.
type DirectHandOff struct {
	NC      *nats.Conn // nil: never direct
	Subject string
	Enabled bool
	Timeout time.Duration
	// Paths counts the messages by the way they went: direct or stream.
	Paths       *prometheus.CounterVec
	pausedUntil atomic.Int64 // unix nanoseconds
	// The two series of Paths, looked up once rather than per message.
	curry          sync.Once
	direct, stream prometheus.Counter
}

// count adds one message to the series of the way it went.
func (h *DirectHandOff) count(direct bool) {
	h.curry.Do(func() { h.direct, h.stream = h.Paths.WithLabelValues("direct"), h.Paths.WithLabelValues("stream") })
	if direct {
		h.direct.Inc()
	} else {
		h.stream.Inc()
	}
}

// Offer hands a message to the door and reports whether a reader handled
// it. When none did, the caller publishes to the stream with streamHdr:
// hdr marked natsx.HeaderTriedDirect when a reader may have handled the
// message after all (its answer lost or late) or rerun says the caller's
// own earlier run may have handed it, so the reader checks what such a run
// published. A rerun is never offered: the stream's checks are the ones
// that know about earlier runs.
func (h *DirectHandOff) Offer(ctx context.Context, data []byte, hdr nats.Header, rerun bool, log func() *zerolog.Logger) (handled bool, streamHdr nats.Header) {
	if h == nil {
		return false, hdr
	}
	if !h.Enabled || h.NC == nil || rerun || h.Paused() {
		h.count(false)
		if rerun {
			return false, MarkTriedDirect(hdr)
		}
		return false, hdr
	}
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	resp, err := h.NC.RequestMsgWithContext(ctx, &nats.Msg{Subject: h.Subject, Data: data, Header: hdr})
	switch {
	case err != nil:
		if h.pausedUntil.Swap(time.Now().Add(directPause).UnixNano()) < time.Now().UnixNano() {
			// Once per pause, not per message.
			log().Warn().Err(err).Str("subject", h.Subject).Dur("pause", directPause).Msg("no reader answered a direct hand-off; using the stream meanwhile")
		}
	case resp.Header.Get(natsx.HeaderDirectError) != "":
		log().Debug().Str("subject", h.Subject).Str("direct_error", resp.Header.Get(natsx.HeaderDirectError)).Msg("direct hand-off refused; using the stream")
	default:
		h.count(true)
		return true, nil
	}
	h.count(false)
	return false, MarkTriedDirect(hdr)
}

// Paused reports whether the hand-off uses the stream alone for now.
func (h *DirectHandOff) Paused() bool { return time.Now().UnixNano() < h.pausedUntil.Load() }

// MarkTriedDirect returns hdr (a copy: the caller's map is left alone) with
// natsx.HeaderTriedDirect: the reader handles the stream's copy as a rerun.
func MarkTriedDirect(hdr nats.Header) nats.Header {
	out := make(nats.Header, len(hdr)+1)
	for k, v := range hdr {
		out[k] = v
	}
	out.Set(natsx.HeaderTriedDirect, "1")
	return out
}
