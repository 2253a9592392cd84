package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// startUp runs `up` in this process without ClickHouse, its /healthz on a
// random port, logging to log.
func startUp(t *testing.T, log zerolog.Logger, env map[string]string, opts ...option) *app.System {
	t.Helper()
	base := map[string]string{"SWITCHYARD_POLICY": testPolicy, "SWITCHYARD_DATA_DIR": t.TempDir(), "SWITCHYARD_NATS_PORT": "-1",
		"SWITCHYARD_SIM": "on", "SWITCHYARD_SIM_ADDR": "127.0.0.1:0", "SWITCHYARD_HTTP_ADDR": "127.0.0.1:0", "SWITCHYARD_LEDGER": "false",
		"SWITCHYARD_EDGE_ADDR": ""}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := app.LoadConfig(envcfg.LookupMap(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := app.Start(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Stop)
	return sys
}

func healthz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// /healthz tells the truth: a deleted consumer or stream makes it fail
// until the stage has recreated what it owns (and serves again); a closed
// NATS connection makes it fail. (Before: a constant "ok" while the stage
// idled with no consumer, and requests went unanswered.)
func TestHealthzReportsAndRecovers(t *testing.T) {
	sys := startUp(t, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), nil)
	waitFor(t, 10*time.Second, func() bool { code, _ := healthz(sys.HTTPAddr); return code == http.StatusOK })
	c, err := client.New(sys.NC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tests := []struct {
		name      string
		breakIt   func() error
		wantCause string
	}{
		{"intake consumer deleted", func() error { return sys.JS.DeleteConsumer(ctx, natsx.StreamRequests, "intake") }, "stage intake"},
		{"requests stream deleted", func() error { return sys.JS.DeleteStream(ctx, natsx.StreamRequests) }, "stage intake"},
		{"router consumer deleted", func() error { return sys.JS.DeleteConsumer(ctx, natsx.StreamPipeline, "router") }, "stage router"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.breakIt(); err != nil {
				t.Fatal(err)
			}
			var failed string
			waitFor(t, 10*time.Second, func() bool {
				code, body := healthz(sys.HTTPAddr)
				if code != http.StatusOK {
					failed = body
				}
				return failed != ""
			})
			if !strings.Contains(failed, tt.wantCause) {
				t.Fatalf("healthz failed with %q, want it to name %q", failed, tt.wantCause)
			}
			t.Logf("healthz while broken: %q", failed)
			waitFor(t, 15*time.Second, func() bool { code, _ := healthz(sys.HTTPAddr); return code == http.StatusOK })
			// Recreated and serving: a request is answered.
			req := &envelope.Request{ID: fmt.Sprintf("h%d", i), Tenant: "health", Route: "chat",
				Messages: []envelope.Message{{Role: "user", Content: "still there?"}}}
			r, err := c.Submit(ctx, req)
			if err != nil || r.Status != envelope.StatusOK {
				t.Fatalf("after recovery: %v %+v", err, r)
			}
			if _, err := sys.JS.Consumer(ctx, natsx.StreamRequests, "intake"); err != nil {
				t.Fatalf("intake consumer not recreated: %v", err)
			}
		})
	}
	t.Run("nats connection closed", func(t *testing.T) {
		sys.NC.Close()
		waitFor(t, 10*time.Second, func() bool { code, _ := healthz(sys.HTTPAddr); return code != http.StatusOK })
		if _, body := healthz(sys.HTTPAddr); !strings.Contains(body, "nats: connection CLOSED") {
			t.Fatalf("healthz body %q does not name the connection", body)
		}
	})
}
