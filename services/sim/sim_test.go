package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/services/sim"
)

func newSim(t *testing.T, sc sim.Scenario) (*sim.Server, string) {
	t.Helper()
	s := sim.New(sc, zerolog.Nop())
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts.URL
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func post(t *testing.T, url string, header map[string]string, body string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", raw, err)
	}
	return r
}

// get walks a decoded JSON value by keys and indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// vendorCall knows how to call one protocol on the simulator.
type vendorCall struct {
	vendor string
	model  string
	path   func(base string) string
	header map[string]string
	body   func(model, prompt string) string
	// extract content, finish reason and usage (input incl. cache, output, cached)
	content func(b map[string]any) string
	finish  func(b map[string]any) string
	usage   func(b map[string]any) (in, out, cached int)
	// errType extracts the vendor's error kind from an error body.
	errType func(b map[string]any) string
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

var openaiLike = func(vendor, model, path string, header map[string]string) vendorCall {
	return vendorCall{
		vendor: vendor, model: model,
		path:   func(base string) string { return base + path },
		header: header,
		body: func(model, prompt string) string {
			return `{"model":` + q(model) + `,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":` + q(prompt) + `}]}`
		},
		content: func(b map[string]any) string { s, _ := get(b, "choices", 0, "message", "content").(string); return s },
		finish:  func(b map[string]any) string { s, _ := get(b, "choices", 0, "finish_reason").(string); return s },
		usage: func(b map[string]any) (int, int, int) {
			return num(get(b, "usage", "prompt_tokens")), num(get(b, "usage", "completion_tokens")), num(get(b, "usage", "prompt_tokens_details", "cached_tokens"))
		},
		errType: func(b map[string]any) string {
			if s, ok := get(b, "error", "type").(string); ok {
				return s
			}
			return fmt.Sprint(get(b, "error", "code"))
		},
	}
}

var protocols = []vendorCall{
	openaiLike("openai", "gpt-4o-mini", "/openai/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-test"}),
	openaiLike("openrouter", "openai/gpt-4o-mini", "/openrouter/api/v1/chat/completions", map[string]string{"Authorization": "Bearer sk-or-test"}),
	{
		vendor: "anthropic", model: "claude-haiku-4-5",
		path:   func(base string) string { return base + "/anthropic/v1/messages" },
		header: map[string]string{"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
		body: func(model, prompt string) string {
			return `{"model":` + q(model) + `,"max_tokens":512,"system":"Be brief.","messages":[{"role":"user","content":` + q(prompt) + `}]}`
		},
		content: func(b map[string]any) string { s, _ := get(b, "content", 0, "text").(string); return s },
		finish:  func(b map[string]any) string { s, _ := get(b, "stop_reason").(string); return s },
		usage: func(b map[string]any) (int, int, int) {
			read := num(get(b, "usage", "cache_read_input_tokens"))
			return num(get(b, "usage", "input_tokens")) + read + num(get(b, "usage", "cache_creation_input_tokens")), num(get(b, "usage", "output_tokens")), read
		},
		errType: func(b map[string]any) string { s, _ := get(b, "error", "type").(string); return s },
	},
	{
		vendor: "gemini", model: "gemini-2.5-flash",
		path:   func(base string) string { return base + "/gemini/v1beta/models/gemini-2.5-flash:generateContent" },
		header: map[string]string{"x-goog-api-key": "AIza-test"},
		body: func(_, prompt string) string {
			return `{"systemInstruction":{"parts":[{"text":"Be brief."}]},"contents":[{"role":"user","parts":[{"text":` + q(prompt) + `}]}]}`
		},
		content: func(b map[string]any) string {
			s, _ := get(b, "candidates", 0, "content", "parts", 0, "text").(string)
			return s
		},
		finish: func(b map[string]any) string { s, _ := get(b, "candidates", 0, "finishReason").(string); return s },
		usage: func(b map[string]any) (int, int, int) {
			return num(get(b, "usageMetadata", "promptTokenCount")), num(get(b, "usageMetadata", "candidatesTokenCount")), num(get(b, "usageMetadata", "cachedContentTokenCount"))
		},
		errType: func(b map[string]any) string { s, _ := get(b, "error", "status").(string); return s },
	},
}

func TestOKPerProtocol(t *testing.T) {
	sc := sim.Scenario{Vendors: map[string]sim.VendorScenario{}}
	for _, p := range protocols {
		sc.Vendors[p.vendor] = sim.VendorScenario{Models: map[string]sim.Behavior{"cached": {CachedRatio: sim.Ptr(0.25)}}}
	}
	_, base := newSim(t, sc)
	prompt := strings.Repeat("Tell me about lighthouses. ", 20)
	for _, p := range protocols {
		t.Run(p.vendor, func(t *testing.T) {
			r := post(t, p.path(base), p.header, p.body(p.model, prompt))
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			content := p.content(r.body)
			in, out, cached := p.usage(r.body)
			if content == "" || in <= 0 || out != (len(content)+3)/4 || cached != 0 {
				t.Fatalf("content %q usage in=%d out=%d cached=%d", content, in, out, cached)
			}
			if f := p.finish(r.body); f != map[string]string{"anthropic": "end_turn", "gemini": "STOP"}[p.vendor] && f != "stop" {
				t.Fatalf("finish %q", f)
			}
			// Same prompt, same content.
			if again := post(t, p.path(base), p.header, p.body(p.model, prompt)); p.content(again.body) != content {
				t.Fatalf("content not deterministic")
			}
			// Another prompt, other content.
			if other := post(t, p.path(base), p.header, p.body(p.model, "Something else entirely.")); p.content(other.body) == content {
				t.Fatalf("different prompts gave the same content")
			}
			// Cached ratio, in the vendor's own semantics (normalised by p.usage).
			if p.vendor != "gemini" { // gemini's model is in the path
				rc := post(t, p.path(base), p.header, p.body("cached", prompt))
				cin, _, ccached := p.usage(rc.body)
				if cin != in || ccached != in/4 {
					t.Fatalf("cached: in=%d cached=%d, want in=%d cached=%d (%s)", cin, ccached, in, in/4, rc.raw)
				}
				if p.vendor == "anthropic" && num(get(rc.body, "usage", "input_tokens")) != in-in/4 {
					t.Fatalf("anthropic input_tokens must exclude cache reads: %s", rc.raw)
				}
			}
		})
	}
}

func TestGeminiCachedTokens(t *testing.T) {
	_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{"gemini": {Behavior: sim.Behavior{CachedRatio: sim.Ptr(0.5)}}}})
	p := protocols[3]
	r := post(t, p.path(base), p.header, p.body("", strings.Repeat("x", 400)))
	in, _, cached := p.usage(r.body)
	if in < 100 || cached != in/2 {
		t.Fatalf("in=%d cached=%d: %s", in, cached, r.raw)
	}
}

