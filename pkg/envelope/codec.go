package envelope

import (
	gojson "github.com/goccy/go-json"
)

// UnmarshalWork decodes a work envelope. It is the hot path of every stage
// after intake (router, executor, gate each decode the envelope once per
// message): go-json decodes it with a fraction of encoding/json's CPU
// (BenchmarkUnmarshalWork) and reads every envelope the stages write as
// encoding/json does (TestUnmarshalWorkMatchesEncodingJSON); unlike it, it
// ignores a key whose case differs from the tag, which no stage writes.
// Encoding stays on encoding/json, whose omitzero tags go-json does not know.
func UnmarshalWork(data []byte, w *Work) error {
	return UnmarshalInternal(data, w)
}

// UnmarshalInternal decodes a message one of the stages wrote (a work
// envelope, a telemetry event) with go-json, under the same terms as
// UnmarshalWork. Client input goes through the Validator instead.
func UnmarshalInternal(data []byte, v any) error {
	return gojson.Unmarshal(data, v)
}
