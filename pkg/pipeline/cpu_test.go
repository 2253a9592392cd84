package pipeline_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/cpuratio"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pipeline"
)

// maxDecodeCPURatio is the committed bound on DecodeWork's CPU against the
// baseline decoder (encoding/json, what DecodeWork used before go-json),
// measured in the same run: about 0.25-0.35 on the development VM, so a
// change that loses the gain (a slower decoder, a second decode) fails
// while machine load, which slows both sides alike, does not.
const maxDecodeCPURatio = 0.6

// Decoding the work envelope was the largest single item of a stage's CPU
// (docs/performance.md): DecodeWork must stay well under the baseline
// decoder's CPU per message.
func TestDecodeWorkCPUAgainstBaseline(t *testing.T) {
	if cpuratio.RaceDetector {
		t.Skip("CPU ratios are measured without the race detector (scripts/test.sh runs them so)")
	}
	w := sampleWork()
	data, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	baseline := func() {
		for range n {
			var w envelope.Work
			if err := json.Unmarshal(data, &w); err != nil {
				t.Fatal(err)
			}
		}
	}
	current := func() {
		for range n {
			if _, err := pipeline.DecodeWork(data); err != nil {
				t.Fatal(err)
			}
		}
	}
	base, cur, ratio := cpuratio.Compare(5, baseline, current)
	t.Logf("CPU per decode: baseline %v, DecodeWork %v, ratio %.2f (bound %.2f)", base/n, cur/n, ratio, maxDecodeCPURatio)
	if ratio > maxDecodeCPURatio {
		t.Fatalf("DecodeWork uses %.2f of the baseline decoder's CPU, bound %.2f", ratio, maxDecodeCPURatio)
	}
}

// maxMarshalCPURatio bounds the encode of a work envelope (pipeline.Out,
// under WorkOut and every other stage message) against encoding/json, what
// it used before go-json: about 0.5 on the development VM
// (BenchmarkMarshalWork), so going back to encoding/json fails.
const maxMarshalCPURatio = 0.8

func TestMarshalWorkCPUAgainstBaseline(t *testing.T) {
	if cpuratio.RaceDetector {
		t.Skip("CPU ratios are measured without the race detector (scripts/test.sh runs them so)")
	}
	w := sampleWork()
	const n = 10000
	baseline := func() {
		for range n {
			if _, err := json.Marshal(w); err != nil {
				t.Fatal(err)
			}
		}
	}
	current := func() {
		for range n {
			if _, err := pipeline.Out("llm.results", "k", w, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	base, cur, ratio := cpuratio.Compare(5, baseline, current)
	t.Logf("CPU per encode: encoding/json %v, Out %v, ratio %.2f (bound %.2f)", base/n, cur/n, ratio, maxMarshalCPURatio)
	if ratio > maxMarshalCPURatio {
		t.Fatalf("Out uses %.2f of encoding/json's CPU per envelope, bound %.2f", ratio, maxMarshalCPURatio)
	}
}

// sampleWork is a work envelope as the gate hands it back: one attempt and
// its answer.
func sampleWork() *envelope.Work {
	return &envelope.Work{
		Key: "t1:req-1", Route: "bench", Strategy: "fallback", ReceivedAt: time.Now(), Deadline: time.Now().Add(time.Minute),
		Request: envelope.Request{ID: "req-1", Tenant: "t1", Messages: []envelope.Message{{Role: "user", Content: "Say hello"}}, MaxTokens: 16},
		Chain:   []envelope.Target{{Vendor: "mock", Model: "gpt-4o-mini"}},
		Attempts: []envelope.AttemptResult{{Attempt: 1, Vendor: "mock", Model: "gpt-4o-mini", Outcome: "ok", LatencyMS: 1,
			Usage: envelope.Usage{InputTokens: 9, OutputTokens: 12}}},
		Current:     &envelope.Result{Content: "Hello! This is a fixed mock completion.", FinishReason: "stop", Usage: envelope.Usage{InputTokens: 9, OutputTokens: 12}},
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}
