package benchfloor

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// The floor answers through the contract (JetStream publish to
// llm.requests, reply on llm.replies.<tenant>.<id>) after calling the
// vendor, with and without hops, and answers a request the schema refuses
// with invalid_request: the benchmark's figures are of real answers.
func TestFloorAnswersThroughTheContract(t *testing.T) {
	simulator, vendor := startSimulator(t)

	for _, tt := range []struct {
		name           string
		hops, doorHops int
		storedReplies  bool
	}{{"one stage", 0, 0, false}, {"three durable hops", 3, 0, false}, {"a durable hop and two door hops", 1, 2, false},
		{"one stage, replies stored", 0, 0, true}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			f := runFloor(ctx, t, Config{VendorBaseURL: vendor, Hops: tt.hops, DoorHops: tt.doorHops, StoredReplies: tt.storedReplies})

			nc, err := nats.Connect(f.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			replies := make(chan *nats.Msg, 4)
			if _, err := nc.ChanSubscribe("llm.replies.floor.>", replies); err != nil {
				t.Fatal(err)
			}
			c, err := client.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			called := simulator.Calls().Model(sim.VendorOpenAI, "gpt-4o-mini").Calls
			good := &envelope.Request{ID: "r1", Tenant: "floor", Messages: []envelope.Message{{Role: "user", Content: "Say hello"}}}
			if err := c.Publish(ctx, good); err != nil {
				t.Fatal(err)
			}
			if err := c.PublishRaw(ctx, "floor.r2", []byte(`{"id":"r2","tenant":"floor","messages":"not a list"}`)); err != nil {
				t.Fatal(err)
			}
			got := map[string]envelope.Reply{}
			for len(got) < 2 {
				select {
				case m := <-replies:
					var r envelope.Reply
					if err := json.Unmarshal(m.Data, &r); err != nil {
						t.Fatalf("reply on %s: %v", m.Subject, err)
					}
					if want := envelope.DefaultReplySubject("floor", r.ID); m.Subject != want {
						t.Fatalf("reply on %s, want %s", m.Subject, want)
					}
					got[r.ID] = r
				case <-ctx.Done():
					t.Fatalf("replies so far %+v: %v", got, ctx.Err())
				}
			}
			if r := got["r1"]; r.Status != envelope.StatusOK || r.Content == "" || len(r.Attempts) != 1 || r.Usage.OutputTokens == 0 {
				t.Fatalf("r1: want an ok reply with the vendor's content and usage, got %+v", r)
			}
			if r := got["r2"]; r.Status != envelope.StatusError || r.Error == nil || r.Error.Code != envelope.CodeInvalidRequest {
				t.Fatalf("r2: want invalid_request, got %+v", r)
			}
			// Each request took every hop: one stored message per hop.
			if tt.hops > 0 {
				st, err := c.JS.Stream(ctx, hopStream)
				if err != nil {
					t.Fatal(err)
				}
				if info, err := st.Info(ctx); err != nil || info.State.LastSeq != uint64(2*tt.hops) {
					t.Fatalf("%s: %v, want %d messages stored in all", hopStream, err, 2*tt.hops)
				}
			}
			// Stored replies are in LLM_REPLIES under the subject they were
			// delivered on; without, the stream does not exist.
			if st, err := c.JS.Stream(ctx, natsx.StreamReplies); tt.storedReplies {
				if err != nil {
					t.Fatal(err)
				}
				for id := range got {
					if _, err := st.GetLastMsgForSubject(ctx, envelope.DefaultReplySubject("floor", id)); err != nil {
						t.Fatalf("reply to %s not stored: %v", id, err)
					}
				}
			} else if err == nil {
				t.Fatalf("%s exists without stored replies", natsx.StreamReplies)
			}
			// The valid request went through every door, directly (the
			// doors share one counter; the malformed one is refused first).
			if tt.doorHops > 0 {
				paths := f.doors[0].Paths
				if direct, other := testutil.ToFloat64(paths.WithLabelValues("direct")), testutil.ToFloat64(paths.WithLabelValues("stream")); direct != float64(tt.doorHops) || other != 0 {
					t.Fatalf("door hand-offs: %v direct and %v not, want %d direct", direct, other, tt.doorHops)
				}
			}
			if now := simulator.Calls().Model(sim.VendorOpenAI, "gpt-4o-mini").Calls; now != called+1 {
				t.Fatalf("the simulator saw %d calls, want 1", now-called)
			}
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	err := Config{Concurrency: 0, Hops: -1, HTTPAddr: "127.0.0.1:0"}.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"store dir", "vendor base URL", "model", "concurrency", "hops", "http address"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%q does not name %s", err, want)
		}
	}
}

