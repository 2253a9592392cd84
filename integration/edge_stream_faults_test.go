package integration

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// Honest streams through the edge with a streaming client, against the
// simulator's stream faults on the chat route (openai/gpt-4o-mini, then
// anthropic/claude-haiku-4-5, then gemini/gemini-2.5-flash): a stream that
// breaks, stalls or is malformed never ends with [DONE]; before any delta
// it fails over, after deltas it is continued on a prefill-capable target
// or ends with an explicit error; bounded waits come from the route.
func TestEdgeStreamFaults(t *testing.T) {
	n := func(v int) *int { return &v }
	yes := true
	type model struct{ vendor, name string }
	primary := model{"openai", "gpt-4o-mini"}
	tests := []struct {
		name   string
		faults map[model]sim.Behavior
		// prefill lists the models given the prefill capability.
		prefill []model
		stream  policy.RouteStream
		// want: an answer served by wantVendor after the listed failed
		// attempt classes, or an in-stream error with wantCode (and
		// some text before it when wantText).
		wantVendor   string
		wantClasses  []string
		wantCode     string
		wantText     bool
		wantHTTP     int // an error before the stream: its status
		within       time.Duration
		wantContains string // in the error message
		// anthropic streams through /v1/messages; wantCode is then the
		// error event's type.
		anthropic bool
	}{
		// The route's first-token limit holds for the fallback too: 1 s
		// leaves its first token room on a loaded machine.
		{name: "stall before the first token fails over", stream: policy.RouteStream{FirstTokenTimeout: policy.Duration{Duration: time.Second}},
			faults:     map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{StallFirstMS: 20000}}},
			wantVendor: "anthropic", wantClasses: []string{"stream_stalled"}, within: 5 * time.Second},
		{name: "cut after deltas ends with an error, never [DONE]",
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{CutAfterChunks: n(3)}}},
			wantCode: envelope.CodeStreamInterrupted, wantText: true},
		{name: "cut after deltas continues on a prefill-capable fallback",
			faults:  map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{CutAfterChunks: n(3)}}},
			prefill: []model{{"anthropic", "claude-haiku-4-5"}}, wantVendor: "anthropic", wantClasses: []string{"stream_cut"}},
		{name: "a fallback's prefill rejection moves on",
			faults: map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{CutAfterChunks: n(2)}},
				{"anthropic", "claude-haiku-4-5"}: {RejectPrefill: &yes}},
			prefill:    []model{{"anthropic", "claude-haiku-4-5"}, {"gemini", "gemini-2.5-flash"}},
			wantVendor: "gemini", wantClasses: []string{"stream_cut", "prefill_unsupported"}},
		{name: "malformed chunk before any delta fails over",
			faults:     map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{MalformedAfterChunks: n(0)}}},
			wantVendor: "anthropic", wantClasses: []string{"bad_response"}},
		{name: "malformed chunk after deltas ends with an error",
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{MalformedAfterChunks: n(2)}}},
			wantCode: envelope.CodeStreamInterrupted, wantText: true},
		{name: "no end marker but complete is a success with usage",
			faults:     map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{OmitEndMarker: true}}},
			wantVendor: "openai"},
		{name: "refusal after deltas is a policy error with the reason",
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{RefuseAfterChunks: n(2)}}},
			wantCode: envelope.CodePolicyBlocked, wantText: true, wantContains: "refused"},
		{name: "anthropic API: refusal after deltas is an error event with the reason", anthropic: true,
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{RefuseAfterChunks: n(2)}}},
			wantCode: "permission_error", wantText: true, wantContains: "refused"},
		{name: "anthropic API: cut after deltas is an error event, never message_stop", anthropic: true,
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{CutAfterChunks: n(3)}}},
			wantCode: "api_error", wantText: true},
		{name: "anthropic API: stall before the first token fails over", anthropic: true, stream: policy.RouteStream{FirstTokenTimeout: policy.Duration{Duration: time.Second}},
			faults:     map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{StallFirstMS: 20000}}},
			wantVendor: "anthropic", wantClasses: []string{"stream_stalled"}, within: 5 * time.Second},
		{name: "refusal before any delta is a 403",
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{RefuseAfterChunks: n(0)}}},
			wantHTTP: http.StatusForbidden, wantContains: "refused"},
		{name: "silence between chunks over the route's idle limit", stream: policy.RouteStream{IdleTimeout: policy.Duration{Duration: 300 * time.Millisecond}},
			faults:   map[model]sim.Behavior{primary: {Stream: &sim.StreamBehavior{StallAfterChunks: n(2), StallMS: 20000}}},
			wantCode: envelope.CodeStreamInterrupted, wantText: true, within: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, withEdge, func(c *app.Config) {
				sc := &sim.Scenario{Vendors: map[string]sim.VendorScenario{}}
				for m, b := range tt.faults {
					v := sc.Vendors[m.vendor]
					if v.Models == nil {
						v.Models = map[string]sim.Behavior{}
					}
					v.Models[m.name] = b
					sc.Vendors[m.vendor] = v
				}
				c.Scenario = sc
				r, _ := c.Policy.Route("chat")
				r.Stream = tt.stream
				// Only the listed models continue a cut answer (the
				// shipped policy gives Anthropic's prefill).
				for i := range c.Policy.Models {
					c.Policy.Models[i].Capabilities = slices.DeleteFunc(slices.Clone(c.Policy.Models[i].Capabilities),
						func(c string) bool { return c == policy.CapabilityPrefill })
				}
				for _, m := range tt.prefill {
					pm, ok := c.Policy.Model(m.vendor, m.name)
					if !ok {
						t.Fatalf("no model %v", m)
					}
					pm.Capabilities = append(slices.Clone(pm.Capabilities), policy.CapabilityPrefill)
				}
			})
			key := e.edgeKey("")
			prompt := "Tell me about harbors and lanterns in ten words or more"
			began := time.Now()
			var r streamResp
			if tt.anthropic {
				r = e.edgeStream("/v1/messages", map[string]string{"x-api-key": key},
					`{"model":"chat","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"`+prompt+`"}]}`)
			} else {
				r = e.edgeStream("/v1/chat/completions", bearerKey(key),
					chatBody("chat", prompt, `,"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}`))
			}
			took := time.Since(began)
			if tt.within > 0 && took > tt.within {
				t.Errorf("took %v, want within %v", took, tt.within)
			}
			id := r.header.Get("x-switchyard-request-id")
			rep := e.replyOf(e.tenant, id)
			if tt.wantHTTP != 0 {
				if r.status != tt.wantHTTP || len(r.events) != 0 || !strings.Contains(r.body, tt.wantContains) {
					t.Fatalf("status %d events %d body %s", r.status, len(r.events), r.body)
				}
				return
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if tt.anthropic {
				s := readAnthropicStream(t, r)
				if tt.wantCode != "" {
					if s.names[len(s.names)-1] != "error" || s.errType != tt.wantCode || slices.Contains(s.names, "message_stop") || (tt.wantText && s.text == "") {
						t.Fatalf("want an error event %s after text, got %v %q text %q", tt.wantCode, s.names, s.errType, s.text)
					}
					if rep.Status != envelope.StatusError || !strings.Contains(rep.Error.Message, tt.wantContains) {
						t.Fatalf("reply %+v", rep.Error)
					}
					return
				}
				wantAnthropicSequence(t, s.names)
				if s.text != rep.Content || rep.Vendor != tt.wantVendor || s.outTokens <= 0 {
					t.Fatalf("text %q (reply %q from %s) usage out %v", s.text, rep.Content, rep.Vendor, s.outTokens)
				}
				return
			}
			s := readOpenAIStream(t, r)
			if tt.wantCode != "" {
				if s.done || s.finish != "" || s.errCode != tt.wantCode || (tt.wantText && s.text == "") {
					t.Fatalf("want an error event %s after text, got done %v finish %q err %q text %q", tt.wantCode, s.done, s.finish, s.errCode, s.text)
				}
				if rep.Status != envelope.StatusError || rep.Error.Code != tt.wantCode || !strings.Contains(rep.Error.Message, tt.wantContains) {
					t.Fatalf("reply %+v", rep.Error)
				}
				return
			}
			if !s.done || s.errCode != "" || s.finish == "" || s.text != rep.Content || s.text == "" {
				t.Fatalf("done %v err %q finish %q text %q, reply %q", s.done, s.errCode, s.finish, s.text, rep.Content)
			}
			if rep.Vendor != tt.wantVendor || len(s.usage) == 0 {
				t.Fatalf("served by %s (want %s), usage %v", rep.Vendor, tt.wantVendor, s.usage)
			}
			var classes []string
			for _, a := range rep.Attempts {
				if a.ErrorClass != "" {
					classes = append(classes, a.ErrorClass)
				}
			}
			if strings.Join(classes, ",") != strings.Join(tt.wantClasses, ",") {
				t.Fatalf("failed attempts %v, want %v", classes, tt.wantClasses)
			}
			if len(tt.prefill) > 0 {
				// The continuing model was sent the cut text as an assistant
				// prefill (the sim's prompt ends with it).
				seen := strings.Split(strings.TrimRight(e.simLastPrompt(rep.Vendor, rep.Model), "\n"), "\n")
				prefill := seen[len(seen)-1]
				if len(strings.Fields(prefill)) < 2 || !strings.HasPrefix(s.text, prefill) || strings.TrimSpace(prefill) != prefill {
					t.Fatalf("the continuing model's prompt %q does not end with the cut text, trimmed (answer %q)", seen, s.text)
				}
				if strings.Contains(s.text, "  ") {
					t.Fatalf("doubled space where the answer was continued: %q", s.text)
				}
			}
		})
	}
}

