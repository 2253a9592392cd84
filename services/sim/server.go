// Package sim is the vendor simulator: one HTTP listener speaking OpenAI Chat
// Completions, OpenRouter, Anthropic Messages and Gemini generateContent on
// loopback, with a scenario (latency, errors, outages, rate limits, invalid
// JSON, prompt caching) that can be changed while it runs, and per-model call
// counts.
//
// Paths (base URLs from BaseURL):
//
//	POST /openai/v1/chat/completions             (any /{name}/v1/chat/completions: OpenAI-compatible vendor {name})
//	POST /openrouter/api/v1/chat/completions
//	POST /anthropic/v1/messages
//	POST /gemini/v1beta/models/{model}:generateContent
//	POST /gemini/v1beta/models/{model}:streamGenerateContent?alt=sse
//
// "stream": true (OpenAI, OpenRouter, Anthropic) and streamGenerateContent
// answer with the vendor's event stream (see stream.go).
//
//	GET|PUT|PATCH /_sim/scenario, GET /_sim/calls, POST /_sim/reset, GET /_sim/health
package sim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Vendor kinds with a dedicated protocol flavour.
const (
	VendorOpenAI     = "openai"
	VendorOpenRouter = "openrouter"
	VendorAnthropic  = "anthropic"
	VendorGemini     = "gemini"
)

// maxBodyBytes caps request bodies (413 beyond).
const maxBodyBytes = 32 << 20

// BaseURL returns the adapter base URL of a vendor on a simulator listening
// on addr (host:port, or a full http:// URL). Any name other than the four
// known ones is served as an OpenAI-compatible vendor of that name.
func BaseURL(addr, vendorKind string) string {
	root := strings.TrimRight(addr, "/")
	if !strings.HasPrefix(root, "http://") && !strings.HasPrefix(root, "https://") {
		root = "http://" + root
	}
	switch vendorKind {
	case VendorOpenRouter:
		return root + "/openrouter/api/v1"
	case VendorAnthropic:
		return root + "/anthropic"
	case VendorGemini:
		return root + "/gemini"
	case "", "openai_compatible":
		return root + "/openai/v1"
	default:
		return root + "/" + vendorKind + "/v1"
	}
}

// Server is the simulator.
type Server struct {
	log   zerolog.Logger
	mux   *http.ServeMux
	scMu  sync.Mutex // serialises scenario changes; reads are lock-free
	sc    atomic.Pointer[compiled]
	reg   atomic.Pointer[registry]
	reqID atomic.Uint64

	srvMu sync.Mutex
	srv   *http.Server
}

