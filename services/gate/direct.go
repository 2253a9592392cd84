package gate

import (
	"context"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// serveDirect answers executors' direct hand-offs on natsx.SubjectGateJudge
// (queue group natsx.QueueGate: each result reaches one gate replica) until
// stop is called. Each result is judged and its verdict stored on
// llm.verdicts exactly as one taken from llm.results, under the same
// message id: a result that also arrives on llm.results (the executor gave
// up waiting for this answer) yields no second verdict.
func (g *Gate) serveDirect(ctx context.Context) (stop func(), err error) {
	return pipeline.DirectDoor{NC: g.d.NC, Subject: natsx.SubjectGateJudge, Queue: natsx.QueueGate, Stage: natsx.StageGate,
		Concurrency: g.cfg.Concurrency, Timeout: handleTimeout, Log: g.d.Log, Handle: g.handleDirect, Metrics: g.d.Metrics}.Serve(ctx)
}