func TestErrorStatusesPerProtocol(t *testing.T) {
	_, base := newSim(t, sim.Scenario{})
	want := map[string]map[int]string{
		"openai":     {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error", 529: "server_error"},
		"openrouter": {400: "400", 401: "401", 403: "403", 404: "404", 429: "429", 500: "500", 503: "503", 529: "529"},
		"anthropic":  {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "api_error", 529: "overloaded_error"},
		"gemini":     {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 529: "UNAVAILABLE"},
	}
	for _, p := range protocols {
		for _, status := range []int{400, 401, 403, 404, 429, 500, 503, 529} {
			t.Run(fmt.Sprintf("%s/%d", p.vendor, status), func(t *testing.T) {
				r := post(t, p.path(base), p.header, p.body(p.model, fmt.Sprintf("hi [[sim:status=%d]]", status)))
				if r.status != status {
					t.Fatalf("status %d, want %d", r.status, status)
				}
				if got := p.errType(r.body); got != want[p.vendor][status] {
					t.Fatalf("error type %q, want %q: %s", got, want[p.vendor][status], r.raw)
				}
				if msg, _ := get(r.body, "error", "message").(string); msg == "" {
					t.Fatalf("no error message: %s", r.raw)
				}
				if p.vendor == "anthropic" && r.body["type"] != "error" {
					t.Fatalf("anthropic error body needs type error: %s", r.raw)
				}
				ra := r.header.Get("retry-after")
				switch {
				case status == 429 && p.vendor == "gemini":
					if !strings.Contains(r.raw, `"retryDelay":"1s"`) || !strings.Contains(r.raw, "google.rpc.RetryInfo") {
						t.Fatalf("gemini 429 needs RetryInfo: %s", r.raw)
					}
				case status == 429:
					if ra != "1" {
						t.Fatalf("retry-after %q", ra)
					}
				case ra != "":
					t.Fatalf("unexpected retry-after %q on %d", ra, status)
				}
			})
		}
	}
}

func TestRetryAfterSources(t *testing.T) {
	_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{RetryAfterS: sim.Ptr(7)}},
	}})
	p := protocols[0]
	cases := []struct {
		prompt string
		want   string
	}{
		{"[[sim:status=429]]", "7"},                      // scenario retry_after_s
		{"[[sim:status=429]][[sim:retry_after=3]]", "3"}, // marker wins
		{"[[sim:status=503]][[sim:retry_after=2]]", "2"}, // marker on any status
	}
	for _, tc := range cases {
		r := post(t, p.path(base), p.header, p.body(p.model, tc.prompt))
		if got := r.header.Get("retry-after"); got != tc.want {
			t.Errorf("%s: retry-after %q, want %q", tc.prompt, got, tc.want)
		}
	}
}

