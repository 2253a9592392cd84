// Package edge is Switchyard's HTTP front door: it speaks the OpenAI Chat
// Completions and Anthropic Messages APIs, so an application that uses
// either official SDK switches to Switchyard by changing its base URL and
// key. The key names the tenant (pkg/apikey); the edge turns each call into
// a request envelope published to llm.requests exactly as a NATS client
// does, waits for the reply on the request's reply subject and maps it back
// into the API's own response or error format.
package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// MaxEnvelopeBytes is the intake's payload limit: a bigger envelope is
// refused here with 413 instead of being published to be refused.
const MaxEnvelopeBytes = 256 << 10

// Config is the edge's configuration (SWITCHYARD_EDGE_*).
type Config struct {
	// Addr is where the HTTP API listens; empty: no edge.
	Addr string `envconfig:"ADDR" default:"127.0.0.1:8080"`
	// MaxBodyBytes bounds a request body (413 above).
	MaxBodyBytes int64 `envconfig:"MAX_BODY_BYTES" default:"262144"`
	// MaxHeaderBytes bounds a request's headers (431 above).
	MaxHeaderBytes int `envconfig:"MAX_HEADER_BYTES" default:"65536"`
	// ReadHeaderTimeout and ReadTimeout cut off a client that sends its
	// headers or body too slowly; IdleTimeout closes an idle keep-alive
	// connection.
	ReadHeaderTimeout time.Duration `envconfig:"READ_HEADER_TIMEOUT" default:"5s"`
	ReadTimeout       time.Duration `envconfig:"READ_TIMEOUT" default:"30s"`
	IdleTimeout       time.Duration `envconfig:"IDLE_TIMEOUT" default:"60s"`
	// RequestTimeout is a request's deadline (timeout_ms) unless the client
	// sets X-Switchyard-Timeout-Ms.
	RequestTimeout time.Duration `envconfig:"REQUEST_TIMEOUT" default:"30s"`
	// ShutdownTimeout bounds how long a stopping edge waits for requests in
	// flight to be answered.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("SWITCHYARD_EDGE_%s: must be positive", name))
		}
	}
	positive("READ_HEADER_TIMEOUT", c.ReadHeaderTimeout)
	positive("READ_TIMEOUT", c.ReadTimeout)
	positive("IDLE_TIMEOUT", c.IdleTimeout)
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.RequestTimeout <= 0 || c.RequestTimeout > 600*time.Second {
		errs = append(errs, errors.New("SWITCHYARD_EDGE_REQUEST_TIMEOUT: must be within (0, 600s]"))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("SWITCHYARD_EDGE_MAX_BODY_BYTES: must be at least 1024"))
	}
	if c.MaxHeaderBytes < 4096 {
		errs = append(errs, errors.New("SWITCHYARD_EDGE_MAX_HEADER_BYTES: must be at least 4096"))
	}
	return errors.Join(errs...)
}

// Deps are the edge's collaborators.
type Deps struct {
	Log     zerolog.Logger
	NC      *nats.Conn
	JS      jetstream.JetStream
	Policy  *policy.Store
	Keys    *apikey.Store
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// Edge is the HTTP API.
type Edge struct {
	cfg      Config
	d        Deps
	ln       net.Listener
	addr     string
	requests *prometheus.CounterVec
	limits   *keyLimits
	keys     *apikey.View // d.Keys in memory, current while Run runs
	replies  *replyMux
	running  sync.WaitGroup // Run, until its shutdown is complete
	// lookEvery is how often a request waiting for its live reply looks
	// for it in LLM_REPLIES (storedLookEvery when zero).
	lookEvery time.Duration
}

// New listens on cfg.Addr at once, so a taken address fails the start.
func New(cfg Config, d Deps) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e := &Edge{cfg: cfg, d: d, ln: ln, addr: ln.Addr().String(), limits: newKeyLimits(d.JS, d.Now), keys: apikey.NewView(d.Keys), replies: newReplyMux(d.NC),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_edge_requests_total",
			Help: "HTTP API requests by API and status code."}, []string{"api", "status"})}
	if d.Metrics != nil {
		if err := d.Metrics.Register(e.requests); err != nil {
			_ = ln.Close()
			return nil, err
		}
	}
	return e, nil
}

// Addr is the address the edge listens on.
func (e *Edge) Addr() string { return e.addr }