// The HTTP front answers an OpenAI chat completion through the contract
// (the request stored in LLM_REQUESTS, the reply in LLM_REPLIES, the vendor
// called once), and refuses a malformed body and an envelope the schema
// refuses with 400: the HTTP rows' figures are of real answers.
func TestHTTPFrontAnswersThroughTheContract(t *testing.T) {
	simulator, vendor := startSimulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := runFloor(ctx, t, Config{VendorBaseURL: vendor, StoredReplies: true, HTTPAddr: "127.0.0.1:0"})

	called := simulator.Calls().Model(sim.VendorOpenAI, "gpt-4o-mini").Calls
	post := func(body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+f.HTTPAddr()+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return resp.StatusCode, out
	}
	for _, tt := range []struct {
		name, body string
		status     int
		check      func(map[string]any) bool
	}{
		{"answered", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}`, http.StatusOK,
			func(out map[string]any) bool {
				choices, _ := out["choices"].([]any)
				usage, _ := out["usage"].(map[string]any)
				if len(choices) != 1 || usage == nil || usage["completion_tokens"].(float64) == 0 {
					return false
				}
				msg, _ := choices[0].(map[string]any)["message"].(map[string]any)
				return msg["content"] != ""
			}},
		{"malformed body", `{"messages":"not a list"}`, http.StatusBadRequest, hasErrorCode(envelope.CodeInvalidRequest)},
		{"refused by the schema", `{"model":"gpt-4o-mini","messages":[]}`, http.StatusBadRequest, hasErrorCode(envelope.CodeInvalidRequest)},
	} {
		if status, out := post(tt.body); status != tt.status || !tt.check(out) {
			t.Fatalf("%s: %d %v, want %d", tt.name, status, out, tt.status)
		}
	}
	if now := simulator.Calls().Model(sim.VendorOpenAI, "gpt-4o-mini").Calls; now != called+1 {
		t.Fatalf("the simulator saw %d calls, want 1", now-called)
	}
	// Both published requests were answered through LLM_REPLIES.
	nc, err := nats.Connect(f.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.JS.Stream(ctx, natsx.StreamReplies)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("%s: %v, want 2 stored replies", natsx.StreamReplies, err)
	}
}

func hasErrorCode(code string) func(map[string]any) bool {
	return func(out map[string]any) bool {
		e, _ := out["error"].(map[string]any)
		return e != nil && e["code"] == code
	}
}

// startSimulator serves the OpenAI simulator on loopback for the test.
func startSimulator(t *testing.T) (*sim.Server, string) {
	t.Helper()
	simulator := sim.New(sim.Scenario{}, zerolog.Nop())
	addr, err := simulator.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = simulator.Close() })
	return simulator, sim.BaseURL(addr, sim.VendorOpenAI)
}

// runFloor starts a floor with cfg (a temporary store, any port, four at
// a time, the simulator's gpt-4o-mini) and runs it until the test ends.
func runFloor(ctx context.Context, t *testing.T, cfg Config) *Floor {
	t.Helper()
	cfg.StoreDir, cfg.Port, cfg.Model, cfg.Concurrency = t.TempDir(), -1, "gpt-4o-mini", 4
	f, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- f.Run(rctx) }()
	t.Cleanup(func() { stop(); <-ran; f.Close() })
	return f
}
