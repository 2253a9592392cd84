package envelope_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
)

// marshalCases are the messages the stages write, with the values where
// encoders differ: HTML and line-separator escaping, invalid UTF-8, floats
// near the exponent switch, zero times (omitzero), raw messages with
// spaces (encoding/json compacts them), nil and empty slices and maps.
func marshalCases() map[string]any {
	w := sampleWork()
	withRetry := sampleWork()
	withRetry.NotBefore = time.Date(2026, 12, 1, 3, 0, 1, 0, time.FixedZone("x", 3600))
	withRetry.Request.Messages[1].Content = "<b>&amp;</b> \u2028\u2029 \x00\x1f bad:\xff\xfe ok"
	withRetry.Budget = json.RawMessage(" {\n \"tenant\" : \"t1\", \"reserved_usd\" : 1e-7 } ")
	withRetry.Request.VendorOptions = map[string]json.RawMessage{"z": json.RawMessage(`[ 1 , 2 ]`), "a": json.RawMessage(`{"<":">"}`)}
	withRetry.Request.Metadata = map[string]string{}
	withRetry.Attempts = []envelope.AttemptResult{}
	floats := sampleWork()
	floats.Current.CostUSD = 1e-7
	floats.Attempts[0].CostUSD = 1e21
	floats.Request.Policy.MaxCostUSD = 123456789.125
	temp := math.SmallestNonzeroFloat64
	floats.Request.Temperature = &temp
	ev := &envelope.AttemptEvent{RequestID: "r<1>", AttemptID: "a&1", Attempt: 2, TS: time.Unix(1764556800, 5).UTC(),
		Tenant: "t1", Vendor: "mock", Outcome: "ok", CostUSD: 0.000001, VendorCostUSD: 0.0000001, LatencyMS: 3, TraceID: "x\u2028"}
	return map[string]any{
		"full work":      w,
		"minimal work":   &envelope.Work{Key: "k", Request: envelope.Request{ID: "i", Tenant: "t"}},
		"retry, escapes": withRetry,
		"floats":         floats,
		"attempt event":  ev,
		"request event": &envelope.RequestEvent{RequestID: "r", TS: time.Unix(1, 0).UTC(), Status: "ok", CostUSD: 2.5e-5,
			AttemptEvents: []envelope.AttemptEvent{*ev}},
		"reply": &envelope.Reply{ID: "r", Tenant: "t", Status: "ok", Content: "<script>\"hi\"</script>",
			Attempts: w.Attempts, Quality: w.Quality, CostUSD: 7.2e-6},
		"error reply": &envelope.Reply{ID: "r", Tenant: "t", Status: "error", Error: &envelope.Error{Code: "invalid_request", Message: "bad \xff"}},
		"delta":       &envelope.DeltaEvent{Type: envelope.DeltaContent, RequestID: "r", Attempt: 1, Seq: 3},
	}
}

// MarshalInternal must write exactly what encoding/json writes: the stages
// of an older build, the ledger and every client read these bytes.
func TestMarshalInternalMatchesEncodingJSON(t *testing.T) {
	for name, v := range marshalCases() {
		t.Run(name, func(t *testing.T) {
			want, wantErr := json.Marshal(v)
			got, err := envelope.MarshalInternal(v)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("MarshalInternal error %v, encoding/json error %v", err, wantErr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalInternal wrote\n%s\nencoding/json wrote\n%s", got, want)
			}
		})
	}
	// The retry's not_before must be written and an unset one left out, as
	// omitzero says.
	out, err := envelope.MarshalInternal(marshalCases()["retry, escapes"])
	if err != nil || !bytes.Contains(out, []byte(`"not_before":`)) {
		t.Fatalf("not_before missing from %s (%v)", out, err)
	}
	if out, _ := envelope.MarshalInternal(sampleWork()); bytes.Contains(out, []byte(`"not_before"`)) {
		t.Fatalf("zero not_before written: %s", out)
	}
	// A raw message that is not JSON is an error for both.
	bad := sampleWork()
	bad.Budget = json.RawMessage(`{"a":`)
	if _, err := envelope.MarshalInternal(bad); err == nil {
		t.Fatal("MarshalInternal accepted an invalid raw message")
	}
}

// Any work envelope encoding/json can read is written by MarshalInternal
// byte for byte as encoding/json writes it.
func FuzzMarshalWorkMatchesEncodingJSON(f *testing.F) {
	for _, v := range marshalCases() {
		if w, ok := v.(*envelope.Work); ok {
			data, err := json.Marshal(w)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzUnmarshalWorkMatchesEncodingJSON/*")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var w envelope.Work
		if json.Unmarshal(data, &w) != nil {
			return
		}
		want, wantErr := json.Marshal(&w)
		got, err := envelope.MarshalInternal(&w)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("MarshalInternal error %v, encoding/json error %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("MarshalInternal wrote\n%s\nencoding/json wrote\n%s", got, want)
		}
	})
}

func BenchmarkMarshalWork(b *testing.B) {
	w := sampleWork()
	for _, bc := range []struct {
		name    string
		marshal func(any) ([]byte, error)
	}{{"encoding_json", json.Marshal}, {"MarshalInternal", envelope.MarshalInternal}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.marshal(w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