// Run serves until ctx is done, then shuts down gracefully: no new
// connections, requests in flight answered (within ShutdownTimeout).
func (e *Edge) Run(ctx context.Context) error {
	e.running.Add(1)
	defer e.running.Done()
	ln := e.ln
	e.ln = nil
	if ln == nil { // restarted by the supervisor: listen again
		var err error
		if ln, err = net.Listen("tcp", e.addr); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: e.cfg.ReadHeaderTimeout,
		ReadTimeout:       e.cfg.ReadTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		MaxHeaderBytes:    e.cfg.MaxHeaderBytes,
	}
	// Keys are looked up in memory while the view's watch runs (until
	// then, and if it breaks, each lookup reads the bucket).
	vctx, vcancel := context.WithCancel(ctx)
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); e.keys.Run(vctx) }()
	defer func() { vcancel(); <-viewDone }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	e.d.Log.Info().Str("addr", e.addr).Msg("http edge serving")
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-served
	return nil
}

// Wait returns once Run has returned: every request in flight at shutdown
// has been answered (or ShutdownTimeout passed).
func (e *Edge) Wait() { e.running.Wait() }

// Handler routes the two APIs.
func (e *Edge) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { e.serve(w, r, openAI{}) })
	mux.HandleFunc("GET /v1/models", e.models)
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) { e.serve(w, r, anthropic{}) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id := newID()
		w.Header().Set(HeaderRequestID, id)
		e.writeError(w, openAI{}, &apiError{Status: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("%s %s is not an endpoint of this API", r.Method, r.URL.Path)})
	})
	return mux
}

// HeaderRequestID is on every response: the request's id in the pipeline
// (its replies, ledger rows and dead letters carry it).
const HeaderRequestID = "x-switchyard-request-id"

// api is one wire dialect: how a body becomes a request envelope and how
// a reply or an error is written back.
type api interface {
	name() string
	key(r *http.Request) string
	decode(body []byte, req *envelope.Request) (*apiError, bool)
	response(rep *envelope.Reply, created time.Time) any
	errorBody(err *apiError) any
}

// serve is one call of either API, streamed or not.
func (e *Edge) serve(w http.ResponseWriter, r *http.Request, a api) {
	start := e.d.Now()
	req := &envelope.Request{ID: newID()}
	status := http.StatusOK
	defer func() { e.requests.WithLabelValues(a.name(), strconv.Itoa(status)).Inc() }()
	fail := func(err *apiError) {
		status = err.Status
		w.Header().Set(HeaderRequestID, req.ID)
		e.writeError(w, a, err)
		ev := e.d.Log.Debug()
		if err.Status >= 500 {
			ev = e.d.Log.Warn()
		}
		ev.Str("api", a.name()).Str("request_id", req.ID).Str("tenant", req.Tenant).Int("status", err.Status).
			Str("code", err.Code).Str("error", err.Message).Msg("edge request failed")
	}
	rec, err := e.keys.Lookup(r.Context(), a.key(r))
	if errors.Is(err, apikey.ErrUnknown) {
		fail(&apiError{Status: http.StatusUnauthorized, Code: "invalid_api_key", Message: "missing, unknown or revoked API key"})
		return
	}
	if err != nil {
		fail(&apiError{Status: http.StatusInternalServerError, Code: envelope.CodeInternal, Message: "the key store is unavailable"})
		return
	}
	req.Tenant = rec.Tenant
	body, berr := readBody(w, r, e.cfg.MaxBodyBytes)
	if berr != nil {
		fail(berr)
		return
	}
	aerr, stream := a.decode(body, req)
	if aerr != nil {
		fail(aerr)
		return
	}
	if aerr := applyHeaders(r.Header, req, e.cfg.RequestTimeout); aerr != nil {
		fail(aerr)
		return
	}
	if aerr := resolveModel(e.d.Policy.Current(), rec, req); aerr != nil {
		fail(aerr)
		return
	}
	// Only a request that goes to the pipeline counts against the key's limits.
	release, aerr := e.limits.admit(r.Context(), rec, req.ID, e.d.Now().Add(time.Duration(req.TimeoutMS)*time.Millisecond+2*time.Second))
	if aerr != nil {
		fail(aerr)
		return
	}
	defer release()
	if stream {
		if aerr := e.streamed(w, r, a, req, body, start); aerr != nil {
			fail(aerr)
		}
		return
	}
	rep, aerr := e.submit(r.Context(), req)
	if aerr != nil {
		fail(aerr)
		return
	}
	w.Header().Set(HeaderRequestID, req.ID)
	if rep.Status != envelope.StatusOK {
		fail(replyError(rep, e.d.Now()))
		return
	}
	w.Header().Set("x-switchyard-route", rep.Route)
	w.Header().Set("x-switchyard-cost-usd", strconv.FormatFloat(rep.CostUSD, 'f', 6, 64))
	if rep.Degraded {
		w.Header().Set("x-switchyard-degraded", "true")
	}
	writeJSON(w, http.StatusOK, a.response(rep, start))
	e.d.Log.Debug().Str("api", a.name()).Str("request_id", req.ID).Str("tenant", req.Tenant).Str("vendor", rep.Vendor).
		Str("model", rep.Model).Dur("took", e.d.Now().Sub(start)).Msg("edge request answered")
}

