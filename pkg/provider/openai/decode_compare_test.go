package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func stdUnmarshal(body []byte, w *wireResponse) error { return json.Unmarshal(body, w) }

func responseSeeds() map[string]string {
	return map[string]string{
		"harness mock":          `{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed mock completion."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}`,
		"details and cost":      `{"choices":[{"message":{"content":"hello"},"finish_reason":"length"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":3},"completion_tokens_details":{"reasoning_tokens":1},"cost":0.0012}}`,
		"refusal":               `{"choices":[{"message":{"content":null,"refusal":"no"}}]}`,
		"tool calls":            `{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function"}]},"finish_reason":"tool_calls"}]}`,
		"error body":            `{"error":{"message":"x","code":502,"type":"server_error"}}`,
		"error null":            `{"error":null,"choices":[{"message":{"content":"ok"}}]}`,
		"choice error":          `{"choices":[{"error":{"message":"upstream","code":429}}]}`,
		"choice error no msg":   `{"choices":[{"error":{"code":429}}]}`,
		"no choices":            `{"choices":[]}`,
		"choices null":          `{"choices":null,"usage":{"prompt_tokens":-5}}`,
		"choice null":           `{"choices":[null]}`,
		"no message":            `{"choices":[{"finish_reason":"stop"}]}`,
		"empty":                 ``,
		"null":                  `null`,
		"array":                 `[]`,
		"not json":              `<html>bad gateway</html>`,
		"truncated":             `{"choices":[{"message":{"content":"hel`,
		"trailing bytes":        `{"choices":[{"message":{"content":"ok"}}]} x`,
		"escapes":               `{"choices":[{"message":{"content":"a\"b\\c\/d\n\u00e9\ud83d\ude00 lone \ud800 end"}}]}`,
		"escaped key":           `{"ch\u006fices":[{"message":{"c\u006fntent":"ok"}}]}`,
		"mixed case keys":       `{"Choices":[{"MESSAGE":{"Content":"ok"},"Finish_Reason":"stop"}],"USAGE":{"Prompt_Tokens":3}}`,
		"kelvin key":            "{\"choices\":[{\"message\":{\"content\":\"ok\"}}],\"usage\":{\"prompt_to\u212aens\":3}}",
		"escaped kelvin key":    `{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_to\u212Aens":3}}`,
		"long s key":            "{\"choices\":[{\"me\u017f\u017fage\":{\"content\":\"ok\"}}]}",
		"invalid utf8":          "{\"choices\":[{\"message\":{\"content\":\"a\xffb\xc3\"}}]}",
		"duplicate keys":        `{"choices":[{"message":{"content":"a"}}],"choices":[{"message":{"content":"b","content":null,"refusal":"r"}}]}`,
		"duplicate usage":       `{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":3,"prompt_tokens":null,"completion_tokens":2}}`,
		"int as float":          `{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1.0}}`,
		"int with exponent":     `{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1e2}}`,
		"int overflow":          `{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":99999999999999999999}}`,
		"int as string":         `{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":"3"}}`,
		"cost out of range":     `{"choices":[{"message":{"content":"a"}}],"usage":{"cost":1e400}}`,
		"cost negative":         `{"choices":[{"message":{"content":"a"}}],"usage":{"cost":-1}}`,
		"content not a string":  `{"choices":[{"message":{"content":["a"]}}]}`,
		"index as string":       `{"choices":[{"index":"0","message":{"content":"a"}}]}`,
		"unknown fields":        `{"x":{"y":[1,2,{"z":null}]},"choices":[{"message":{"content":"a","audio":null},"logprobs":null}],"system_fingerprint":"fp"}`,
		"huge content":          `{"choices":[{"message":{"content":"` + strings.Repeat(`a\n`, 200000) + `"}}]}`,
		"many choices":          `{"choices":[` + strings.Repeat(`{"message":{"content":"a"}},`, 5000) + `{"message":{"content":"b"}}]}`,
		"deep unknown":          `{"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `,"choices":[{"message":{"content":"a"}}]}`,
		"too deep unknown":      `{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `,"choices":[{"message":{"content":"a"}}]}`,
		"whitespace everywhere": " \n{ \"choices\" : [ { \"message\" : { \"content\" : \"ok\" } , \"finish_reason\" : \"stop\" } ] } \n",
		"finish unknown":        `{"choices":[{"message":{"content":"a"},"finish_reason":"weird"}]}`,
	}
}

// DecodeResponse with go-json must accept, refuse and read every body as
// it did with encoding/json.
func TestDecodeResponseMatchesEncodingJSON(t *testing.T) {
	for name, body := range responseSeeds() {
		t.Run(name, func(t *testing.T) { assertResponseMatches(t, []byte(body)) })
	}
}

func assertResponseMatches(t *testing.T, body []byte) {
	t.Helper()
	got, gotErr := decodeResponse(body, unmarshalResponse)
	want, wantErr := decodeResponse(body, stdUnmarshal)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotErr, wantErr) {
		t.Fatalf("DecodeResponse(%.300q)\n got %+v, %v\nwant %+v, %v", body, got, gotErr, want, wantErr)
	}
}

func FuzzDecodeResponseMatchesEncodingJSON(f *testing.F) {
	for _, s := range responseSeeds() {
		if len(s) < 4096 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) { assertResponseMatches(t, body) })
}

func BenchmarkDecodeResponse(b *testing.B) {
	body := []byte(responseSeeds()["harness mock"])
	for _, bc := range []struct {
		name      string
		unmarshal func([]byte, *wireResponse) error
	}{{"encoding_json", stdUnmarshal}, {"DecodeResponse", unmarshalResponse}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := decodeResponse(body, bc.unmarshal); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A plain completion takes the go-json path: a fallback to encoding/json
// on every body (a guard gone wrong) would only show as CPU.
func TestDecodeResponseCommonCaseTakesGoJSON(t *testing.T) {
	body := []byte(responseSeeds()["harness mock"])
	fast := testing.AllocsPerRun(100, func() { _, _ = decodeResponse(body, unmarshalResponse) })
	std := testing.AllocsPerRun(100, func() { _, _ = decodeResponse(body, stdUnmarshal) })
	if fast > std-5 {
		t.Fatalf("DecodeResponse allocates %.0f objects per body, encoding/json %.0f: the go-json path is not taken", fast, std)
	}
}
