package executor

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// directPause is how long results skip the direct hand-off after a gate
// did not answer one (none runs, an older gate without the door, a gate
// cut off): each such try would cost GateTimeout or a round trip.
const directPause = 10 * time.Second

// handToGate offers a result to a gate on core NATS (natsx.SubjectGateJudge)
// and reports whether a gate stored its verdict on llm.verdicts. When it
// did not (no gate answered in GateTimeout, or one refused), the caller
// publishes the result on llm.results as before, under its message id; the
// gate derives the verdict's id from the work alone, so a verdict stored by
// a gate whose answer was lost is not stored twice. Until one of the two
// ways has stored the result, the executor holds its message (kept alive),
// so a crash on either side loses nothing. Only a lone result goes this
// way: a target not called goes straight to the router as before.
func (e *Executor) handToGate(ctx context.Context, d *pipeline.Delivery, log func() *zerolog.Logger, outs []pipeline.Outbound) bool {
	if len(outs) != 1 || outs[0].Subject != natsx.SubjectResults {
		return false
	}
	if !e.cfg.DirectGate || e.d.NC == nil || time.Now().UnixNano() < e.directPausedUntil.Load() {
		e.handoffs.WithLabelValues("stream").Inc()
		return false
	}
	stop := keepAlive(ctx, d, e.cfg.AckWait/3)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.GateTimeout)
	defer cancel()
	resp, err := e.d.NC.RequestMsgWithContext(ctx, &nats.Msg{Subject: natsx.SubjectGateJudge, Data: outs[0].Data, Header: outs[0].Header})
	switch {
	case err != nil:
		if e.directPausedUntil.Swap(time.Now().Add(directPause).UnixNano()) < time.Now().UnixNano() {
			// Once per pause, not per result.
			log().Warn().Err(err).Dur("pause", directPause).Msg("no gate answered a direct hand-off; results go to llm.results meanwhile")
		}
	case resp.Header.Get(natsx.HeaderGateError) != "":
		log().Debug().Str("gate_error", resp.Header.Get(natsx.HeaderGateError)).Msg("gate refused a direct hand-off; the result goes to llm.results")
	default:
		e.handoffs.WithLabelValues("direct").Inc()
		return true
	}
	e.handoffs.WithLabelValues("stream").Inc()
	return false
}
