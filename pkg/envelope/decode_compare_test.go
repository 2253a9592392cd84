package envelope

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// referenceValidator decodes with encoding/json, as DecodeRequest did
// before it used go-json.
func referenceValidator(t testing.TB) (fast, ref *Validator) {
	t.Helper()
	fast, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	ref = new(Validator)
	*ref = *fast
	ref.unmarshal = json.Unmarshal
	return fast, ref
}

func decodeSeeds() map[string]string {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	head := `{"id":"r1","tenant":"acme",`
	return map[string]string{
		"minimal":                 head + msgs + `}`,
		"harness envelope":        `{"id":"perf1-0","max_tokens":16,"messages":[{"content":"Say hello","role":"user"}],"route":"bench","tenant":"perf"}`,
		"every field":             head + msgs + `,"user":"u","endpoint_tag":"e","prompt_version":"p","environment":"prod","reply_to":"llm.replies.acme.x","route":"bench","model":"mock/gpt-4o-mini","max_tokens":256,"temperature":0.2,"response_format":{"type":"json_schema","json_schema":{"name":"g","schema":{"type":"object"},"strict":true}},"policy":{"quality":"high","max_latency_ms":5000,"max_cost_usd":0.5,"cache":false},"timeout_ms":30000,"metadata":{"team":"search"},"vendor_options":{"openai":{"seed":7}},"stream":true}`,
		"nulls":                   head + msgs + `,"temperature":null,"policy":null,"metadata":null}`,
		"escapes":                 `{"\u0069d":"r1","tenant":"acme","messages":[{"role":"user","content":"a\"b\\c\/d\n\u00e9\ud83d\ude00 lone \ud800 end"}]}`,
		"escaped key":             `{"id":"r1","tenant":"acme","m\u0065ssages":[{"role":"user","content":"hi"}]}`,
		"invalid utf8":            head + "\"messages\":[{\"role\":\"user\",\"content\":\"a\xffb\xc3\"}]}",
		"duplicate keys":          `{"id":"r1","id":"r2","tenant":"acme",` + msgs + `,"max_tokens":5,"max_tokens":7,"messages":[{"role":"system","content":"s"}]}`,
		"duplicate metadata key":  head + msgs + `,"metadata":{"a":"1","a":"2"}}`,
		"mis-cased key":           `{"ID":"r1","id":"r1","tenant":"acme",` + msgs + `}`,
		"integer as float":        head + msgs + `,"max_tokens":16.0}`,
		"integer with exponent":   head + msgs + `,"max_tokens":1e2}`,
		"huge integer":            head + msgs + `,"policy":{"max_latency_ms":1e30}}`,
		"huge integer digits":     head + msgs + `,"policy":{"max_latency_ms":100000000000000000000000000000}}`,
		"max int64":               head + msgs + `,"policy":{"max_latency_ms":9223372036854775807}}`,
		"past max int64":          head + msgs + `,"policy":{"max_latency_ms":9223372036854775808}}`,
		"tiny cost":               head + msgs + `,"policy":{"max_cost_usd":1e-320}}`,
		"huge cost":               head + msgs + `,"policy":{"max_cost_usd":1e400}}`,
		"negative zero":           head + msgs + `,"temperature":-0}`,
		"temperature exponent":    head + msgs + `,"temperature":1.5E0}`,
		"wrong type":              head + msgs + `,"max_tokens":"16"}`,
		"unknown field":           head + msgs + `,"x":1}`,
		"huge content":            head + `"messages":[{"role":"user","content":"` + strings.Repeat("a\\n", 60000) + `"}]}`,
		"too large":               head + `"messages":[{"role":"user","content":"` + strings.Repeat("a", MaxRequestBytes) + `"}]}`,
		"deep vendor options":     head + msgs + `,"vendor_options":{"openai":` + strings.Repeat(`{"a":`, 50) + `1` + strings.Repeat("}", 50) + `}}`,
		"too deep":                head + msgs + `,"vendor_options":{"openai":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat("}", 70) + `}}`,
		"trailing bytes":          head + msgs + `} x`,
		"not json":                `{"id":"r1",`,
		"empty":                   ``,
		"array":                   `[]`,
		"bom":                     "\xEF\xBB\xBF" + head + msgs + `}`,
		"raw message whitespace":  head + msgs + `,"vendor_options":{"openai": { "seed" : 7 } }}`,
		"schema with escapes":     head + msgs + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","description":"\u00e9\""}}}}`,
		"foreign reply_to":        head + msgs + `,"reply_to":"llm.exec.openai"}`,
		"bad response schema":     head + msgs + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":12}}}}`,
		"stream false":            head + msgs + `,"stream":false}`,
		"metadata non-string":     head + msgs + `,"metadata":{"a":1}}`,
		"content null":            head + `"messages":[{"role":"user","content":null}]}`,
		"whitespace everywhere":   " \n{ \"id\" : \"r1\" , \"tenant\" : \"acme\" , \"messages\" : [ { \"role\" : \"user\" , \"content\" : \"hi\" } ] } \n",
		"empty messages":          head + `"messages":[]}`,
		"second message escaped":  head + `"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"\t\u0000"}]}`,
		"metadata escaped key":    head + msgs + `,"metadata":{"t\u00e9am":"s\u00e9"}}`,
		"vendor options null val": head + msgs + `,"vendor_options":{"openai":null}}`,
	}
}

