package executor

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// handToGate offers a result to a gate on core NATS (natsx.SubjectGateJudge)
// and reports whether a gate stored its verdict on llm.verdicts. When it
// did not (no gate answered in GateTimeout, or one refused), outs[0] gets
// the header the caller publishes it to llm.results with; the gate derives
// the verdict's id from the work alone, so a verdict stored by a gate whose
// answer was lost is not stored twice. Until one of the two ways has stored
// the result, the executor holds its message (kept alive), so a crash on
// either side loses nothing. Only a lone result goes this way: a target
// not called goes straight to the router as before.
func (e *Executor) handToGate(ctx context.Context, d *pipeline.Delivery, log func() *zerolog.Logger, outs []pipeline.Outbound) bool {
	if len(outs) != 1 || outs[0].Subject != natsx.SubjectResults {
		return false
	}
	stop := keepAlive(ctx, d, e.cfg.AckWait/3)
	defer stop()
	// Offered on a redelivery too (the executor's own naks, for a retry's
	// delay or the vendor's limits, make those common): judging is
	// repeatable, the verdict's id the same, and a repeated call after a
	// crash has an attempt id of its own.
	handled, hdr := e.toGate.Offer(ctx, outs[0].Data, outs[0].Header, false, log)
	outs[0].Header = hdr
	return handled
}
