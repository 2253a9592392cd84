package edge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// The relay writes what the reply confirms: repeated deltas dropped, text
// the deltas missed sent from the reply, [DONE] only after a success, and
// an error before anything was sent left to the caller as an HTTP error.
func TestRelay(t *testing.T) {
	delta := func(seq int, text string) []byte {
		b, _ := json.Marshal(envelope.DeltaEvent{Type: envelope.DeltaContent, RequestID: "r", Attempt: 1, Seq: seq, Content: text, Vendor: "v", Model: "m"})
		return b
	}
	ok := &envelope.Reply{ID: "r", Status: envelope.StatusOK, Content: "abcdef", Vendor: "v", Model: "m", FinishReason: "stop", Usage: envelope.Usage{InputTokens: 3, OutputTokens: 4}}
	failed := &envelope.Reply{ID: "r", Status: envelope.StatusError, Error: &envelope.Error{Code: envelope.CodeStreamInterrupted, Message: "cut"}}
	tests := []struct {
		name     string
		deltas   [][]byte
		reply    *envelope.Reply
		wantText string
		wantDone bool
		wantErr  string // in-stream error code
		wantHTTP int    // error returned before any write
	}{
		{name: "in order", deltas: [][]byte{delta(0, "ab"), delta(1, "cd"), delta(2, "ef")}, reply: ok, wantText: "abcdef", wantDone: true},
		{name: "repeated delta dropped", deltas: [][]byte{delta(0, "ab"), delta(1, "cd"), delta(1, "cd"), delta(2, "ef")}, reply: ok, wantText: "abcdef", wantDone: true},
		{name: "gap filled from the reply", deltas: [][]byte{delta(0, "ab"), delta(2, "ef")}, reply: ok, wantText: "abcdef", wantDone: true},
		{name: "no deltas (a cached answer)", reply: ok, wantText: "abcdef", wantDone: true},
		{name: "cut after deltas", deltas: [][]byte{delta(0, "ab")}, reply: failed, wantText: "ab", wantErr: envelope.CodeStreamInterrupted},
		{name: "failed before any delta", reply: failed, wantHTTP: http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			st, _ := openAI{}.newStream(&envelope.Request{ID: "r"}, []byte(`{"stream_options":{"include_usage":true}}`), time.Unix(0, 0))
			rl := &relay{st: st, sse: &sseWriter{w: rec, rc: http.NewResponseController(rec)}, w: rec, id: "r"}
			for _, d := range tt.deltas {
				rl.onDelta(d)
			}
			aerr := rl.end(tt.reply, time.Unix(0, 0))
			if tt.wantHTTP != 0 {
				if aerr == nil || aerr.Status != tt.wantHTTP || rec.Body.Len() != 0 {
					t.Fatalf("got %+v and %q", aerr, rec.Body.String())
				}
				return
			}
			if aerr != nil {
				t.Fatal(aerr)
			}
			var text, errCode string
			var done, usage bool
			for _, ev := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n\n") {
				data := strings.TrimPrefix(ev, "data: ")
				if data == "[DONE]" {
					done = true
					continue
				}
				var c struct {
					Choices []struct {
						Delta struct{ Content string } `json:"delta"`
					} `json:"choices"`
					Usage *oaiUsage              `json:"usage"`
					Error *struct{ Code string } `json:"error"`
				}
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatalf("%q: %v", data, err)
				}
				if c.Error != nil {
					errCode = c.Error.Code
				}
				if len(c.Choices) > 0 {
					text += c.Choices[0].Delta.Content
				}
				usage = usage || c.Usage != nil && c.Usage.TotalTokens == 7
			}
			if text != tt.wantText || done != tt.wantDone || errCode != tt.wantErr || usage != tt.wantDone {
				t.Fatalf("text %q done %v err %q usage %v\n%s", text, done, errCode, usage, rec.Body.String())
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
		})
	}
}
