// Package obs builds the logger and the health/metrics HTTP server every
// service exposes.
package obs

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// NewLogger returns a JSON logger for a service at the given level.
func NewLogger(w io.Writer, service, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if w == nil {
		w = os.Stderr
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", service).Logger(), nil
}

// NewRegistry returns a metrics registry with Go runtime collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Health is a readiness flag served on /healthz.
type Health struct{ ready atomic.Bool }

// SetReady marks the service ready (or not).
func (h *Health) SetReady(ok bool) { h.ready.Store(ok) }

// ServeHTTP answers 200 when ready, 503 otherwise.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if h.ready.Load() {
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	http.Error(w, "not ready", http.StatusServiceUnavailable)
}

// Serve runs /healthz and /metrics on addr until ctx is done. An empty addr
// disables the server (in-process runs share one).
func Serve(ctx context.Context, log zerolog.Logger, addr string, reg *prometheus.Registry, h *Health) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", h)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
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
