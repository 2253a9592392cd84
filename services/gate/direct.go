package gate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// drainFor bounds how long a stopping gate answers the direct hand-offs
// it has already received.
const drainFor = 5 * time.Second

// serveDirect answers executors' direct hand-offs on natsx.SubjectGateJudge
// (queue group natsx.QueueGate, so each result reaches one gate replica)
// until stop is called. Each result is judged and its verdict stored on
// llm.verdicts exactly as one taken from llm.results, under the same
// message id: a result that also arrives on llm.results (the executor gave
// up waiting for this answer) yields no second verdict. The answer is empty
// once the verdict is stored and carries natsx.HeaderGateError otherwise;
// either way the executor keeps its own message until one of the two ways
// has the result stored, so nothing is lost when a gate dies mid-answer.
//
// Why a direct door: a result on llm.results costs a stream write, its
// acknowledgement, a delivery, an ack and a removal; a request-reply costs
// two core messages (docs/performance.md, "Direct hand-off to the gate").
func (g *Gate) serveDirect(ctx context.Context) (stop func(), err error) {
	slots := make(chan struct{}, g.cfg.Concurrency)
	var inflight sync.WaitGroup
	// A stopping gate still stores the verdicts of what it received.
	actx := context.WithoutCancel(ctx)
	sub, err := g.d.NC.QueueSubscribe(natsx.SubjectGateJudge, natsx.QueueGate, func(m *nats.Msg) {
		// Blocking here holds the rest in the subscription's buffer
		// rather than starting more than Concurrency judgements.
		slots <- struct{}{}
		inflight.Add(1)
		go func() {
			defer func() { <-slots; inflight.Done() }()
			g.answer(actx, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("gate direct hand-offs: %w", err)
	}
	return func() {
		if err := sub.Drain(); err == nil {
			for end := time.Now().Add(drainFor); sub.IsValid() && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		_ = sub.Unsubscribe()
		inflight.Wait()
	}, nil
}

// answer judges one directly handed result and tells the executor whether
// the verdict is stored. A panic is an answer too (the result then goes to
// llm.results, where the stage's middleware dead-letters a poison).
func (g *Gate) answer(ctx context.Context, m *nats.Msg) {
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		hctx, cancel := context.WithTimeout(ctx, handleTimeout)
		defer cancel()
		return g.handle(hctx, m.Data)
	}()
	reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
	if err != nil {
		g.direct.WithLabelValues("refused").Inc()
		reply.Header.Set(natsx.HeaderGateError, err.Error())
		g.d.Log.Debug().Err(err).Msg("direct hand-off refused; the executor hands the result to llm.results")
	} else {
		g.direct.WithLabelValues("stored").Inc()
	}
	if m.Reply == "" {
		return
	}
	// A lost answer costs a second judgement on llm.results, whose verdict
	// the stream drops as a duplicate.
	if err := m.RespondMsg(reply); err != nil {
		g.d.Log.Warn().Err(err).Msg("direct hand-off answer not sent")
	}
}
