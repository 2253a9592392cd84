package ledger_test

import (
	"encoding/json"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// The two messages the ledger decodes per request: the started attempt
// event and the request event carrying the finished attempt row.
func ledgerEvents(b *testing.B) (started, request []byte) {
	a := attemptEvent("req_bench", 1, "openai", "gpt-4o-mini")
	s := a
	s.Outcome, s.InputTokens, s.OutputTokens, s.CachedTokens = envelope.OutcomeStarted, 0, 0, 0
	q := requestEvent("req_bench")
	q.AttemptEvents = []envelope.AttemptEvent{a}
	var err error
	if started, err = json.Marshal(s); err != nil {
		b.Fatal(err)
	}
	if request, err = json.Marshal(q); err != nil {
		b.Fatal(err)
	}
	return started, request
}

// BenchmarkDecodeEvents compares the ledger's decoder of a request's
// telemetry (envelope.UnmarshalInternal, go-json) with encoding/json.
func BenchmarkDecodeEvents(b *testing.B) {
	started, request := ledgerEvents(b)
	for _, dec := range []struct {
		name string
		fn   func([]byte, any) error
	}{{"encoding_json", json.Unmarshal}, {"unmarshal_internal", envelope.UnmarshalInternal}} {
		b.Run(dec.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var a envelope.AttemptEvent
				var q envelope.RequestEvent
				if dec.fn(started, &a) != nil || dec.fn(request, &q) != nil {
					b.Fatal("decode")
				}
			}
		})
	}
}
