// Package benchfloor serves Switchyard's NATS contract with the least any
// implementation of it must do per request, so that a benchmark can tell
// what the contract costs from what the pipeline's design adds:
//
//   - the client's JetStream publish to llm.requests, stored in the same
//     file-backed work-queue stream `up` uses (LLM_REQUESTS) and acked;
//   - one pull consumer delivering it, with an explicit ack;
//   - the envelope validated and decoded by Switchyard's own code
//     (envelope.Validator);
//   - one call to the vendor through Switchyard's own adapter and pooled
//     HTTP client;
//   - the reply envelope, encoded by Switchyard's own code, published on
//     the request's reply subject; with StoredReplies, stored first as the
//     contract requires of a reply on llm.replies.<tenant>.<id> (persisted
//     for at least an hour).
//
// Nothing else: no classification, routing, breakers, limits, budgets,
// quality gate, telemetry, ledger or tenant dedupe. It is a
// measuring stick for scripts/bench-floor.sh, not a product: a crash
// between the reply and the ack answers twice, and a vendor error is
// answered, never retried.
package benchfloor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
)

// Config is the floor's set-up.
type Config struct {
	StoreDir string // JetStream's file store
	Port     int    // the embedded server's client port (-1: any free one)
	// VendorBaseURL is the OpenAI-compatible vendor's API root, e.g.
	// http://127.0.0.1:21281/v1.
	VendorBaseURL string
	Model         string // the model named in the vendor call
	Concurrency   int    // requests handled at once per stage (and the vendor's connection pool)
	// Hops is how many durable hand-offs a request takes after its
	// delivery from llm.requests, before the vendor call: each is a
	// JetStream publish (acked, with a Nats-Msg-Id) to a work-queue stream
	// on the same server, a pull delivery to the next stage and its ack,
	// which is what a stage of a pipeline costs at the least. 0: one stage.
	Hops int
	// DoorHops is how many direct hand-offs on core NATS follow, before
	// the vendor call, through Switchyard's own pipeline.DirectHandOff and
	// pipeline.DirectDoor (a request to the next door's queue group,
	// answered once that door's own hand-off is answered): what a hop like
	// llm.router.route costs, next to a durable one.
	DoorHops int
	// StoredReplies stores each reply addressed to llm.replies.> in
	// LLM_REPLIES as `up` does (a JetStream publish with a Nats-Msg-Id to
	// the store subject; the stream delivers it on llm.replies.<tenant>.<id>
	// once stored) and acks the request after the store's ack. Off, the
	// reply is only published on core NATS, which the contract does not
	// allow for that subject: the difference is what the stored reply
	// costs.
	StoredReplies bool
	// HTTPAddr, when set, serves an OpenAI chat completion endpoint there
	// in front of the contract (see httpFront): the least an HTTP door
	// does, to set beside Switchyard's edge and an HTTP gateway. Needs
	// StoredReplies.
	HTTPAddr string
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("store dir: required"))
	}
	if c.VendorBaseURL == "" {
		errs = append(errs, errors.New("vendor base URL: required"))
	}
	if c.Model == "" {
		errs = append(errs, errors.New("model: required"))
	}
	if c.Hops < 0 {
		errs = append(errs, fmt.Errorf("hops: %d is negative", c.Hops))
	}
	if c.DoorHops < 0 {
		errs = append(errs, fmt.Errorf("door hops: %d is negative", c.DoorHops))
	}
	if c.HTTPAddr != "" && !c.StoredReplies {
		errs = append(errs, errNoHTTPWithoutStore)
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency: %d is not at least 1", c.Concurrency))
	}
	return errors.Join(errs...)
}

// embeddedServer is what the floor uses of natsserver.Start's server.
type embeddedServer interface {
	nats.InProcessConnProvider
	ClientURL() string
	Shutdown()
	WaitForShutdown()
}

// Floor is a running floor.
type Floor struct {
	cfg       Config
	server    embeddedServer
	nc        *nats.Conn
	js        jetstream.JetStream
	validator *envelope.Validator
	vendor    provider.Adapter
	// doors[i] hands a request to door i+1 (floor.door.<i+1>).
	doors []*pipeline.DirectHandOff
	// quiet is the doors' writers' logger: nothing, built once rather
	// than per hand-off.
	quiet func() *zerolog.Logger
	http  *httpFront // nil without HTTPAddr
}

