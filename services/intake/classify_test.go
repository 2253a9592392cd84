package intake

import (
	"reflect"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		prompt    string
		format    *envelope.ResponseFormat
		task      string
		pii       []string
		sensitive bool
	}{
		{"chat", "hello there", nil, TaskChat, nil, false},
		{"summarize", "Please summarize this ticket", nil, TaskSummarize, nil, false},
		{"extract", "Extract the names", nil, TaskExtract, nil, false},
		{"json format means extract", "who is it", &envelope.ResponseFormat{Type: "json_object"}, TaskExtract, nil, false},
		{"code", "refactor this python function", nil, TaskCode, nil, false},
		{"reasoning", "solve x step by step", nil, TaskReasoning, nil, false},
		{"email", "mail me at ana@example.com", nil, TaskChat, []string{"email"}, true},
		{"card passes luhn", "card 4111 1111 1111 1111 please", nil, TaskChat, []string{"card"}, true},
		{"card failing luhn is not a card", "number 4111 1111 1111 1112", nil, TaskChat, nil, false},
		{"iban", "pay DE89370400440532013000", nil, TaskChat, []string{"iban"}, true},
		{"phone", "call +44 20 7946 0958", nil, TaskChat, []string{"phone"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Classify(&envelope.Request{ResponseFormat: tt.format, Messages: []envelope.Message{{Role: "user", Content: tt.prompt}}})
			if c.Task != tt.task || c.Sensitive != tt.sensitive || !reflect.DeepEqual(c.PII, tt.pii) {
				t.Fatalf("got task=%s pii=%v sensitive=%v", c.Task, c.PII, c.Sensitive)
			}
			if c.TokenEstimate <= 0 {
				t.Fatalf("token estimate %d", c.TokenEstimate)
			}
		})
	}
}