// New returns a simulator running sc. An invalid scenario is logged and
// replaced by the empty one (always-healthy vendors); call sc.Validate first
// to reject it instead.
func New(sc Scenario, log zerolog.Logger) *Server {
	s := &Server{log: log, mux: http.NewServeMux()}
	if err := sc.Validate(); err != nil {
		log.Error().Err(err).Msg("invalid scenario ignored")
		sc = Scenario{}
	}
	s.sc.Store(compile(sc.clone(), nil, time.Now()))
	s.reg.Store(newRegistry())
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("POST /{vendor}/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		v := r.PathValue("vendor")
		if strings.HasPrefix(v, "_") {
			http.NotFound(w, r)
			return
		}
		p := protoOpenAI
		if v == VendorOpenRouter {
			p = protoOpenRouter
		}
		s.complete(w, r, p, v, "")
	})
	s.mux.HandleFunc("POST /openrouter/api/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		s.complete(w, r, protoOpenRouter, VendorOpenRouter, "")
	})
	s.mux.HandleFunc("POST /anthropic/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		s.complete(w, r, protoAnthropic, VendorAnthropic, "")
	})
	gemini := func(w http.ResponseWriter, r *http.Request) {
		target := r.PathValue("target")
		i := strings.LastIndexByte(target, ':')
		method := ""
		if i >= 0 {
			method = target[i+1:]
		}
		switch {
		case method == "streamGenerateContent" && r.URL.Query().Get("alt") != "sse":
			writeError(w, &request{proto: protoGemini}, apiError{status: 400, retryAfter: -1,
				msg: "The simulator streams only server-sent events: add alt=sse."})
			return
		case method != "generateContent" && method != "streamGenerateContent":
			writeError(w, &request{proto: protoGemini}, apiError{status: 404, retryAfter: -1,
				msg: "Method not found or not supported by the simulator (only generateContent and streamGenerateContent)."})
			return
		}
		s.complete(w, r, protoGemini, VendorGemini, target[:i])
	}
	s.mux.HandleFunc("POST /gemini/v1beta/models/{target}", gemini)
	s.mux.HandleFunc("POST /gemini/v1/models/{target}", gemini)

	s.mux.HandleFunc("GET /_sim/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /_sim/scenario", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, s.Scenario())
	})
	s.mux.HandleFunc("PUT /_sim/scenario", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			controlError(w, 400, err)
			return
		}
		sc, err := ParseScenario(body)
		if err == nil {
			err = s.SetScenario(sc)
		}
		if err != nil {
			controlError(w, 400, err)
			return
		}
		writeJSON(w, 200, s.Scenario())
	})
	s.mux.HandleFunc("PATCH /_sim/scenario", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			controlError(w, 400, err)
			return
		}
		if _, err := s.PatchScenario(body); err != nil {
			controlError(w, 400, err)
			return
		}
		writeJSON(w, 200, s.Scenario())
	})
	s.mux.HandleFunc("GET /_sim/calls", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, s.Calls())
	})
	s.mux.HandleFunc("POST /_sim/reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		writeJSON(w, 200, map[string]string{"status": "reset"})
	})
}

// Handler serves the vendor protocols and the control endpoint.
func (s *Server) Handler() http.Handler { return s.mux }

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
// It returns the bound address.
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	s.srvMu.Lock()
	s.srv = srv
	s.srvMu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("sim server stopped")
		}
	}()
	bound := ln.Addr().String()
	s.log.Info().Str("addr", bound).Msg("vendor simulator listening")
	return bound, nil
}

// Shutdown stops the listener and waits for in-flight calls until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Close stops the listener and drops open connections.
func (s *Server) Close() error {
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// Scenario returns a copy of the running scenario.
func (s *Server) Scenario() Scenario { return s.sc.Load().scenario.clone() }

// SetScenario replaces the scenario. Relative outage starts count from now
// (except outages identical to the ones already installed).
func (s *Server) SetScenario(sc Scenario) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	s.scMu.Lock()
	defer s.scMu.Unlock()
	s.sc.Store(compile(sc.clone(), s.sc.Load(), time.Now()))
	s.log.Info().Interface("scenario", sc).Msg("scenario set")
	return nil
}

// PatchScenario applies an RFC 7386 JSON merge patch to the scenario.
func (s *Server) PatchScenario(patch []byte) (Scenario, error) {
	s.scMu.Lock()
	defer s.scMu.Unlock()
	cur := s.sc.Load()
	sc, err := PatchScenario(cur.scenario, patch)
	if err != nil {
		return Scenario{}, err
	}
	s.sc.Store(compile(sc, cur, time.Now()))
	s.log.Info().RawJSON("patch", patch).Msg("scenario patched")
	return sc.clone(), nil
}

// Calls returns the call counts since start or the last Reset.
func (s *Server) Calls() Calls { return s.reg.Load().snapshot(time.Now()) }

