package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/apikey"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
	"github.com/switchyard-llm/switchyard/services/switchyard/cli"
)

// withEdge runs the HTTP edge on a random port.
func withEdge(c *app.Config) { c.Edge.Addr = "127.0.0.1:0" }

// edgeKey creates a key for the test's tenant with `switchyard keys
// create`, which must print the key and nothing else on stdout.
func (e *env) edgeKey(routes string) string {
	e.t.Helper()
	return e.edgeKeyFor(e.tenant, routes)
}

func (e *env) edgeKeyFor(tenant, routes string) string {
	e.t.Helper()
	e.t.Setenv("SWITCHYARD_NATS_URL", e.sys.NATSURL)
	args := []string{"keys", "create", "--tenant", tenant}
	if routes != "" {
		args = append(args, "--routes", routes)
	}
	var out, errOut bytes.Buffer
	if code := cli.Main(context.Background(), args, &out, &errOut); code != 0 {
		e.t.Fatalf("keys create: exit %d: %s", code, errOut.String())
	}
	key := strings.TrimSuffix(out.String(), "\n")
	if !strings.HasPrefix(key, apikey.Prefix) || strings.ContainsAny(key, " \n\t") {
		e.t.Fatalf("keys create printed %q on stdout, want only the key", out.String())
	}
	return key
}

type edgeResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// edgeCall sends one request to the edge and decodes the JSON answer.
func (e *env) edgeCall(method, path string, hdr map[string]string, body string) edgeResp {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.sys.EdgeAddr+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 60 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := edgeResp{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		e.t.Fatalf("%s %s: status %d, body is not JSON: %q", method, path, res.StatusCode, raw)
	}
	if res.Header.Get("x-switchyard-request-id") == "" {
		e.t.Errorf("%s %s: no x-switchyard-request-id", method, path)
	}
	return out
}

func bearerKey(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }

