package gate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

func TestJudge(t *testing.T) {
	schema := &envelope.ResponseFormat{Type: "json_schema", JSONSchema: &envelope.JSONSchemaSpec{
		Schema: json.RawMessage(`{"type":"object","required":["total"],"properties":{"total":{"type":"number"}}}`)}}
	tests := []struct {
		name      string
		format    *envelope.ResponseFormat
		content   string
		finish    string
		passed    bool
		truncated bool
		failed    []string
		toxicity  bool
	}{
		{"plain text", nil, "hello", "stop", true, false, nil, false},
		{"empty", nil, "  ", "stop", false, false, []string{CheckNonEmpty}, false},
		{"truncated passes flagged", nil, "hel", "length", true, true, nil, false},
		{"schema ok", schema, `{"total": 3.5}`, "stop", true, false, nil, false},
		{"schema ok in fence", schema, "```json\n{\"total\": 1}\n```", "stop", true, false, nil, false},
		{"schema missing field", schema, `{"sum": 3}`, "stop", false, false, []string{CheckJSONSchema}, false},
		{"schema invalid json", schema, `{"total": `, "stop", false, false, []string{CheckJSONSchema}, false},
		{"json object ok", &envelope.ResponseFormat{Type: "json_object"}, `{"a":1}`, "stop", true, false, nil, false},
		{"content filter is not ok", nil, "Here is", "content_filter", false, false, []string{CheckFinishReason}, false},
		{"refusal", nil, "I'm sorry, but I can't help with that request.", "stop", false, false, []string{CheckRefusal}, false},
		{"refusal with a typographic apostrophe", nil, "I\u2019m sorry, but I cannot assist with that.", "stop", false, false, []string{CheckRefusal}, false},
		{"apology that goes on to answer", nil, "I'm sorry, but I can't be sure; " + strings.Repeat("here is the detailed answer. ", 20), "stop", true, false, nil, false},
		{"abusive answer on a toxicity route", nil, "Only an idiot would ask that.", "stop", false, false, []string{CheckToxicity}, true},
		{"abusive answer elsewhere", nil, "Only an idiot would ask that.", "stop", true, false, nil, false},
		{"a word that merely contains one", nil, "The idiomatic way is a loop; losers of the race retire.", "stop", true, false, nil, true},
		{"json object not object", &envelope.ResponseFormat{Type: "json_object"}, `[1]`, "stop", false, false, []string{CheckJSON}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(&envelope.Request{ResponseFormat: tt.format}, &envelope.Result{Content: tt.content, FinishReason: tt.finish}, Options{Toxicity: tt.toxicity})
			if v.Quality.Passed != tt.passed || v.Truncated != tt.truncated || !reflect.DeepEqual(v.Quality.Failed, tt.failed) {
				t.Fatalf("got passed=%v truncated=%v failed=%v (%s)", v.Quality.Passed, v.Truncated, v.Quality.Failed, v.Quality.Reason)
			}
		})
	}
}