// Reset clears call counts and rate-limit windows.
func (s *Server) Reset() {
	s.reg.Store(newRegistry())
	s.log.Info().Msg("calls reset")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func controlError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// golden is the golden-ratio fraction driving evenly spread error injection.
const golden = 0.6180339887498949

// complete is the shared pipeline of every completion endpoint.
func (s *Server) complete(w http.ResponseWriter, r *http.Request, p protocol, vendor, pathModel string) {
	now := time.Now()
	reg := s.reg.Load()
	req := &request{proto: p, vendor: vendor, model: pathModel, id: s.reqID.Add(1)}
	req.stream = p == protoGemini && strings.HasSuffix(r.URL.Path, ":streamGenerateContent")
	fail := func(e apiError) {
		writeError(w, req, e)
		model := req.model
		if model == "" {
			model = "-"
		}
		reg.get(vendor, model).record(e.status, 0, 0, 0, now)
	}
	if e := authenticate(r, p); e != nil {
		fail(*e)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return // client went away
	}
	if len(body) > maxBodyBytes {
		fail(apiError{status: 413, msg: "Request body too large."})
		return
	}
	if e := parse(r, req, body); e != nil {
		fail(*e)
		return
	}
	ms := reg.get(vendor, req.model)
	beh := s.sc.Load().lookup(vendor, req.model)
	mk := parseMarkers(req.prompt)
	if mk.delayMS > 0 && !sleep(r.Context(), time.Duration(mk.delayMS)*time.Millisecond) {
		ms.record(499, 0, 0, 0, now)
		return
	}
	if req.prefill && (mk.noPrefill || beh.rejectPrefill) {
		fail(prefillRejection(p))
		return
	}
	g := generate(req, mk, beh)
	if mk.vendorError != "" || (beh.contextWindow > 0 && g.in+req.maxTokens > beh.contextWindow) {
		kind, window := mk.vendorError, beh.contextWindow
		if kind == "" {
			kind = errContextLength
		}
		if window == 0 {
			window = defaultContextWindow
		}
		if e, ok := vendorError(p, kind, max(g.in+req.maxTokens, window+1), window); ok {
			fail(e)
			return
		}
	}

	status := 0
	switch {
	case mk.status != 0:
		status = mk.status
	case beh.status != 0:
		status = beh.status
	default:
		status = beh.outageStatus(time.Now())
	}
	var lim *limitState
	if status == 0 && (beh.rpm > 0 || beh.tpm > 0) {
		st := ms.lim.admit(time.Now(), beh.rpm, beh.tpm, g.in+g.out)
		lim = &st
		if st.limited {
			status = 429
		}
	}
	injected := false
	if status == 0 && beh.errorRate > 0 {
		seq := ms.errSeq.Add(1)
		x := float64(seq)*golden + unit(fnv64a(vendor, req.model))
		if x-float64(int64(x)) < beh.errorRate {
			status, injected = beh.errorStatus, true
		}
	}
	if status == 0 && req.stream {
		// A stream's latency is spent after its headers (see stream).
		if lim != nil {
			setRateHeaders(w, p, lim, time.Now())
		}
		ms.record(200, g.in, g.billedOut(), g.cached, now)
		prompt := req.prompt
		ms.lastPrompt.Store(&prompt)
		s.stream(w, r, req, g, beh, mk)
		return
	}
	if status == 0 || injected {
		d := beh.latencyBase + beh.perToken*time.Duration(g.out)
		if beh.jitter > 0 {
			d += time.Duration(fnv64a(req.prompt, "jitter") % uint64(beh.jitter))
		}
		if !sleep(r.Context(), d) {
			ms.record(499, 0, 0, 0, now)
			return
		}
	}
	if lim != nil {
		setRateHeaders(w, p, lim, time.Now())
	}
	if status != 0 {
		e := apiError{status: status, retryAfter: -1}
		if mk.retryAfter >= 0 {
			e.retryAfter = mk.retryAfter
		}
		if status == 429 {
			switch {
			case mk.noRetryAfter:
				e.retryAfter = -1
			case e.retryAfter >= 0:
			case beh.retryAfterS >= 0:
				e.retryAfter = beh.retryAfterS
			case lim != nil && lim.limited:
				e.retryAfter = max(int((lim.retryAfter+time.Second-1)/time.Second), 1)
			default:
				e.retryAfter = 1
			}
			if lim != nil && lim.limited {
				e.limit = lim
			}
		}
		fail(e)
		return
	}
	ms.record(200, g.in, g.billedOut(), g.cached, now)
	prompt := req.prompt
	ms.lastPrompt.Store(&prompt)
	writeOK(w, req, g, beh.price)
}