// submit publishes the envelope to llm.requests and waits for its reply.
// The reply subscription is made before publishing (a core subscription
// sees only later messages): the process's shared one (replyMux), or for
// a request with an idempotency key, whose reply a retry on any replica
// must find in LLM_REPLIES at llm.replies.<tenant>.<id>, one of its own.
// The publish does not follow the client's context: once accepted the
// request runs to its end (billing, telemetry) even if the client goes
// away; only the wait is abandoned.
func (e *Edge) submit(ctx context.Context, req *envelope.Request) (*envelope.Reply, *apiError) {
	var replies <-chan *nats.Msg
	if req.Metadata[metaIdempotent] != "" {
		sub, err := subscribeReply(e.d.NC, req.ReplySubject())
		if err != nil {
			return nil, internal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		// A repeated idempotency key is not processed again (the intake
		// dedupes it): answer with the stored reply when there is one.
		if rep, ok := e.storedReply(ctx, req.ReplySubject()); ok {
			return rep, nil
		}
		replies = sub.ch
	} else {
		req.ReplyTo = e.replies.subject(req.Tenant, req.ID)
		ch, done, err := e.replies.expect(req.ReplyTo)
		if err != nil {
			return nil, internal(err)
		}
		defer done()
		replies = ch
	}
	data, aerr := envelopeBytes(req)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := e.publish(ctx, req, data); aerr != nil {
		return nil, aerr
	}
	// The pipeline replies deadline_exceeded itself at timeout_ms; wait a
	// little longer so that reply, with its usage, is what the client gets.
	wait := time.NewTimer(time.Duration(req.TimeoutMS)*time.Millisecond + 2*time.Second)
	defer wait.Stop()
	// LLM_REPLIES delivers a reply once stored; a leader that dies between
	// the two loses the live copy (docs/subjects.md), so a slow answer is
	// also looked for in the stream now and then, and once more at the end.
	every := e.lookEvery
	if every <= 0 {
		every = storedLookEvery
	}
	look := time.NewTicker(every)
	defer look.Stop()
	var msg *nats.Msg
	for msg == nil {
		select {
		case msg = <-replies:
		case <-ctx.Done():
			return nil, &apiError{Status: 499, Code: "client_closed", Message: "the client went away"}
		case <-look.C:
			if rep, ok := e.lookStored(ctx, req.ReplySubject()); ok {
				return rep, nil
			}
		case <-wait.C:
			if rep, ok := e.lookStored(ctx, req.ReplySubject()); ok {
				return rep, nil
			}
			return nil, &apiError{Status: http.StatusGatewayTimeout, Code: envelope.CodeDeadlineExceeded, Message: "no reply within the request's deadline"}
		}
	}
	var rep envelope.Reply
	if err := envelope.UnmarshalInternal(msg.Data, &rep); err != nil {
		return nil, internal(fmt.Errorf("decode reply: %w", err))
	}
	return &rep, nil
}

// storedLookEvery is how often a request still waiting for its live reply
// looks for it in LLM_REPLIES: rarely, since the live copy is lost only
// with a stream leader.
const storedLookEvery = 5 * time.Second

// lookStored is storedReply bounded by its own short timeout.
func (e *Edge) lookStored(ctx context.Context, subject string) (*envelope.Reply, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return e.storedReply(ctx, subject)
}

// storedReply reads a reply already in LLM_REPLIES.
func (e *Edge) storedReply(ctx context.Context, subject string) (*envelope.Reply, bool) {
	s, err := e.d.JS.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		return nil, false
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return nil, false
	}
	var rep envelope.Reply
	if envelope.UnmarshalInternal(m.Data, &rep) != nil {
		return nil, false
	}
	return &rep, true
}

func (e *Edge) writeError(w http.ResponseWriter, a api, err *apiError) {
	if err.RetryAfter > 0 {
		w.Header().Set("retry-after", fmt.Sprint(err.RetryAfter))
	}
	w.Header().Set("x-switchyard-error-code", err.Code)
	status := err.Status
	if status == 499 { // nobody is listening; write nothing useful
		return
	}
	writeJSON(w, status, a.errorBody(err))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	buf, err := readAll(r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: envelope.CodePayloadTooLarge,
				Message: fmt.Sprintf("request body over %d bytes", limit)}
		}
		return nil, &apiError{Status: http.StatusBadRequest, Code: envelope.CodeInvalidRequest, Message: "reading the request body: " + err.Error()}
	}
	return buf, nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "edge-" + hex.EncodeToString(b[:])
}

func internal(err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Code: envelope.CodeInternal, Message: err.Error()}
}