func chatBody(model, prompt string, extra string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]%s}`, model, prompt, extra)
}

// dig walks a decoded JSON value: "choices.0.message.content".
func dig(v any, path string) any {
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// The HTTP edge over real HTTP: the OpenAI and Anthropic dialects answer
// through the pipeline (route by name, auto, a pinned catalog model), every
// error comes in the API's own format and status, a revoked key stops
// working at once, and each answered request is billed in the ledger.
func TestEdgeHTTP(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		c.Policy.Tenants["edgequota"] = policy.Tenant{Budget: policy.Budget{RequestsPerDay: 1}}
	})
	key := e.edgeKey("")
	auth := bearerKey(key)

	okTests := []struct {
		name, model, prompt string
		hdr                 map[string]string
		wantModel           string // the served model
		wantRoute           string
	}{
		{name: "route by name", model: "chat", prompt: "Hello there", wantModel: "openai/gpt-4o-mini", wantRoute: "chat"},
		{name: "route: prefix", model: "route:chat", prompt: "Hello again", wantModel: "openai/gpt-4o-mini", wantRoute: "chat"},
		{name: "auto picks the route by its match rules", model: "auto", prompt: "Please summarize this ticket: the printer is on fire",
			wantModel: "anthropic/claude-haiku-4-5", wantRoute: "summarize"},
		{name: "catalog model outside the route's chain", model: "openrouter/meta-llama/llama-3.3-70b-instruct", prompt: "Hello model",
			wantModel: "openrouter/meta-llama/llama-3.3-70b-instruct", wantRoute: "chat"},
		{name: "switchyard headers", model: "chat", prompt: "Hello headers", wantModel: "openai/gpt-4o-mini", wantRoute: "chat",
			hdr: map[string]string{"X-Switchyard-Endpoint-Tag": "edge.test", "X-Switchyard-Stakes": "high"}},
	}
	for _, tt := range okTests {
		t.Run("openai "+tt.name, func(t *testing.T) {
			hdr := map[string]string{"Authorization": "Bearer " + key}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			r := e.edgeCall("POST", "/v1/chat/completions", hdr, chatBody(tt.model, tt.prompt, ""))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if dig(r.body, "object") != "chat.completion" || dig(r.body, "choices.0.message.role") != "assistant" ||
				dig(r.body, "choices.0.finish_reason") == nil || !strings.HasPrefix(fmt.Sprint(dig(r.body, "id")), "chatcmpl-") {
				t.Fatalf("not a chat.completion: %s", r.raw)
			}
			if c, _ := dig(r.body, "choices.0.message.content").(string); c == "" {
				t.Fatalf("empty answer: %s", r.raw)
			}
			p, _ := dig(r.body, "usage.prompt_tokens").(float64)
			c, _ := dig(r.body, "usage.completion_tokens").(float64)
			tot, _ := dig(r.body, "usage.total_tokens").(float64)
			if p <= 0 || c <= 0 || tot != p+c {
				t.Fatalf("usage: %s", r.raw)
			}
			if got := dig(r.body, "model"); got != tt.wantModel {
				t.Fatalf("served model %v, want %s", got, tt.wantModel)
			}
			if got := r.header.Get("x-switchyard-route"); got != tt.wantRoute {
				t.Fatalf("route %q, want %q", got, tt.wantRoute)
			}
		})
	}
	t.Run("anthropic messages", func(t *testing.T) {
		r := e.edgeCall("POST", "/v1/messages", map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"},
			`{"model":"chat","max_tokens":64,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}]}`)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
		if dig(r.body, "type") != "message" || dig(r.body, "role") != "assistant" || dig(r.body, "content.0.type") != "text" ||
			dig(r.body, "stop_reason") == nil || dig(r.body, "model") != "openai/gpt-4o-mini" {
			t.Fatalf("not a message: %s", r.raw)
		}
		if in, _ := dig(r.body, "usage.input_tokens").(float64); in <= 0 {
			t.Fatalf("usage: %s", r.raw)
		}
		if out, _ := dig(r.body, "usage.output_tokens").(float64); out <= 0 {
			t.Fatalf("usage: %s", r.raw)
		}
	})
	// acme has budgets: the hold is priced at the pinned model, not at the
	// (cheaper) chain of the route its match rules pick (before: 403
	// policy_blocked, "the request's hold … cannot cover it").
	t.Run("catalog model for a tenant with a budget", func(t *testing.T) {
		r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(e.edgeKeyFor("acme", "")), chatBody("openai/gpt-4o", "Hello budget", ""))
		if r.status != http.StatusOK || dig(r.body, "model") != "openai/gpt-4o" {
			t.Fatalf("status %d: %s", r.status, r.raw)
		}
	})
	// Over quota: 429 with retry-after, in both formats.
	t.Run("quota exceeded", func(t *testing.T) {
		qk := e.edgeKeyFor("edgequota", "")
		if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(qk), chatBody("chat", "first", "")); r.status != 200 {
			t.Fatalf("first request: %d %s", r.status, r.raw)
		}
		r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(qk), chatBody("chat", "second", ""))
		if r.status != 429 || dig(r.body, "error.code") != "quota_exceeded" || dig(r.body, "error.type") != "rate_limit_error" {
			t.Fatalf("second request: %d %s", r.status, r.raw)
		}
		if ra, err := strconv.Atoi(r.header.Get("retry-after")); err != nil || ra < 1 || ra > 86400 {
			t.Fatalf("retry-after %q", r.header.Get("retry-after"))
		}
		r = e.edgeCall("POST", "/v1/messages", map[string]string{"x-api-key": qk}, `{"model":"chat","max_tokens":5,"messages":[{"role":"user","content":"third"}]}`)
		if r.status != 429 || dig(r.body, "error.type") != "rate_limit_error" || r.header.Get("retry-after") == "" {
			t.Fatalf("anthropic over quota: %d %s", r.status, r.raw)
		}
	})
	t.Run("models", func(t *testing.T) {
		r := e.edgeCall("GET", "/v1/models", auth, "")
		ids := map[string]bool{}
		for _, m := range dig(r.body, "data").([]any) {
			ids[fmt.Sprint(dig(m, "id"))] = true
		}
		for _, want := range []string{"auto", "route:chat", "route:extract", "openai/gpt-4o"} {
			if !ids[want] {
				t.Errorf("GET /v1/models lacks %s: %s", want, r.raw)
			}
		}
		if r := e.edgeCall("GET", "/v1/models", map[string]string{"x-api-key": key}, ""); r.status != 200 {
			t.Errorf("GET /v1/models with x-api-key: %d %s", r.status, r.raw)
		}
		if r := e.edgeCall("GET", "/v1/models", nil, ""); r.status != 401 || dig(r.body, "error.code") != "invalid_api_key" {
			t.Errorf("GET /v1/models without a key: %d %s", r.status, r.raw)
		}
	})

	// Errors: each API's format and the status an SDK handles correctly.
	big := strings.Repeat("x", 300<<10)
	errTests := []struct {
		name, path string
		hdr        map[string]string
		body       string
		status     int
		code       string // OpenAI error.code, or Anthropic error.type
	}{
		{"missing key", "/v1/chat/completions", nil, chatBody("chat", "hi", ""), 401, "invalid_api_key"},
		{"bad key", "/v1/chat/completions", bearerKey("sy-notakey"), chatBody("chat", "hi", ""), 401, "invalid_api_key"},
		{"unknown route", "/v1/chat/completions", auth, chatBody("nosuchroute", "hi", ""), 400, "unknown_route"},
		{"unknown catalog model", "/v1/chat/completions", auth, chatBody("openai/gpt-nope", "hi", ""), 400, "model_not_found"},
		{"oversize body", "/v1/chat/completions", auth, chatBody("chat", big, ""), 413, "payload_too_large"},
		{"stream with bad stream_options", "/v1/chat/completions", auth, chatBody("chat", "hi", `,"stream":true,"stream_options":{"x":1}`), 400, "invalid_request"},
		{"unknown parameter", "/v1/chat/completions", auth, chatBody("chat", "hi", `,"tools":[]`), 400, "invalid_request"},
		{"malformed JSON", "/v1/chat/completions", auth, `{"model":`, 400, "invalid_request"},
		{"pipeline refusal: bad stakes", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key, "X-Switchyard-Stakes": "extreme"},
			chatBody("chat", "hi", ""), 400, "invalid_request"},
		{"anthropic bad key", "/v1/messages", map[string]string{"x-api-key": "sy-nope"}, `{"model":"chat","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 401, "authentication_error"},
		{"anthropic stream without max_tokens", "/v1/messages", map[string]string{"x-api-key": key}, `{"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error"},
		{"anthropic oversize", "/v1/messages", map[string]string{"x-api-key": key}, `{"model":"chat","max_tokens":5,"messages":[{"role":"user","content":"` + big + `"}]}`, 413, "request_too_large"},
		{"anthropic unknown route", "/v1/messages", map[string]string{"x-api-key": key}, `{"model":"nosuchroute","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.edgeCall("POST", tt.path, tt.hdr, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.raw)
			}
			if strings.HasPrefix(tt.path, "/v1/messages") {
				if dig(r.body, "type") != "error" || dig(r.body, "error.type") != tt.code || dig(r.body, "error.message") == "" {
					t.Fatalf("want an Anthropic error of type %s: %s", tt.code, r.raw)
				}
				return
			}
			if dig(r.body, "error.code") != tt.code || dig(r.body, "error.type") == nil || dig(r.body, "error.message") == "" {
				t.Fatalf("want an OpenAI error with code %s: %s", tt.code, r.raw)
			}
			if strings.Contains(r.raw, key) {
				t.Fatalf("the key is in the answer: %s", r.raw)
			}
		})
	}

	// Requests the revoked key got answered before every replica's view
	// saw the revocation (milliseconds): answered, so billed.
	servedBeforeRevocation := 0
	t.Run("revoked mid-test", func(t *testing.T) {
		k2 := e.edgeKey("chat")
		if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(k2), chatBody("chat", "before revoke", "")); r.status != 200 {
			t.Fatalf("before revoke: %d %s", r.status, r.raw)
		}
		// The allow-list holds: the key may use chat only.
		if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(k2), chatBody("extract", "x", "")); r.status != 403 {
			t.Fatalf("route outside the allow-list: %d %s", r.status, r.raw)
		}
		var out, errOut bytes.Buffer
		if code := cli.Main(context.Background(), []string{"keys", "revoke", apikey.Hash(k2)[:16]}, &out, &errOut); code != 0 {
			t.Fatalf("keys revoke: %d %s", code, errOut.String())
		}
		// Every edge replica learns of the revocation through its key
		// view's watch: within milliseconds, not at once.
		var last edgeResp
		waitFor(t, 5*time.Second, func() bool {
			last = e.edgeCall("POST", "/v1/chat/completions", bearerKey(k2), chatBody("chat", "after revoke", ""))
			if last.status == 200 {
				servedBeforeRevocation++ // answered (and billed) before the watch saw it
			}
			return last.status == 401
		})
		if !strings.Contains(last.raw, "invalid_api_key") {
			t.Fatalf("after revoke: %d %s", last.status, last.raw)
		}
		out.Reset()
		if code := cli.Main(context.Background(), []string{"keys", "ls"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), apikey.Hash(k2)[:16]) {
			t.Fatalf("keys ls: %d %s", code, out.String())
		}
		if strings.Contains(out.String(), k2) || strings.Contains(out.String(), key) {
			t.Fatalf("keys ls shows a key: %s", out.String())
		}
	})

	// Billing: every answered request reached the ledger under the key's tenant.
	where := fmt.Sprintf(" WHERE tenant = '%s' AND status = 'ok'", e.tenant)
	answered := uint64(len(okTests) + 2 + servedBeforeRevocation)
	if n := e.eventually("SELECT count() FROM %s.requests FINAL"+where, answered, 30*time.Second); n != answered {
		t.Fatalf("ledger holds %d answered requests of the tenant, want %d (%d served while the revocation travelled)", n, answered, servedBeforeRevocation)
	}
}