// Start starts the embedded server and the stream the client publishes to.
func Start(ctx context.Context, cfg Config) (f *Floor, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ns, err := natsserver.Start(natsserver.Options{Port: cfg.Port, StoreDir: cfg.StoreDir})
	if err != nil {
		return nil, err
	}
	nop := zerolog.Nop()
	f = &Floor{cfg: cfg, server: ns, quiet: func() *zerolog.Logger { return &nop }}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// The same buffered in-process connection `up`'s stages use.
	if f.nc, err = nats.Connect(ns.ClientURL(), natsx.BufferedInProcess(ns)); err != nil {
		return nil, err
	}
	if f.js, err = jetstream.New(f.nc); err != nil {
		return nil, err
	}
	if f.validator, err = envelope.NewValidator(); err != nil {
		return nil, err
	}
	if f.vendor, err = adapters.New("openai_compatible", adapters.Config{BaseURL: cfg.VendorBaseURL, APIKey: "floor", MaxConcurrency: cfg.Concurrency}); err != nil {
		return nil, err
	}
	for _, sc := range natsx.DefaultTopology().Streams() {
		// LLM_REQUESTS (and LLM_REPLIES, when stored) as `up` has it, and
		// LLM_PIPELINE's settings for the hops.
		switch sc.Name {
		case natsx.StreamPipeline:
			sc.Name, sc.Subjects = hopStream, []string{hopPrefix + ">"}
		case natsx.StreamRequests:
		case natsx.StreamReplies:
			if !cfg.StoredReplies {
				continue
			}
		default:
			continue
		}
		if _, err := f.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	if cfg.HTTPAddr != "" {
		if err := f.startHTTP(cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("http front: %w", err)
		}
	}
	return f, nil
}

// ClientURL is where clients connect.
func (f *Floor) ClientURL() string { return f.server.ClientURL() }

// Close stops the connection and the server.
func (f *Floor) Close() {
	if f.http != nil {
		f.http.close()
	}
	if f.nc != nil {
		f.nc.Close()
	}
	f.server.Shutdown()
	f.server.WaitForShutdown()
}

// The hops' work-queue stream and subjects (hopPrefix + the stage number),
// and the doors' subjects (doorPrefix + the door number).
const (
	hopStream  = "FLOOR_HOPS"
	hopPrefix  = "floor.hop."
	doorPrefix = "floor.door."
	// doorTimeout is the intake's SWITCHYARD_INTAKE_ROUTER_TIMEOUT.
	doorTimeout = 2 * time.Second
)

// serveDoors starts the door hops and returns what stops them.
func (f *Floor) serveDoors(ctx context.Context) (stop func(), err error) {
	paths := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "floor_door_handoffs_total", Help: "Door hand-offs by path."}, []string{"path"})
	f.doors = make([]*pipeline.DirectHandOff, f.cfg.DoorHops)
	for i := range f.doors {
		f.doors[i] = &pipeline.DirectHandOff{NC: f.nc, Subject: doorPrefix + strconv.Itoa(i+1), Enabled: true, Timeout: doorTimeout, Paths: paths}
	}
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	for i := range f.doors {
		door := pipeline.DirectDoor{NC: f.nc, Subject: f.doors[i].Subject, Queue: "floor", Stage: "floor" + strconv.Itoa(i+1),
			Concurrency: f.cfg.Concurrency, Timeout: doorTimeout, Log: zerolog.Nop(),
			Handle: func(ctx context.Context, data []byte) error { return f.throughDoors(ctx, i+1, data) }}
		s, err := door.Serve(ctx)
		if err != nil {
			stop()
			return nil, err
		}
		stops = append(stops, s)
	}
	return stop, nil
}

// throughDoors hands data to door from+1 and on, and reports whether every
// door answered that it handled it.
func (f *Floor) throughDoors(ctx context.Context, from int, data []byte) error {
	if from >= len(f.doors) {
		return nil
	}
	if handled, _ := f.doors[from].Offer(ctx, data, nil, false, f.quiet); !handled {
		return fmt.Errorf("door %d did not answer", from+1)
	}
	return nil
}