// The attempt's time budget (its share of the request's deadline) bounds a
// streamed call's silences, not its length: an answer that keeps flowing
// past the share completes within the request's deadline, while a vendor
// silent for the share still fails over.
func TestEdgeStreamAttemptBudget(t *testing.T) {
	tests := []struct {
		name       string
		stream     sim.StreamBehavior
		wantVendor string
	}{
		// Chunks 300 ms apart: several seconds, over the 2 s share.
		{"a long steady stream completes", sim.StreamBehavior{ChunkDelayMS: 300}, "openai"},
		{"a silent first target fails over", sim.StreamBehavior{StallFirstMS: 20000}, "anthropic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, withEdge, func(c *app.Config) {
				st := tt.stream
				c.Scenario = &sim.Scenario{Vendors: map[string]sim.VendorScenario{
					"openai": {Models: map[string]sim.Behavior{"gpt-4o-mini": {Stream: &st}}}}}
			})
			key := e.edgeKey("")
			// 6 s for three targets: each attempt's share is 2 s.
			hdr := map[string]string{"Authorization": "Bearer " + key, "X-Switchyard-Timeout-Ms": "6000"}
			r := e.edgeStream("/v1/chat/completions", hdr, chatBody("chat", "Tell me about harbors and lanterns in many words", `,"max_tokens":64,"stream":true`))
			rep := e.replyOf(e.tenant, r.header.Get("x-switchyard-request-id"))
			s := readOpenAIStream(t, r)
			if !s.done || s.text != rep.Content || rep.Vendor != tt.wantVendor {
				t.Fatalf("done %v err %q, reply from %s (want %s) %+v", s.done, s.errCode, rep.Vendor, tt.wantVendor, rep.Error)
			}
			if tt.wantVendor == "openai" && rep.LatencyMS < 2500 {
				t.Fatalf("the stream took %d ms: not longer than the attempt's share, the test proves nothing", rep.LatencyMS)
			}
		})
	}
}

// simLastPrompt is the prompt text the simulator last answered for a model.
func (e *env) simLastPrompt(vendor, model string) string {
	return e.sys.Sim.Calls().Model(vendor, model).LastPrompt
}
