package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/cpuratio"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// BenchmarkEdgeOverhead measures the edge's own cost per request: HTTP in,
// the envelope published to llm.requests (JetStream), the reply (and for
// a stream, a delta) back over NATS, the HTTP answer out. The pipeline is a
// stub on its own connection that answers each request at once, so what
// is left is the edge plus the NATS server's share of the edge's traffic.
// One request at a time: ns/op is the edge's added latency on an idle
// machine (the stub's one publish included); cpu-ns/op is the CPU all of
// it used per request.
func BenchmarkEdgeOverhead(b *testing.B) {
	for _, stream := range []bool{false, true} {
		name := "json"
		if stream {
			name = "stream"
		}
		b.Run(name, func(b *testing.B) {
			url, key := startBenchEdge(b)
			body := `{"model":"chat","max_tokens":16,"messages":[{"role":"user","content":"Say hello"}]}`
			if stream {
				body = `{"model":"chat","max_tokens":16,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}`
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			call := func() {
				req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Contains(got, []byte("hello")) {
					b.Fatalf("status %d: %s", resp.StatusCode, got)
				}
			}
			for range 50 { // warm: connections, buckets, caches
				call()
			}
			b.ReportAllocs()
			cpu0 := cpuratio.ProcessCPU()
			b.ResetTimer()
			for range b.N {
				call()
			}
			b.StopTimer()
			// CPU time of the whole process (client, edge, NATS server,
			// stub) per request: less at the mercy of a busy machine than
			// wall time, which waits for the CPU others hold.
			b.ReportMetric(float64(cpuratio.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// startBenchEdge serves an edge on an embedded NATS server with a stub
// pipeline that answers every request, and returns its URL and a key.
func startBenchEdge(b *testing.B) (string, string) {
	url := testkit.Server(b)
	stubPipeline(b, url)
	keys := openKeys(b, url)
	key, _, err := keys.Create(context.Background(), "acme", nil)
	if err != nil {
		b.Fatal(err)
	}
	return startEdge(b, url), key
}

// openKeys opens the key bucket (and creates the topology) on its own
// connection.
func openKeys(tb testing.TB, url string) *apikey.Store {
	_, js := testkit.Connect(tb, url)
	testkit.WithTopology(tb, js)
	keys, err := apikey.Open(context.Background(), js)
	if err != nil {
		tb.Fatal(err)
	}
	return keys
}

// startEdge runs one edge replica, on a NATS connection of its own, until
// the test ends, and returns its base URL.
func startEdge(tb testing.TB, url string) string {
	ctx, cancel := context.WithCancel(context.Background())
	nc, js := testkit.Connect(tb, url)
	log := zerolog.Nop()
	store, err := policy.OpenStore(ctx, js, "", log)
	if err != nil {
		tb.Fatal(err)
	}
	if err := store.Watch(ctx, mustPolicy(tb), nil); err != nil {
		tb.Fatal(err)
	}
	keys, err := apikey.Open(ctx, js)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{Addr: "127.0.0.1:0", MaxBodyBytes: 1 << 20, MaxHeaderBytes: 1 << 16, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: time.Minute, RequestTimeout: 30 * time.Second, ShutdownTimeout: 5 * time.Second}
	e, err := New(cfg, Deps{Log: log, NC: nc, JS: js, Policy: store, Keys: keys})
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = e.Run(ctx) }()
	tb.Cleanup(func() { cancel(); e.Wait() })
	return "http://" + e.Addr()
}

// stubPipeline answers each request on llm.requests at once, on its own
// connection: for a streamed request one delta, then the reply.
func stubPipeline(b *testing.B, url string) {
	nc, _ := testkit.Connect(b, url)
	_, err := nc.Subscribe("llm.requests", func(m *nats.Msg) {
		var req envelope.Request
		if err := json.Unmarshal(m.Data, &req); err != nil {
			return
		}
		if req.Stream {
			d, _ := json.Marshal(envelope.DeltaEvent{Type: envelope.DeltaContent, RequestID: req.ID, Content: "hello", Vendor: "openai", Model: "gpt-4o"})
			_ = nc.Publish(envelope.DeltaSubject(req.Tenant, req.ID), d)
		}
		rep, _ := json.Marshal(envelope.Reply{ID: req.ID, Tenant: req.Tenant, Status: envelope.StatusOK, Content: "hello",
			FinishReason: "stop", Vendor: "openai", Model: "gpt-4o", Route: "chat", Usage: envelope.Usage{InputTokens: 3, OutputTokens: 1}})
		store, _ := natsx.ReplyPublishSubject(req.ReplySubject())
		_ = nc.Publish(store, rep)
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}
