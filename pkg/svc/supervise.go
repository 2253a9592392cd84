package svc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// Stage is one supervised unit of a process: a stage's consumer loop, the
// ledger, an executor replica.
type Stage struct {
	// Name is unique within the process ("router", "executor openai/0").
	Name string
	Run  func(context.Context) error
	// Stream and Consumer name the durable consumer the stage owns (Run
	// creates it). Empty: the stage owns none.
	Stream, Consumer string
}

// maxBackoff bounds the wait between restarts of a failing stage.
const maxBackoff = 30 * time.Second

// Go runs st under supervision until the runtime closes or the returned
// cancel is called. /healthz reports the stage: it fails while the stage
// is not running, while its consumer is missing or stuck. A stage whose
// Run returns while it should run (its consumer or stream was deleted, its
// iterator failed), or whose consumer disappears, is restarted after the
// streams are recreated; Run recreates its consumer.
func (rt *Runtime) Go(st Stage) context.CancelFunc {
	rt.keepAnchor(st.Stream)
	ctx, cancel := context.WithCancel(rt.ctx)
	s := &supervised{rt: rt, st: st, log: rt.Logger(st.Name)}
	s.set(errors.New("starting"))
	check := "stage " + st.Name
	rt.Health.Set(check, s.check)
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		defer rt.Health.Remove(check) // stopped on purpose
		s.loop(ctx)
	}()
	return cancel
}

// keepAnchor keeps the anchor of a work-queue stream on file storage that
// a stage of this process consumes (natsx.KeepAnchor), once per stream,
// until the runtime closes.
func (rt *Runtime) keepAnchor(stream string) {
	if stream == "" || !rt.anchorsOn {
		return
	}
	anchored := false
	for _, sc := range rt.topology.Streams() {
		if sc.Name == stream {
			anchored = sc.Retention == jetstream.WorkQueuePolicy && sc.Storage == jetstream.FileStorage && sc.AllowRollup
		}
	}
	rt.anchorsMu.Lock()
	defer rt.anchorsMu.Unlock()
	if !anchored || rt.anchors[stream] {
		return
	}
	if rt.anchors == nil {
		rt.anchors = map[string]bool{}
	}
	rt.anchors[stream] = true
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		natsx.KeepAnchor(rt.ctx, rt.JS, stream, rt.component("anchor"), natsx.AnchorOptions{})
	}()
}

type supervised struct {
	rt  *Runtime
	st  Stage
	log zerolog.Logger
	mu  sync.Mutex
	err error
}

func (s *supervised) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *supervised) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *supervised) loop(ctx context.Context) {
	backoff := time.Second
	for {
		started := time.Now()
		runCtx, stopRun := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.st.Run(runCtx) }()
		reason := s.watch(runCtx, stopRun, done)
		stopRun()
		if reason == nil {
			return
		}
		s.set(reason)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > maxBackoff {
			backoff = time.Second
		}
		s.log.Error().Err(reason).Dur("restart_in", backoff).Msg("stage stopped; recreating its streams and restarting it")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		if err := s.rt.ensureTopology(ctx); err != nil {
			s.log.Error().Err(err).Msg("recreating streams failed")
		}
	}
}

// watch returns why the run must restart, or nil once ctx is done and the
// run has returned. It waits for the run to return in every case.
func (s *supervised) watch(ctx context.Context, stopRun func(), done <-chan error) error {
	seen := false
	every := 100 * time.Millisecond // until the consumer exists
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("returned")
			}
			return fmt.Errorf("stopped: %w", err)
		case <-timer.C:
		}
		if s.st.Consumer == "" {
			s.set(nil)
			every = s.rt.watchEvery
			timer.Reset(every)
			continue
		}
		err := s.consumerState(ctx)
		switch {
		case err == nil:
			seen = true
			every = s.rt.watchEvery
		case errors.Is(err, errConsumerGone) && seen:
			// Deleted under a running stage: stop this run (it may not
			// notice, e.g. a fetch loop that keeps retrying); the next run
			// recreates the consumer.
			s.set(err)
			stopRun()
			<-done
			return err
		}
		s.set(err)
		timer.Reset(every)
	}
}

var errConsumerGone = errors.New("consumer missing")

// consumerState is nil when the stage's consumer exists and is not stuck.
func (s *supervised) consumerState(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.rt.watchEvery)
	defer cancel()
	c, err := s.rt.JS.Consumer(cctx, s.st.Stream, s.st.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: %s on stream %s: %v", errConsumerGone, s.st.Consumer, s.st.Stream, err)
	}
	if err != nil {
		return fmt.Errorf("consumer %s: %w", s.st.Consumer, err)
	}
	info := c.CachedInfo()
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return nil
	}
	last := info.Created
	for _, t := range []*time.Time{info.Delivered.Last, info.AckFloor.Last} {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	if idle := time.Since(last); idle > s.rt.stuckAfter {
		return fmt.Errorf("stuck: %d waiting, %d unacked, nothing delivered or acked for %s", info.NumPending, info.NumAckPending, idle.Round(time.Second))
	}
	return nil
}

func (rt *Runtime) ensureTopology(ctx context.Context) error {
	return natsx.EnsureTopology(ctx, rt.JS, rt.topology)
}
