package sim_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/adapters"
	"github.com/switchyard-llm/switchyard/services/sim"
)

// TestStreamScenarioFaults sets per-model stream faults through the
// control endpoint (PATCH /_sim/scenario) and checks what each adapter
// makes of them, in every wire protocol.
func TestStreamScenarioFaults(t *testing.T) {
	s := sim.New(sim.Scenario{}, zerolog.Nop())
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctl := sim.Control{BaseURL: "http://" + addr}
	models := map[string]sim.Behavior{
		"paced":       {Stream: &sim.StreamBehavior{ChunkDelayMS: 20, WordsPerChunk: 2}},
		"stall-first": {Stream: &sim.StreamBehavior{StallFirstMS: 10_000}},
		"stall-after": {Stream: &sim.StreamBehavior{StallAfterChunks: sim.Ptr(2), StallMS: 10_000}},
		"short-stall": {Stream: &sim.StreamBehavior{StallAfterChunks: sim.Ptr(1), StallMS: 50}},
		"cut":         {Stream: &sim.StreamBehavior{CutAfterChunks: sim.Ptr(3)}},
		"malformed":   {Stream: &sim.StreamBehavior{MalformedAfterChunks: sim.Ptr(1)}},
		"error":       {Stream: &sim.StreamBehavior{ErrorAfterChunks: sim.Ptr(1)}},
		"refuse":      {Stream: &sim.StreamBehavior{RefuseAfterChunks: sim.Ptr(2)}},
		"no-end":      {Stream: &sim.StreamBehavior{OmitEndMarker: true}},
		"no-prefill":  {RejectPrefill: sim.Ptr(true)},
	}
	patch := sim.Scenario{Vendors: map[string]sim.VendorScenario{}}
	for _, v := range []string{"openai", "openrouter", "anthropic", "gemini"} {
		patch.Vendors[v] = sim.VendorScenario{Models: models}
	}
	if err := ctl.Patch(context.Background(), patch); err != nil {
		t.Fatal(err)
	}
	limits := provider.StreamOptions{FirstTokenTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	cases := []struct {
		model   string
		prefill bool
		class   provider.Class // "": success
		deltas  int            // delivered before the failure
	}{
		{"paced", false, "", 0},
		{"short-stall", false, "", 0},
		{"no-end", false, "", 0},
		{"no-prefill", false, "", 0},
		{"stall-first", false, provider.ClassStreamStalled, 0},
		{"stall-after", false, provider.ClassStreamStalled, 2},
		{"cut", false, provider.ClassStreamCut, 3},
		{"malformed", false, provider.ClassBadResponse, 1},
		{"error", false, provider.ClassServerError, 1},
		{"refuse", false, provider.ClassContentRefused, 2},
		{"no-prefill", true, provider.ClassPrefillUnsupported, 0},
	}
	for _, kind := range []string{"openai", "openrouter", "anthropic", "gemini"} {
		a, err := adapters.New(kind, adapters.Config{BaseURL: sim.BaseURL(addr, kind), APIKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s/prefill=%v", kind, tc.model, tc.prefill), func(t *testing.T) {
				t.Parallel()
				req := &provider.Request{Model: tc.model, MaxTokens: 200, Messages: []envelope.Message{
					{Role: "user", Content: "Tell me about the harbour at dawn."}}}
				if tc.prefill {
					req.Messages = append(req.Messages, envelope.Message{Role: "assistant", Content: "At dawn,"})
				}
				var deltas []string
				start := time.Now()
				resp, err := a.(provider.Streamer).Stream(context.Background(), req, limits, func(d provider.Delta) error {
					deltas = append(deltas, d.Content)
					return nil
				})
				took := time.Since(start)
				if tc.class == "" {
					if err != nil {
						t.Fatal(err)
					}
					whole, err := a.Complete(context.Background(), req)
					if err != nil {
						t.Fatal(err)
					}
					if strings.Join(deltas, "") != resp.Content || resp.Content != whole.Content || resp.Usage != whole.Usage {
						t.Fatalf("streamed %q %+v, whole %q %+v", resp.Content, resp.Usage, whole.Content, whole.Usage)
					}
					if tc.model == "paced" {
						// Two words a chunk, 20 ms apart.
						want := (len(strings.Fields(whole.Content)) + 1) / 2
						if len(deltas) != want || took < time.Duration(want-1)*20*time.Millisecond {
							t.Fatalf("%d chunks in %v, want %d chunks 20 ms apart", len(deltas), took, want)
						}
					}
					return
				}
				ve := provider.AsError(err)
				if ve == nil || (ve.Class != tc.class && !(tc.class == provider.ClassServerError && ve.Class == provider.ClassOverloaded)) {
					t.Fatalf("got %v (resp %+v), want %s", err, resp, tc.class)
				}
				if len(deltas) != tc.deltas {
					t.Fatalf("%d deltas before %s, want %d", len(deltas), ve.Class, tc.deltas)
				}
				if took > 3*time.Second {
					t.Fatalf("failing took %v", took)
				}
			})
		}
	}
}