// A client that gives up does not stop the request: it is answered in the
// pipeline and billed in the ledger all the same. A client that sends its
// headers too slowly is cut off by the server, and the edge keeps serving.
func TestEdgeClientGoneAndSlowClient(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		c.Edge.ReadHeaderTimeout = 300 * time.Millisecond
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 800}}}}}
	})
	key := e.edgeKey("")

	// Gone: the client's timeout (150 ms) is far shorter than the vendor's 800 ms.
	req, _ := http.NewRequest("POST", "http://"+e.sys.EdgeAddr+"/v1/chat/completions", strings.NewReader(chatBody("chat", "I will not wait", "")))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Switchyard-Idempotency-Key", "gone-1")
	if res, err := (&http.Client{Timeout: 150 * time.Millisecond}).Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("the client got an answer (%d) before the vendor answered", res.StatusCode)
	}
	where := fmt.Sprintf(" WHERE tenant = '%s' AND request_id = 'gone-1' AND status = 'ok'", e.tenant)
	if n := e.eventually("SELECT count() FROM %s.requests FINAL"+where, 1, 30*time.Second); n != 1 {
		t.Fatalf("the abandoned request was not billed: %d ledger rows", n)
	}
	// The same idempotency key later gets the stored answer at once.
	start := time.Now()
	r := e.edgeCall("POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key, "X-Switchyard-Idempotency-Key": "gone-1"},
		chatBody("chat", "I will not wait", ""))
	if r.status != 200 || r.header.Get("x-switchyard-request-id") != "gone-1" || time.Since(start) > 700*time.Millisecond {
		t.Fatalf("repeat of gone-1: %d after %s: %s", r.status, time.Since(start), r.raw)
	}

	// A deadline shorter than the vendor's latency: 504 from the pipeline's
	// own deadline_exceeded reply.
	r = e.edgeCall("POST", "/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key, "X-Switchyard-Timeout-Ms": "300"},
		chatBody("route:chat", "too slow", ""))
	if r.status != http.StatusGatewayTimeout || dig(r.body, "error.code") != "deadline_exceeded" || dig(r.body, "error.type") != "timeout_error" {
		t.Fatalf("short deadline: %d %s", r.status, r.raw)
	}

	// Slow: headers never finish; the server closes the connection.
	conn, err := net.Dial("tcp", e.sys.EdgeAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	cut := time.Now()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the slow connection was not closed by the server: %v", err)
	}
	if took := time.Since(cut); took > 3*time.Second {
		t.Fatalf("the slow connection was closed after %s", took)
	}
	if r := e.edgeCall("POST", "/v1/chat/completions", bearerKey(key), chatBody("chat", "still serving", "")); r.status != 200 {
		t.Fatalf("after a slow client: %d %s", r.status, r.raw)
	}
}

// Stopping `up` lets a request in flight through the edge finish: the edge
// stops first, while the pipeline still runs.
func TestEdgeGracefulStop(t *testing.T) {
	e := start(t, withEdge, func(c *app.Config) {
		c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 600}}}}}
	})
	key := e.edgeKey("")
	type result struct {
		status int
		err    error
	}
	// The executor announces each call (outcome started) before making it.
	started, err := e.sys.NC.SubscribeSync("llm.telemetry.attempt")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+e.sys.EdgeAddr+"/v1/chat/completions", strings.NewReader(chatBody("chat", "in flight", "")))
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		res.Body.Close()
		done <- result{status: res.StatusCode}
	}()
	// Stop while the vendor call (600 ms) is under way.
	if _, err := started.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no call started: %v", err)
	}
	if n := e.simCalls("openai", "gpt-4o-mini"); n != 0 {
		t.Fatalf("the vendor call already finished (%d calls) before the stop", n)
	}
	e.sys.Stop()
	r := <-done
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("the request in flight at stop: status %d, %v", r.status, r.err)
	}
}