// DecodeRequest with go-json must accept and refuse exactly what it did
// with encoding/json, and read the same request.
func TestDecodeRequestMatchesEncodingJSON(t *testing.T) {
	fast, ref := referenceValidator(t)
	for name, data := range decodeSeeds() {
		t.Run(name, func(t *testing.T) {
			assertDecodeMatches(t, fast, ref, []byte(data))
		})
	}
}

func assertDecodeMatches(t *testing.T, fast, ref *Validator, data []byte) {
	t.Helper()
	got, gotErr := fast.DecodeRequest(data)
	want, wantErr := ref.DecodeRequest(data)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(normaliseInvalid(gotErr), normaliseInvalid(wantErr)) {
		t.Fatalf("DecodeRequest(%.300q)\n got %+v, %v\nwant %+v, %v", data, got, gotErr, want, wantErr)
	}
}

// normaliseInvalid sorts the bytes of a schema message listing additional
// properties: the schema library lists them in a map's order, which varies
// from call to call on both sides (before the decode this file compares).
func normaliseInvalid(err error) error {
	inv, ok := err.(*Invalid)
	if !ok || !strings.Contains(inv.Message, "additional properties") {
		return err
	}
	c := *inv
	b := []byte(c.Message)
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	c.Message = string(b)
	return &c
}

func FuzzDecodeRequestMatchesEncodingJSON(f *testing.F) {
	fast, ref := referenceValidator(f)
	for _, s := range decodeSeeds() {
		if len(s) < 4096 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		assertDecodeMatches(t, fast, ref, data)
	})
}

// BenchmarkDecodeRequest: go_json is DecodeRequest as configured (the fast
// path, then go-json); schema_path sends the envelope through the schema
// validator as before the fast path; encoding_json is the fast path with
// encoding/json decoding.
func BenchmarkDecodeRequest(b *testing.B) {
	fast, ref := referenceValidator(b)
	_, schema := schemaValidators(b)
	for _, env := range []string{"harness envelope", "every field"} {
		data := []byte(fastPathCase(b, env).data)
		for _, bc := range []struct {
			name string
			v    *Validator
		}{{"encoding_json", ref}, {"go_json", fast}, {"schema_path", schema}} {
			name := bc.name
			if env != "harness envelope" {
				name = strings.ReplaceAll(env, " ", "_") + "/" + name
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := bc.v.DecodeRequest(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// A plain envelope takes the go-json decode: a fallback to encoding/json on
// every request (a guard gone wrong) would only show as CPU.
func TestDecodeRequestCommonCaseTakesGoJSON(t *testing.T) {
	fast, ref := referenceValidator(t)
	data := []byte(decodeSeeds()["harness envelope"])
	got := testing.AllocsPerRun(50, func() { _, _ = fast.DecodeRequest(data) })
	want := testing.AllocsPerRun(50, func() { _, _ = ref.DecodeRequest(data) })
	if got > want-5 {
		t.Fatalf("DecodeRequest allocates %.0f objects per envelope, with encoding/json %.0f: the go-json decode is not taken", got, want)
	}
}
