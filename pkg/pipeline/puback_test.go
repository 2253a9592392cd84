package pipeline

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/cpuratio"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// checkPubAck accepts and refuses exactly what jetstream's PublishMsg
// does with the same ack, and keeps the server's error (code 503 still
// counts as JetStream unavailable).
func TestCheckPubAckMatchesJetStream(t *testing.T) {
	tests := []struct {
		name, ack   string
		wantErr     bool
		unavailable bool
	}{
		{"ack", `{"stream":"LLM_PIPELINE","seq":42}`, false, false},
		{"duplicate", `{"stream":"LLM_REPLIES","seq":7,"duplicate": true}`, false, false},
		{"domain", `{"stream":"LLM_PIPELINE","domain":"hub","seq":42}`, false, false},
		{"unavailable", `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, true, true},
		{"error with a stream", `{"stream":"LLM_PIPELINE","seq":0,"error":{"code":400,"err_code":10060,"description":"expected stream sequence does not match"}}`, true, false},
		{"no stream", `{"seq":1}`, true, false},
		{"empty stream", `{"stream":"","seq":1}`, true, false},
		{"not json", `+OK`, true, false},
		{"empty", ``, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPubAck([]byte(tt.ack))
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkPubAck(%s) = %v, want error %v", tt.ack, err, tt.wantErr)
			}
			if natsx.Unavailable(err) != tt.unavailable {
				t.Fatalf("Unavailable(%v) = %v, want %v", err, !tt.unavailable, tt.unavailable)
			}
			// What jetstream.PublishMsg decides with the same bytes.
			var lib struct {
				Error *jetstream.APIError `json:"error"`
				*jetstream.PubAck
			}
			libErr := json.Unmarshal([]byte(tt.ack), &lib) != nil || lib.Error != nil || lib.PubAck == nil || lib.Stream == ""
			if libErr != tt.wantErr {
				t.Fatalf("jetstream would decide error=%v for %s", libErr, tt.ack)
			}
			var apiErr *jetstream.APIError
			if lib.Error != nil && (!errors.As(err, &apiErr) || apiErr.ErrorCode != lib.Error.ErrorCode) {
				t.Fatalf("error %v does not carry the server's %v", err, lib.Error)
			}
		})
	}
}

// maxAckCPURatio bounds checkPubAck's CPU against decoding the ack with
// encoding/json (what jetstream's PublishMsg does), measured in one run:
// about 0.02-0.05 here.
const maxAckCPURatio = 0.3

func TestCheckPubAckCPUAgainstBaseline(t *testing.T) {
	if cpuratio.RaceDetector {
		t.Skip("CPU ratios are measured without the race detector (scripts/test.sh runs them so)")
	}
	ack := []byte(`{"stream":"LLM_PIPELINE","seq":1234567}`)
	const n = 20000
	baseline := func() {
		for range n {
			var a struct {
				Error *jetstream.APIError `json:"error"`
				*jetstream.PubAck
			}
			if json.Unmarshal(ack, &a) != nil || a.PubAck == nil {
				t.Fatal("bad ack")
			}
		}
	}
	current := func() {
		for range n {
			if checkPubAck(ack) != nil {
				t.Fatal("bad ack")
			}
		}
	}
	base, cur, _ := cpuratio.Compare(5, baseline, current)
	cur = max(cur, time.Microsecond) // a clock tick may round it to 0
	ratio := float64(cur) / float64(base)
	t.Logf("CPU per ack: encoding/json %v, checkPubAck %v, ratio %.3f (bound %.2f)", base/n, cur/n, ratio, maxAckCPURatio)
	if ratio > maxAckCPURatio {
		t.Fatalf("checkPubAck uses %.2f of encoding/json's CPU per ack, bound %.2f", ratio, maxAckCPURatio)
	}
}
