// Package gate judges every attempt's answer, taken from an executor's
// direct hand-off (llm.gate.judge) or from llm.results. It hands the work
// with its verdict back to a router, directly (llm.router.verdict) or on
// llm.verdicts; the router alone decides what follows (reply, retry,
// escalation, hedge winner) and sends the attempt's row to the ledger when
// the request (or its hedge branch) ends.
package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// Config tunes the gate consumer (env prefix SWITCHYARD_GATE_).
type Config struct {
	Consumer string `envconfig:"CONSUMER" default:"gate"`
	pipeline.ConsumerSettings
	// Direct serves executors' direct hand-offs on llm.gate.judge
	// (direct.go) besides the llm.results queue.
	Direct bool `envconfig:"DIRECT" default:"true"`
	// DirectRouter hands each verdict to a router directly
	// (llm.router.verdict) and stores it on llm.verdicts only when no
	// router has handled it within RouterTimeout, which stays below the
	// executors' wait for the gate (SWITCHYARD_EXECUTOR_GATE_TIMEOUT, 2s).
	DirectRouter  bool          `envconfig:"DIRECT_ROUTER" default:"true"`
	RouterTimeout time.Duration `envconfig:"ROUTER_TIMEOUT" default:"1s"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	errs := c.ConsumerSettings.Validate("SWITCHYARD_GATE", c.Consumer)
	if c.DirectRouter && c.RouterTimeout <= 0 {
		errs = append(errs, errors.New("SWITCHYARD_GATE_ROUTER_TIMEOUT: must be positive"))
	}
	return errors.Join(errs...)
}

// Deps are the gate's collaborators.
type Deps struct {
	Log     zerolog.Logger
	NC      *nats.Conn
	JS      jetstream.JetStream
	Policy  policy.Source
	Now     func() time.Time
	Metrics prometheus.Registerer
}

// Gate is the quality gate stage.
type Gate struct {
	cfg      Config
	d        Deps
	pub      pipeline.Publisher
	verdicts *prometheus.CounterVec
	// toRouter hands verdicts to a router directly.
	toRouter *pipeline.DirectHandOff
}

// New builds the stage.
func New(cfg Config, d Deps) (*Gate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil || d.Policy == nil {
		return nil, errors.New("gate: JS and Policy are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	g := &Gate{cfg: cfg, d: d, pub: pipeline.Publisher{JS: d.JS, NC: d.NC},
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_gate_verdicts_total", Help: "Gate verdicts."}, []string{"verdict"}),
	}
	handoffs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_gate_router_handoffs_total",
		Help: "Verdicts handed to the router, by path: direct (a router handled it) or stream (llm.verdicts)."}, []string{"path"})
	g.toRouter = &pipeline.DirectHandOff{NC: d.NC, Subject: natsx.SubjectRouterVerdict, Enabled: cfg.DirectRouter, Timeout: cfg.RouterTimeout, Paths: handoffs}
	if d.Metrics != nil {
		for _, c := range []prometheus.Collector{g.verdicts, handoffs} {
			if err := d.Metrics.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

// ConsumerConfig reads every attempt result.
func (g *Gate) ConsumerConfig() jetstream.ConsumerConfig {
	return g.cfg.ConsumerSettings.ConsumerConfig(g.cfg.Consumer, "quality gate: judges attempt results", natsx.SubjectResults)
}

// handleTimeout bounds one judgement with its verdict's publish.
const handleTimeout = 10 * time.Second

// Run consumes until ctx is done; with Direct it also answers executors'
// direct hand-offs meanwhile.
func (g *Gate) Run(ctx context.Context) error {
	cons, err := g.d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamPipeline, g.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("gate consumer: %w", err)
	}
	if g.cfg.Direct && g.d.NC != nil {
		stop, err := g.serveDirect(ctx)
		if err != nil {
			return err
		}
		defer stop()
	}
	h := pipeline.RequestStage(g.d.Log, g.Handle, pipeline.HandToRouter(g.pub, natsx.StageGate, g.d.Log), g.cfg.MaxDeliver, handleTimeout, true)
	return pipeline.Run(ctx, g.d.Log, cons, h, pipeline.RunOptions{Concurrency: g.cfg.Concurrency, Stage: natsx.StageGate, Metrics: g.d.Metrics})
}

// Handle judges one attempt result from llm.results.
func (g *Gate) Handle(ctx context.Context, d *pipeline.Delivery) error {
	return g.handle(ctx, d.Data(), d.Rerun())
}

// handleDirect judges one result an executor handed directly.
func (g *Gate) handleDirect(ctx context.Context, data []byte) error {
	return g.handle(ctx, data, false)
}

// handle is one judgement, whichever way the result came: decode, judge,
// hand the verdict to a router directly, else store it on llm.verdicts
// (marked when a router may have handled it already). rerun: an earlier
// judgement of this result may have handed its verdict to a router.
func (g *Gate) handle(ctx context.Context, data []byte, rerun bool) error {
	w, err := pipeline.DecodeWork(data)
	if err != nil {
		return err
	}
	outs, err := g.judge(w)
	if err != nil {
		return err
	}
	handled, hdr := g.toRouter.Offer(ctx, outs[0].Data, outs[0].Header, rerun, pipeline.LazyRequestLogger(g.d.Log, w))
	if handled {
		return nil
	}
	outs[0].Header = hdr
	return g.pub.Send(ctx, outs)
}

// judge hands the work, with the verdict, back to the router on
// llm.verdicts. The gate decides nothing about what follows: not the
// reply, not an escalation, not a hedge winner. The router learns the
// attempt's latency and verdict from the verdict itself (router/observe.go).
func (g *Gate) judge(w *envelope.Work) ([]pipeline.Outbound, error) {
	if w.Current == nil || len(w.Attempts) == 0 {
		return nil, pipeline.Terminal("malformed_work", errors.New("result without an attempt"))
	}
	last := &w.Attempts[len(w.Attempts)-1]
	res := w.Current
	switch {
	case !res.OK():
		g.verdicts.WithLabelValues("vendor_error").Inc()
	default:
		var opts Options
		if route, ok := g.d.Policy.Current().Route(w.Route); ok {
			opts.Toxicity = route.Toxicity
		}
		v := Judge(&w.Request, res, opts)
		q := v.Quality
		w.Quality, w.Degraded = &q, v.Truncated
		if q.Passed {
			g.verdicts.WithLabelValues("passed").Inc()
		} else {
			last.Outcome = envelope.OutcomeQualityFailed
			g.verdicts.WithLabelValues("failed").Inc()
			log := pipeline.RequestLogger(g.d.Log, w)
			log.Debug().Str("vendor", last.Vendor).Str("model", last.Model).Str("reason", q.Reason).Msg("answer failed the quality gate")
		}
	}
	// The verdict's id is per call: a call repeated after a redelivery
	// (its own attempt id) is judged anew.
	verdict, err := pipeline.WorkOut(natsx.SubjectVerdicts, w.Key+":verdict:"+pipeline.CallID(w, last, res), w)
	if err != nil {
		return nil, err
	}
	return []pipeline.Outbound{verdict}, nil
}
