// Package obs builds the logger and the health/metrics HTTP server every
// service exposes.
package obs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// NewLogger returns a JSON logger at the given level. A non-empty service
// is written as the `service` key; leave it empty for a process logger
// whose components each add their own (one `service` key per line).
func NewLogger(w io.Writer, service, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if w == nil {
		w = os.Stderr
	}
	ctx := zerolog.New(w).Level(lvl).With().Timestamp()
	if service != "" {
		ctx = ctx.Str("service", service)
	}
	return ctx.Logger(), nil
}

// NewRegistry returns a metrics registry with Go runtime collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Health answers /healthz from named checks: 200 "ok" when every check
// passes, 503 with each failing check's reason otherwise.
type Health struct {
	mu     sync.Mutex
	checks map[string]func() error
}

// Set adds or replaces a check.
func (h *Health) Set(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checks == nil {
		h.checks = map[string]func() error{}
	}
	h.checks[name] = check
}

// Remove drops a check (a stopped component).
func (h *Health) Remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.checks, name)
}

// Check runs every check and joins the failures, in name order.
func (h *Health) Check() error {
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	checks := make(map[string]func() error, len(h.checks))
	for n, c := range h.checks {
		names = append(names, n)
		checks[n] = c
	}
	h.mu.Unlock()
	slices.Sort(names)
	var errs []error
	for _, n := range names {
		if err := checks[n](); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP answers 200 when every check passes, 503 with the reasons
// otherwise.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := h.Check(); err != nil {
		http.Error(w, "unhealthy\n"+strings.TrimSpace(err.Error()), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Listen opens the /healthz and /metrics address. It is separate from
// Serve so a taken address fails the start ("address already in use")
// instead of a background goroutine. An empty addr returns nil.
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	return ln, nil
}

// ServeOption changes what Serve exposes.
type ServeOption func(*http.ServeMux)

// WithPprof adds Go's profiler under /debug/pprof/ when on. It is off by
// default: a profile costs CPU and shows internals, so an operator turns it
// on (SWITCHYARD_PPROF=true) for a measurement, not in production.
func WithPprof(on bool) ServeOption {
	return func(mux *http.ServeMux) {
		if !on {
			return
		}
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// Serve runs /healthz and /metrics on ln until ctx is done. A nil ln
// disables the server (in-process runs share one).
func Serve(ctx context.Context, log zerolog.Logger, ln net.Listener, reg *prometheus.Registry, h *Health, opts ...ServeOption) error {
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", h)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	for _, o := range opts {
		o(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info().Str("addr", ln.Addr().String()).Msg("http listening")
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Register registers c, or returns the collector already registered under
// the same description, so several instances of a stage in one process
// (executor replicas, one per vendor) share their metric vectors.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