func TestValidation(t *testing.T) {
	_, base := newSim(t, sim.Scenario{})
	oa := map[string]string{"Authorization": "Bearer k"}
	an := map[string]string{"x-api-key": "k", "anthropic-version": "2023-06-01"}
	ge := map[string]string{"x-goog-api-key": "k"}
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		name   string
		path   string
		header map[string]string
		body   string
		status int
		msg    string
	}{
		{"openai no auth", "/openai/v1/chat/completions", nil, `{"model":"m",` + msgs + `}`, 401, "didn't provide an API key"},
		{"openai bad json", "/openai/v1/chat/completions", oa, `{"model":`, 400, "could not parse the JSON body"},
		{"openai no model", "/openai/v1/chat/completions", oa, `{` + msgs + `}`, 400, "must provide a model parameter"},
		{"openai no messages", "/openai/v1/chat/completions", oa, `{"model":"m"}`, 400, "Missing required parameter: 'messages'"},
		{"openai empty messages", "/openai/v1/chat/completions", oa, `{"model":"m","messages":[]}`, 400, "empty array"},
		{"openai bad role", "/openai/v1/chat/completions", oa, `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, 400, "Invalid value: 'robot'"},
		{"openai schema without name", "/openai/v1/chat/completions", oa, `{"model":"m",` + msgs + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}`, 400, "json_schema.name"},
		{"openai json_object without the word", "/openai/v1/chat/completions", oa, `{"model":"m",` + msgs + `,"response_format":{"type":"json_object"}}`, 400, "must contain the word 'json'"},
		{"openai max_tokens 0", "/openai/v1/chat/completions", oa, `{"model":"m",` + msgs + `,"max_tokens":0}`, 400, "max_tokens"},
		{"openrouter no auth", "/openrouter/api/v1/chat/completions", nil, `{"model":"m",` + msgs + `}`, 401, "No auth credentials"},
		{"anthropic no key", "/anthropic/v1/messages", map[string]string{"anthropic-version": "2023-06-01"}, `{}`, 401, "x-api-key header is required"},
		{"anthropic no version", "/anthropic/v1/messages", map[string]string{"x-api-key": "k"}, `{}`, 400, "anthropic-version"},
		{"anthropic no model", "/anthropic/v1/messages", an, `{"max_tokens":5,` + msgs + `}`, 400, "model: Field required"},
		{"anthropic no max_tokens", "/anthropic/v1/messages", an, `{"model":"m",` + msgs + `}`, 400, "max_tokens: Field required"},
		{"anthropic no messages", "/anthropic/v1/messages", an, `{"model":"m","max_tokens":5}`, 400, "messages: Field required"},
		{"anthropic system role", "/anthropic/v1/messages", an, `{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`, 400, "Unexpected role"},
		{"gemini no key", "/gemini/v1beta/models/g:generateContent", nil, `{}`, 403, "unregistered callers"},
		{"gemini no contents", "/gemini/v1beta/models/g:generateContent", ge, `{}`, 400, "contents is not specified"},
		{"gemini bad role", "/gemini/v1beta/models/g:generateContent", ge, `{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}`, 400, "valid role"},
		{"gemini schema without mime", "/gemini/v1beta/models/g:generateContent", ge, `{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"responseSchema":{"type":"OBJECT"}}}`, 400, "response_mime_type"},
		{"gemini other method", "/gemini/v1beta/models/g:countTokens", ge, `{}`, 404, "generateContent"},
		{"gemini key in query", "/gemini/v1beta/models/g:generateContent?key=k", nil, `{"contents":[{"parts":[{"text":"x"}]}]}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, base+tc.path, tc.header, tc.body)
			if r.status != tc.status || !strings.Contains(r.raw, tc.msg) {
				t.Fatalf("got %d %s, want %d containing %q", r.status, r.raw, tc.status, tc.msg)
			}
		})
	}
}

func TestRPMLimit(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.vendor, func(t *testing.T) {
			_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
				p.vendor: {Models: map[string]sim.Behavior{p.model: {RPM: sim.Ptr(3)}}},
			}})
			for i := 0; i < 3; i++ {
				r := post(t, p.path(base), p.header, p.body(p.model, "hello"))
				if r.status != 200 {
					t.Fatalf("call %d: %d %s", i, r.status, r.raw)
				}
				switch p.vendor {
				case "openai":
					if r.header.Get("x-ratelimit-limit-requests") != "3" || r.header.Get("x-ratelimit-remaining-requests") != strconv.Itoa(2-i) || r.header.Get("x-ratelimit-reset-requests") == "" {
						t.Fatalf("rate headers %v", r.header)
					}
				case "anthropic":
					if r.header.Get("anthropic-ratelimit-requests-limit") != "3" || r.header.Get("anthropic-ratelimit-requests-remaining") != strconv.Itoa(2-i) {
						t.Fatalf("rate headers %v", r.header)
					}
					if _, err := time.Parse(time.RFC3339, r.header.Get("anthropic-ratelimit-requests-reset")); err != nil {
						t.Fatalf("reset header: %v", err)
					}
				}
			}
			r := post(t, p.path(base), p.header, p.body(p.model, "hello"))
			if r.status != 429 {
				t.Fatalf("4th call: %d", r.status)
			}
			if p.vendor == "gemini" {
				if !strings.Contains(r.raw, `"retryDelay":"60s"`) {
					t.Fatalf("retryDelay: %s", r.raw)
				}
			} else if ra, _ := strconv.Atoi(r.header.Get("retry-after")); ra < 59 || ra > 60 {
				t.Fatalf("retry-after %q", r.header.Get("retry-after"))
			}
			if p.vendor == "openai" && !strings.Contains(r.raw, "Limit 3, Used 3") {
				t.Fatalf("openai 429 message: %s", r.raw)
			}
			// Other models are not limited.
			if p.vendor != "gemini" {
				if r := post(t, p.path(base), p.header, p.body("other-model", "hello")); r.status != 200 {
					t.Fatalf("other model limited: %d", r.status)
				}
			}
		})
	}
}

func TestTPMLimit(t *testing.T) {
	_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{TPM: sim.Ptr(200), RetryAfterS: sim.Ptr(5)}},
	}})
	p := protocols[0]
	var ok, limited int
	for i := 0; i < 20; i++ {
		r := post(t, p.path(base), p.header, p.body(p.model, strings.Repeat("word ", 40)))
		switch r.status {
		case 200:
			ok++
		case 429:
			limited++
			if r.header.Get("retry-after") != "5" || !strings.Contains(r.raw, "tokens per min") {
				t.Fatalf("429: %v %s", r.header, r.raw)
			}
		default:
			t.Fatalf("status %d", r.status)
		}
	}
	if ok == 0 || limited == 0 {
		t.Fatalf("ok=%d limited=%d", ok, limited)
	}
}

func TestOutagesAndForcedStatus(t *testing.T) {
	p := protocols[2] // anthropic
	at := time.Now().Add(-time.Second)
	cases := []struct {
		name     string
		behavior sim.Behavior
		steps    []struct {
			wait   time.Duration
			status int
		}
	}{
		{"forced status", sim.Behavior{Status: sim.Ptr(503)}, []struct {
			wait   time.Duration
			status int
		}{{0, 503}, {0, 503}}},
		{"outage now then recovery", sim.Behavior{Outages: []sim.Outage{{DurationMS: 300, Status: 529}}}, []struct {
			wait   time.Duration
			status int
		}{{0, 529}, {400 * time.Millisecond, 200}}},
		{"outage later", sim.Behavior{Outages: []sim.Outage{{StartAfterMS: 300, DurationMS: 60_000}}}, []struct {
			wait   time.Duration
			status int
		}{{0, 200}, {400 * time.Millisecond, 503}}},
		{"outage at absolute time", sim.Behavior{Outages: []sim.Outage{{At: &at, DurationMS: 60_000, Status: 500}}}, []struct {
			wait   time.Duration
			status int
		}{{0, 500}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{"anthropic": {Behavior: tc.behavior}}})
			for i, st := range tc.steps {
				time.Sleep(st.wait)
				if r := post(t, p.path(base), p.header, p.body(p.model, "hi")); r.status != st.status {
					t.Fatalf("step %d: status %d, want %d", i, r.status, st.status)
				}
			}
		})
	}
}

func TestModelOverrideInheritance(t *testing.T) {
	_, base := newSim(t, sim.Scenario{
		Defaults: sim.Behavior{Status: sim.Ptr(500)},
		Vendors: map[string]sim.VendorScenario{"openai": {
			Behavior: sim.Behavior{Status: sim.Ptr(503)},
			Models:   map[string]sim.Behavior{"healthy": {Status: sim.Ptr(0)}},
		}},
	})
	p := protocols[0]
	cases := []struct {
		model string
		path  string
		want  int
	}{
		{"healthy", p.path(base), 200},
		{"sick", p.path(base), 503},
		{"any", base + "/anthropic/v1/messages", 500}, // defaults
	}
	for _, tc := range cases {
		hdr := p.header
		body := p.body(tc.model, "hi")
		if strings.Contains(tc.path, "anthropic") {
			hdr, body = protocols[2].header, protocols[2].body(tc.model, "hi")
		}
		if r := post(t, tc.path, hdr, body); r.status != tc.want {
			t.Errorf("%s: %d, want %d", tc.model, r.status, tc.want)
		}
	}
}

func TestErrorRateEvenlySpread(t *testing.T) {
	s, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"gemini": {Behavior: sim.Behavior{ErrorRate: sim.Ptr(0.3), ErrorStatus: sim.Ptr(503)}},
	}})
	p := protocols[3]
	for i := 0; i < 100; i++ {
		post(t, p.path(base), p.header, p.body(p.model, "hi"))
	}
	mc := s.Calls().Model("gemini", p.model)
	if mc.Calls != 100 || mc.ByStatus[503] < 29 || mc.ByStatus[503] > 31 || mc.ByStatus[200]+mc.ByStatus[503] != 100 {
		t.Fatalf("calls %+v", mc)
	}
}

func TestJSONContent(t *testing.T) {
	schema := `{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer","minimum":3,"maximum":3}},"required":["name","n"]}`
	check := func(content string) error {
		var v struct {
			Name *string `json:"name"`
			N    *int    `json:"n"`
		}
		if err := json.Unmarshal([]byte(content), &v); err != nil {
			return err
		}
		if v.Name == nil || v.N == nil || *v.N != 3 {
			return fmt.Errorf("does not satisfy schema: %s", content)
		}
		return nil
	}
	bodies := map[string]func(model, prompt string) string{
		"openai": func(model, prompt string) string {
			return `{"model":` + q(model) + `,"messages":[{"role":"user","content":` + q(prompt) + `}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":` + schema + `}}}`
		},
		"anthropic": func(model, prompt string) string {
			return `{"model":` + q(model) + `,"max_tokens":500,"system":` + q("Respond with a single JSON object. The JSON object must conform to this JSON Schema:\n"+schema) + `,"messages":[{"role":"user","content":` + q(prompt) + `}]}`
		},
		"gemini": func(_, prompt string) string {
			return `{"contents":[{"parts":[{"text":` + q(prompt) + `}]}],"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":` + schema + `}}`
		},
	}
	cases := []struct {
		name      string
		scenario  sim.Behavior
		prompt    string
		wantValid bool
		wantJSON  bool
	}{
		{"valid", sim.Behavior{}, "describe a cat", true, true},
		{"marker invalid", sim.Behavior{}, "describe a cat [[sim:invalid_json]]", false, false},
		{"rate 1 invalid", sim.Behavior{InvalidJSONRate: sim.Ptr(1.0)}, "describe a dog", false, false},
		{"rate 0 valid", sim.Behavior{InvalidJSONRate: sim.Ptr(0.0)}, "describe a dog", true, true},
		{"schema mismatch", sim.Behavior{}, "describe a cat [[sim:schema_mismatch]]", false, true},
		{"mismatch rate 1", sim.Behavior{SchemaMismatchRate: sim.Ptr(1.0)}, "describe a cow", false, true},
	}
	for _, p := range protocols {
		if bodies[p.vendor] == nil {
			continue
		}
		for _, tc := range cases {
			t.Run(p.vendor+"/"+tc.name, func(t *testing.T) {
				_, base := newSim(t, sim.Scenario{Defaults: tc.scenario})
				r := post(t, p.path(base), p.header, bodies[p.vendor](p.model, tc.prompt))
				if r.status != 200 {
					t.Fatalf("status %d %s", r.status, r.raw)
				}
				content := p.content(r.body)
				if err := check(content); (err == nil) != tc.wantValid {
					t.Fatalf("content %q: valid=%v, want %v", content, err == nil, tc.wantValid)
				}
				if json.Valid([]byte(content)) != tc.wantJSON {
					t.Fatalf("content %q: json.Valid=%v", content, !tc.wantJSON)
				}
			})
		}
	}
}

func TestContentMarkers(t *testing.T) {
	_, base := newSim(t, sim.Scenario{})
	for _, p := range protocols {
		t.Run(p.vendor, func(t *testing.T) {
			r := post(t, p.path(base), p.header, p.body(p.model, "hi [[sim:empty]]"))
			if _, out, _ := p.usage(r.body); r.status != 200 || p.content(r.body) != "" || out != 0 {
				t.Fatalf("empty: %s", r.raw)
			}
			r = post(t, p.path(base), p.header, p.body(p.model, "hi [[sim:length]]"))
			if f := p.finish(r.body); f != "length" && f != "max_tokens" && f != "MAX_TOKENS" {
				t.Fatalf("length: %s", r.raw)
			}
			start := time.Now()
			post(t, p.path(base), p.header, p.body(p.model, "hi [[sim:delay_ms=120]]"))
			if time.Since(start) < 120*time.Millisecond {
				t.Fatalf("delay marker ignored")
			}
		})
	}
}

func TestLatency(t *testing.T) {
	_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Models: map[string]sim.Behavior{"slow": {Latency: &sim.Latency{BaseMS: 150, JitterMS: 20}}}},
	}})
	p := protocols[0]
	cases := []struct {
		model    string
		min, max time.Duration
	}{
		{"slow", 150 * time.Millisecond, 2 * time.Second},
		{"fast", 0, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		start := time.Now()
		post(t, p.path(base), p.header, p.body(tc.model, "hi"))
		if el := time.Since(start); el < tc.min || el > tc.max {
			t.Errorf("%s: took %v, want within [%v, %v]", tc.model, el, tc.min, tc.max)
		}
	}
}

