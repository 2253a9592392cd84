package obs_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/obs"
)

// The profiler is served only when asked for (SWITCHYARD_PPROF): it shows
// internals and costs CPU while a profile runs.
func TestPprofOnlyWhenOn(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []obs.ServeOption
		want int
	}{
		{"default", nil, http.StatusNotFound},
		{"off", []obs.ServeOption{obs.WithPprof(false)}, http.StatusNotFound},
		{"on", []obs.ServeOption{obs.WithPprof(true)}, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := obs.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- obs.Serve(ctx, zerolog.Nop(), ln, obs.NewRegistry(), &obs.Health{}, tt.opts...) }()
			defer func() { cancel(); <-done }()
			client := &http.Client{Timeout: 5 * time.Second}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
				resp, err := client.Get("http://" + ln.Addr().String() + path)
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, tt.want)
				}
			}
			resp, err := client.Get("http://" + ln.Addr().String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /metrics: %d", resp.StatusCode)
			}
		})
	}
}
