package envelope

import (
	gojson "github.com/goccy/go-json"
)

// UnmarshalWork decodes a work envelope. It is the hot path of every stage
// after intake (router, executor, gate each decode the envelope once per
// message): go-json decodes it with a fraction of encoding/json's CPU
// (BenchmarkUnmarshalWork) and reads every envelope the stages write as
// encoding/json does (TestUnmarshalWorkMatchesEncodingJSON), mis-cased
// keys and invalid UTF-8 included (since go-json v0.12).
func UnmarshalWork(data []byte, w *Work) error {
	return UnmarshalInternal(data, w)
}

// UnmarshalInternal decodes a message one of the stages wrote (a work
// envelope, a telemetry event) with go-json, under the same terms as
// UnmarshalWork. Client input goes through the Validator instead.
func UnmarshalInternal(data []byte, v any) error {
	return gojson.Unmarshal(data, v)
}

// MarshalInternal encodes a message a stage writes (a work envelope, an
// event, a reply) with go-json: every stage encodes at least one work
// envelope per message, and encoding/json's reflection was the largest JSON
// item of a request's CPU. go-json writes the same bytes as encoding/json
// (omitzero, HTML escaping, floats, raw messages included:
// TestMarshalInternalMatchesEncodingJSON, FuzzMarshalWorkMatchesEncodingJSON)
// with a fraction of its CPU (BenchmarkMarshalWork).
func MarshalInternal(v any) ([]byte, error) {
	return gojson.Marshal(v)
}