// Run answers requests until ctx ends.
func (f *Floor) Run(ctx context.Context) error {
	js := f.js
	stopDoors, err := f.serveDoors(ctx)
	if err != nil {
		return err
	}
	defer stopDoors()
	done := make(chan struct{})
	workers := 0
	for stage := 0; stage <= f.cfg.Hops; stage++ {
		stream, subject := natsx.StreamRequests, natsx.SubjectRequests
		if stage > 0 {
			stream, subject = hopStream, hopPrefix+strconv.Itoa(stage)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: "floor" + strconv.Itoa(stage), FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 2048,
		})
		if err != nil {
			return fmt.Errorf("consumer of %s: %w", subject, err)
		}
		iter, err := cons.Messages(jetstream.PullMaxMessages(2 * f.cfg.Concurrency))
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); iter.Stop() }()
		handle := func(msg jetstream.Msg) { f.answer(ctx, msg) }
		if stage < f.cfg.Hops {
			next := hopPrefix + strconv.Itoa(stage+1)
			handle = func(msg jetstream.Msg) { f.handOn(ctx, js, next, msg) }
		}
		for range f.cfg.Concurrency {
			workers++
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					msg, err := iter.Next()
					if err != nil {
						return // stopped
					}
					handle(msg)
				}
			}()
		}
	}
	for range workers {
		<-done
	}
	return nil
}

// handOn stores the message for the next stage, then acks it; a failed
// store leaves it to be redelivered.
func (f *Floor) handOn(ctx context.Context, js jetstream.JetStream, next string, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	out := &nats.Msg{Subject: next, Data: msg.Data(), Header: nats.Header{}}
	out.Header.Set(jetstream.MsgIDHeader, next+"."+strconv.FormatUint(md.Sequence.Stream, 10))
	if _, err := js.PublishMsg(ctx, out); err != nil {
		_ = msg.Nak()
		return
	}
	_ = msg.Ack()
}

// answer replies to one request and acks it. A reply that cannot be sent
// leaves the request to be redelivered; an envelope without an id or a
// tenant has no reply subject and is only acked (the pipeline
// dead-letters it).
func (f *Floor) answer(ctx context.Context, msg jetstream.Msg) {
	reply, subject := f.reply(ctx, msg.Data())
	if subject != "" {
		data, err := envelope.MarshalInternal(reply)
		if err != nil {
			_ = msg.Term()
			return
		}
		if err := f.send(ctx, subject, data); err != nil {
			_ = msg.Nak()
			return
		}
	}
	_ = msg.Ack()
}

// send publishes a reply: stored first when StoredReplies says so and the
// subject is llm.replies.>, on core NATS otherwise.
func (f *Floor) send(ctx context.Context, subject string, data []byte) error {
	store, stored := natsx.ReplyPublishSubject(subject)
	if !f.cfg.StoredReplies || !stored {
		return f.nc.Publish(subject, data)
	}
	out := &nats.Msg{Subject: store, Data: data, Header: nats.Header{}}
	// The subject names the tenant and the request: one stored reply per
	// request within the dedupe window, as the pipeline's key gives.
	out.Header.Set(jetstream.MsgIDHeader, store)
	_, err := f.js.PublishMsg(ctx, out)
	return err
}

func (f *Floor) reply(ctx context.Context, data []byte) (*envelope.Reply, string) {
	req, err := f.validator.DecodeRequest(data)
	if err != nil {
		id, tenant, replyTo := envelope.PeekIdentity(data)
		subject := replyTo
		if subject == "" && id != "" && tenant != "" {
			subject = envelope.DefaultReplySubject(tenant, id)
		}
		return &envelope.Reply{ID: id, Tenant: tenant, Status: envelope.StatusError,
			Error: &envelope.Error{Code: envelope.CodeInvalidRequest, Message: err.Error()}}, subject
	}
	if err := f.throughDoors(ctx, 0, data); err != nil {
		return &envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusError,
			Error: &envelope.Error{Code: envelope.CodeInternal, Message: err.Error()}}, req.ReplySubject()
	}
	start := time.Now()
	resp, err := f.vendor.Complete(ctx, &provider.Request{Model: f.cfg.Model, Messages: req.Messages, MaxTokens: req.MaxTokens, Temperature: req.Temperature})
	latency := time.Since(start).Milliseconds()
	if err != nil {
		return &envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusError,
			Error: &envelope.Error{Code: envelope.CodeAllVendorsFailed, Message: err.Error()}}, req.ReplySubject()
	}
	attempt := envelope.AttemptResult{Attempt: 1, Vendor: "floor", Model: f.cfg.Model, Outcome: envelope.OutcomeOK, LatencyMS: latency, Usage: resp.Usage}
	return &envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusOK, Content: resp.Content, FinishReason: resp.FinishReason,
		Vendor: "floor", Model: f.cfg.Model, Route: req.Route, Usage: resp.Usage, LatencyMS: latency,
		Attempts: []envelope.AttemptResult{attempt}}, req.ReplySubject()
}
