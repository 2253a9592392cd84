package sim_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// TestVendorConnectionsPooled drives each wire protocol with bursts of
// `workers` concurrent calls, whole and streamed answers mixed, through an adapter
// built as the executor builds it (no client of its own), and counts the
// TCP connections the simulator accepts: a pooled vendor client opens at
// most one per call in flight, and reuses them after streams too.
func TestVendorConnectionsPooled(t *testing.T) {
	const workers, rounds = 8, 6
	cases := []struct {
		kind     string
		maxConc  int // the vendor's max_concurrency; 0: unset
		wantMost int
	}{
		// Unset, the pool (64) does not cap connections: the transport
		// may dial a connection while another is still on its way back to
		// the pool, hence the slack. Before pooling: 38 for 48 calls.
		{"openai", 0, workers + 2}, {"anthropic", 0, workers + 2}, {"gemini", 0, workers + 2}, {"openrouter", 0, workers + 2},
		// Set, it is a hard cap.
		{"openai", workers, workers}, {"anthropic", workers, workers}, {"gemini", workers, workers},
		// Fewer connections than callers: the rest wait for one.
		{"openai", 3, 3}, {"anthropic", 3, 3}, {"gemini", 3, 3},
	}
	for _, tc := range cases {
		kind := tc.kind
		t.Run(fmt.Sprintf("%s/max_concurrency=%d", kind, tc.maxConc), func(t *testing.T) {
			t.Parallel()
			var conns atomic.Int64
			ts := httptest.NewUnstartedServer(sim.New(sim.Scenario{}, zerolog.Nop()).Handler())
			ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			ts.Start()
			defer ts.Close()
			a, err := adapters.New(kind, adapters.Config{BaseURL: sim.BaseURL(ts.URL, kind), APIKey: "k", MaxConcurrency: tc.maxConc})
			if err != nil {
				t.Fatal(err)
			}
			// Rounds of `workers` calls at once: the bursts a pipeline sends,
			// after which every connection is idle together.
			for round := 0; round < rounds; round++ {
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						req := &provider.Request{Model: "m-1", MaxTokens: 64, Messages: []envelope.Message{
							{Role: "user", Content: fmt.Sprintf("Round %d, caller %d: say something.", round, w)}}}
						var err error
						if (round+w)%2 == 0 {
							_, err = a.Complete(context.Background(), req)
						} else {
							_, err = a.Stream(context.Background(), req, provider.StreamOptions{}, func(provider.Delta) error { return nil })
						}
						if err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
			}
			if n := conns.Load(); n > int64(tc.wantMost) {
				t.Fatalf("%d TCP connections for %d calls by %d concurrent callers, want at most %d", n, workers*rounds, workers, tc.wantMost)
			}
		})
	}
}
