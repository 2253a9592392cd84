package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"
)

// GroupCommit stores many small messages of one subject as one: the
// events handed to Store while a batch is being stored wait, and go
// together as the next batch (a JSON array of them) once that one's ack is
// in. Each Store returns when the batch holding its event is stored, or
// with the batch's error, so a caller that must not go on before its event
// is stored (the router's reply after its request event) still does not,
// and pays a share of one stream write instead of a whole one.
//
// No goroutine of its own and no timer: the Store that finds nobody
// storing stores a batch itself, then hands the next batch to the first
// event waiting for it. Alone, an event is stored as a batch of one, as
// soon as it would have been stored on its own.
type GroupCommit struct {
	// Publish stores one batch (the events' JSON array) on the group's
	// subject; one call at a time.
	Publish func(ctx context.Context, batch []byte) error
	// Max is the most events in one batch (0: 256).
	Max int
	// Timeout bounds one batch's publish, whatever the context of the
	// Store that publishes it (which may be cancelled while others wait
	// on the same batch); 0: 10 s.
	Timeout time.Duration

	// OnStored, when set, is told the size of every batch stored.
	OnStored func(events int)

	mu    sync.Mutex
	queue []*groupEvent
	busy  bool   // a Store is publishing a batch
	buf   []byte // the batch being built; only the publishing Store uses it
}

type groupEvent struct {
	data []byte
	// result gets the event's batch's outcome, or lead: the event's Store
	// publishes the next batch.
	result chan groupResult
}

type groupResult struct {
	err  error
	lead bool
}

// Store stores data (one JSON value) in a batch and returns once that
// batch is stored, or with its error.
func (g *GroupCommit) Store(ctx context.Context, data []byte) error {
	ev := &groupEvent{data: data, result: make(chan groupResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, ev)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead {
		// Not cancelled with ctx: the event is queued and its batch will be
		// published with its own timeout; leaving early would leave the
		// lead to nobody.
		r := <-ev.result
		if !r.lead {
			return r.err
		}
	}
	return g.publishNext(ctx)
}

// publishNext publishes the queued events (the caller's own first among
// them), answers every Store in the batch and hands the lead to the first
// event still waiting, if any: also when Publish panics, so that the
// others are not left waiting for a lead nobody holds.
func (g *GroupCommit) publishNext(ctx context.Context) (err error) {
	limit := g.Max
	if limit <= 0 {
		limit = 256
	}
	g.mu.Lock()
	n := min(len(g.queue), limit)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()
	err = errBatchNotStored
	defer func() {
		for _, ev := range batch[1:] {
			ev.result <- groupResult{err: err}
		}
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.busy = false
			g.mu.Unlock()
			return
		}
		next := g.queue[0]
		g.mu.Unlock()
		next.result <- groupResult{lead: true}
	}()

	g.buf = append(g.buf[:0], '[')
	for i, ev := range batch {
		if i > 0 {
			g.buf = append(g.buf, ',')
		}
		g.buf = append(g.buf, ev.data...)
	}
	g.buf = append(g.buf, ']')
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err = g.Publish(pctx, g.buf)
	if err == nil && g.OnStored != nil {
		g.OnStored(len(batch))
	}
	return err
}

// errBatchNotStored is what the events of a batch whose publish panicked
// get.
var errBatchNotStored = Transient(errors.New("telemetry batch not stored: its publish panicked"), 0)