func TestCallsAndControlEndpoint(t *testing.T) {
	s := sim.New(sim.Scenario{}, zerolog.Nop())
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	ctl := sim.Control{BaseURL: "http://" + addr}
	p := protocols[0]
	url := sim.BaseURL(addr, "openai") + "/chat/completions"

	if err := ctl.SetScenario(ctx, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Latency: &sim.Latency{BaseMS: 1}}, Models: map[string]sim.Behavior{"a": {Status: sim.Ptr(500)}}},
	}}); err != nil {
		t.Fatal(err)
	}
	// PATCH one model of one vendor: the rest of the scenario stays.
	if err := ctl.Patch(ctx, `{"vendors":{"openai":{"models":{"b":{"status":503}}},"anthropic":{"rpm":10}}}`); err != nil {
		t.Fatal(err)
	}
	sc, err := ctl.Scenario(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oa := sc.Vendors["openai"]
	if oa.Latency == nil || oa.Latency.BaseMS != 1 || *oa.Models["a"].Status != 500 || *oa.Models["b"].Status != 503 || *sc.Vendors["anthropic"].RPM != 10 {
		t.Fatalf("merged scenario %+v", sc)
	}
	// Patching with a Scenario value works the same; null deletes.
	if err := ctl.Patch(ctx, sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Models: map[string]sim.Behavior{"c": {Status: sim.Ptr(429)}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Patch(ctx, `{"vendors":{"anthropic":null}}`); err != nil {
		t.Fatal(err)
	}
	sc, _ = ctl.Scenario(ctx)
	if _, ok := sc.Vendors["anthropic"]; ok || sc.Vendors["openai"].Models["c"].Status == nil || sc.Vendors["openai"].Models["a"].Status == nil {
		t.Fatalf("after patches %+v", sc)
	}
	// Invalid scenarios are refused.
	for _, bad := range []string{`{"vendors":{"openai":{"error_rate":2}}}`, `{"vendors":{"openai":{"bogus":1}}}`, `[1]`} {
		if err := ctl.Patch(ctx, bad); err == nil {
			t.Errorf("patch %s accepted", bad)
		}
	}

	for model, n := range map[string]int{"a": 2, "b": 3, "c": 1, "ok": 4} {
		for i := 0; i < n; i++ {
			post(t, url, p.header, p.body(model, "hi"))
		}
	}
	calls, err := ctl.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		model  string
		status int
		n      int64
	}{{"a", 500, 2}, {"b", 503, 3}, {"c", 429, 1}, {"ok", 200, 4}}
	for _, tc := range cases {
		mc := calls.Model("openai", tc.model)
		if mc.Calls != tc.n || mc.ByStatus[tc.status] != tc.n || mc.PeakPerMinute < 1 {
			t.Errorf("%s: %+v", tc.model, mc)
		}
	}
	if calls.Total != 10 || calls.Vendor("openai").Calls != 10 || calls.Model("openai", "ok").OutputTokens == 0 {
		t.Fatalf("calls %+v", calls)
	}
	if err := ctl.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := ctl.Calls(ctx); calls.Total != 0 {
		t.Fatalf("after reset %+v", calls)
	}
}

func TestOutageSurvivesUnrelatedPatch(t *testing.T) {
	s, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{
		"openai": {Behavior: sim.Behavior{Outages: []sim.Outage{{StartAfterMS: 250, DurationMS: 60_000}}}},
	}})
	p := protocols[0]
	time.Sleep(150 * time.Millisecond)
	if _, err := s.PatchScenario([]byte(`{"vendors":{"gemini":{"rpm":5}}}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // 300 ms after install: inside the outage
	if r := post(t, p.path(base), p.header, p.body(p.model, "hi")); r.status != 503 {
		t.Fatalf("status %d: the outage clock restarted on an unrelated patch", r.status)
	}
}

func TestConcurrentCalls(t *testing.T) {
	s, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Behavior: sim.Behavior{RPM: sim.Ptr(50)}}}})
	p := protocols[0]
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 25; j++ {
				req, _ := http.NewRequest(http.MethodPost, p.path(base), bytes.NewBufferString(p.body(p.model, "hi")))
				for k, v := range p.header {
					req.Header.Set(k, v)
				}
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	mc := s.Calls().Model("openai", p.model)
	if mc.Calls != 200 || mc.ByStatus[200] != 50 || mc.ByStatus[429] != 150 || mc.PeakPerMinute < 100 {
		t.Fatalf("%+v", mc)
	}
}

func TestBaseURL(t *testing.T) {
	cases := map[string]string{
		"openai":     "http://h:1/openai/v1",
		"openrouter": "http://h:1/openrouter/api/v1",
		"anthropic":  "http://h:1/anthropic",
		"gemini":     "http://h:1/gemini",
		"mistral":    "http://h:1/mistral/v1",
	}
	for kind, want := range cases {
		if got := sim.BaseURL("h:1", kind); got != want {
			t.Errorf("%s: %s, want %s", kind, got, want)
		}
		if got := sim.BaseURL("http://h:1/", kind); got != want {
			t.Errorf("%s with scheme: %s, want %s", kind, got, want)
		}
	}
}

func TestParseScenario(t *testing.T) {
	cases := []struct {
		json string
		ok   bool
	}{
		{`{}`, true},
		{`{"vendors":{"openai":{"latency":{"base_ms":10,"jitter_ms":5},"error_rate":0.1,"error_status":503,"rpm":60,"tpm":1000,"retry_after_s":2,"invalid_json_rate":0.5,"cached_ratio":0.3,"outages":[{"start_after_ms":1000,"duration_ms":500,"status":529},{"at":"2030-01-01T00:00:00Z","duration_ms":1}],"models":{"m":{"status":500}}}}}`, true},
		{`{"vendors":{"openai":{"error_rate":1.5}}}`, false},
		{`{"vendors":{"openai":{"status":200}}}`, false},
		{`{"vendors":{"openai":{"outages":[{"duration_ms":0}]}}}`, false},
		{`{"vendors":{"openai":{"rpm":-1}}}`, false},
		{`{"vendors":{"openai":{"latency":{"base_ms":-1}}}}`, false},
		{`{"vendors":{"openai":{"unknown":1}}}`, false},
		{`{"vendors":{"_sim":{}}}`, false},
	}
	for _, tc := range cases {
		if _, err := sim.ParseScenario([]byte(tc.json)); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.json, err, tc.ok)
		}
	}
}

func BenchmarkCompletion(b *testing.B) {
	for _, p := range protocols {
		b.Run(p.vendor, func(b *testing.B) {
			s := sim.New(sim.Scenario{}, zerolog.Nop())
			h := s.Handler()
			body := p.body(p.model, "Summarise the quarterly report in three bullet points, please.")
			url := p.path("http://sim")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodPost, url, strings.NewReader(body))
					for k, v := range p.header {
						req.Header.Set(k, v)
					}
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}

// TestContextWindowPerProtocol: a prompt that does not fit the scenario's
// context window gets each vendor's own context-length error.
func TestContextWindowPerProtocol(t *testing.T) {
	sc := sim.Scenario{Defaults: sim.Behavior{ContextWindow: sim.Ptr(600)}}
	_, base := newSim(t, sc)
	want := map[string]string{
		"openai":     "context_length_exceeded",
		"openrouter": "maximum context length is 600 tokens",
		"anthropic":  "prompt is too long",
		"gemini":     "exceeds the maximum number of tokens allowed (600)",
	}
	for _, p := range protocols {
		t.Run(p.vendor, func(t *testing.T) {
			if r := post(t, p.path(base), p.header, p.body(p.model, "Short and sweet.")); r.status != 200 {
				t.Fatalf("a prompt that fits: status %d %s", r.status, r.raw)
			}
			r := post(t, p.path(base), p.header, p.body(p.model, strings.Repeat("A very long prompt indeed. ", 200)))
			if r.status != 400 || !strings.Contains(r.raw, want[p.vendor]) {
				t.Fatalf("got %d %s, want 400 with %q", r.status, r.raw, want[p.vendor])
			}
		})
	}
}
