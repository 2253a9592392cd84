package edge

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// The handler answers every refusal before the pipeline (bad key, bad
// body, stream, unknown route, oversize) in the API's format with a request
// id, and no log line at debug level holds the key.
func TestHandlerRefusalsAndLogs(t *testing.T) {
	ctx := context.Background()
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	var logs bytes.Buffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	store, err := policy.OpenStore(ctx, js, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Watch(ctx, mustPolicy(t), nil); err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := keys.Create(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addr: "127.0.0.1:0", MaxBodyBytes: 2048, MaxHeaderBytes: 8192, ReadHeaderTimeout: 1, ReadTimeout: 1, IdleTimeout: 1, RequestTimeout: 1e9, ShutdownTimeout: 1}
	e, err := New(cfg, Deps{Log: log, NC: nc, JS: js, Policy: store, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	_ = e.ln.Close()
	h := e.Handler()
	tests := []struct {
		name, path, auth, body string
		status                 int
	}{
		{"bad key", "/v1/chat/completions", "Bearer " + key + "x", `{"model":"chat","messages":[{"role":"user","content":"hi"}]}`, 401},
		{"stream options without stream", "/v1/chat/completions", "Bearer " + key, `{"model":"chat","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"bad stream options", "/v1/chat/completions", "Bearer " + key, `{"model":"chat","stream":true,"stream_options":{"include_usage":"yes"},"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"unknown route", "/v1/chat/completions", "Bearer " + key, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, 400},
		{"oversize", "/v1/chat/completions", "Bearer " + key, `{"model":"chat","messages":[{"role":"user","content":"` + strings.Repeat("x", 4096) + `"}]}`, 413},
		{"bad json", "/v1/messages", "Bearer " + key, `{`, 400},
		{"unknown path", "/v1/embeddings", "Bearer " + key, `{}`, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", tt.auth)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || rec.Header().Get(HeaderRequestID) == "" || !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("status %d (want %d), request id %q: %s", rec.Code, tt.status, rec.Header().Get(HeaderRequestID), rec.Body)
			}
			if strings.Contains(rec.Body.String(), key) {
				t.Fatalf("the answer holds the key: %s", rec.Body)
			}
		})
	}
	if !strings.Contains(logs.String(), "edge request failed") {
		t.Fatalf("no log lines for the refusals:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), key) || strings.Contains(logs.String(), key[len(apikey.Prefix):]) {
		t.Fatalf("a log line holds the key:\n%s", logs.String())
	}
}