// readSSE posts body and returns the raw event-stream lines.
func readSSE(t *testing.T, url string, header map[string]string, body string) (int, []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	return resp.StatusCode, lines
}

// TestStreamWireFormat checks the simulator's streams against each
// vendor's documented event sequence, and that streaming requests obey
// the same validation and rate limits.
func TestStreamWireFormat(t *testing.T) {
	_, base := newSim(t, sim.Scenario{Vendors: map[string]sim.VendorScenario{"openai": {Models: map[string]sim.Behavior{"limited": {RPM: sim.Ptr(1)}}}}})
	oa, or, an := protocols[0], protocols[1], protocols[2]
	msgs := `"messages":[{"role":"user","content":"Say hello."}]`
	t.Run("openai include_usage", func(t *testing.T) {
		status, lines := readSSE(t, oa.path(base), oa.header, `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},`+msgs+`}`)
		n := len(lines)
		if status != 200 || n < 4 || lines[n-1] != "data: [DONE]" || !strings.Contains(lines[n-2], `"choices":[]`) || !strings.Contains(lines[n-2], `"prompt_tokens"`) ||
			!strings.Contains(lines[n-3], `"finish_reason":"stop"`) || !strings.Contains(lines[0], `"role":"assistant"`) {
			t.Fatalf("status %d stream %q", status, lines)
		}
	})
	t.Run("openai without usage", func(t *testing.T) {
		_, lines := readSSE(t, oa.path(base), oa.header, `{"model":"gpt-4o-mini","stream":true,`+msgs+`}`)
		if strings.Contains(strings.Join(lines, "\n"), `"prompt_tokens"`) {
			t.Fatalf("usage sent without stream_options.include_usage: %q", lines)
		}
	})
	t.Run("openrouter comment", func(t *testing.T) {
		_, lines := readSSE(t, or.path(base), or.header, `{"model":"openai/gpt-4o-mini","stream":true,`+msgs+`}`)
		if lines[0] != ": OPENROUTER PROCESSING" || lines[len(lines)-1] != "data: [DONE]" {
			t.Fatalf("stream %q", lines)
		}
	})
	t.Run("anthropic event order", func(t *testing.T) {
		_, lines := readSSE(t, an.path(base), an.header, `{"model":"claude-haiku-4-5","max_tokens":100,"stream":true,`+msgs+`}`)
		var events []string
		for _, l := range lines {
			if e, ok := strings.CutPrefix(l, "event: "); ok && (len(events) == 0 || events[len(events)-1] != e) {
				events = append(events, e)
			}
		}
		want := "message_start content_block_start ping content_block_delta content_block_stop message_delta message_stop"
		if strings.Join(events, " ") != want {
			t.Fatalf("events %v, want %s", events, want)
		}
	})
	t.Run("gemini needs alt=sse", func(t *testing.T) {
		r := post(t, base+"/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", protocols[3].header, `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`)
		if r.status != 400 {
			t.Fatalf("status %d", r.status)
		}
	})
	t.Run("stream_options without stream", func(t *testing.T) {
		r := post(t, oa.path(base), oa.header, `{"model":"gpt-4o-mini","stream_options":{"include_usage":true},`+msgs+`}`)
		if r.status != 400 {
			t.Fatalf("status %d", r.status)
		}
	})
	t.Run("rate limit before the stream", func(t *testing.T) {
		body := `{"model":"limited","stream":true,` + msgs + `}`
		if status, _ := readSSE(t, oa.path(base), oa.header, body); status != 200 {
			t.Fatalf("first call %d", status)
		}
		if r := post(t, oa.path(base), oa.header, body); r.status != 429 || r.header.Get("retry-after") == "" {
			t.Fatalf("second call %d %v", r.status, r.header)
		}
	})
}

func TestStreamScenarioValidation(t *testing.T) {
	for _, bad := range []string{
		`{"defaults":{"stream":{"chunk_delay_ms":-1}}}`,
		`{"vendors":{"openai":{"models":{"m":{"stream":{"cut_after_chunks":-2}}}}}}`,
		`{"vendors":{"openai":{"stream":{"bogus":1}}}}`,
	} {
		if _, err := sim.ParseScenario([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	sc, err := sim.ParseScenario([]byte(`{"vendors":{"gemini":{"models":{"m":{"reject_prefill":true,"stream":{"chunk_delay_ms":5,"stall_after_chunks":0,"omit_end_marker":true}}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	m := sc.Vendors["gemini"].Models["m"]
	if !*m.RejectPrefill || m.Stream.ChunkDelayMS != 5 || m.Stream.StallAfterChunks == nil || *m.Stream.StallAfterChunks != 0 || !m.Stream.OmitEndMarker {
		t.Fatalf("parsed %+v", m)
	}
}
