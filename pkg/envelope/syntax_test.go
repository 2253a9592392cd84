package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// syntaxProblemDecoder is syntaxProblem as it was: the end of the first
// value found by json.Decoder. The reference for the single scan.
func syntaxProblemDecoder(data []byte) string {
	if p := syntaxProblem(data); strings.Contains(p, "byte order mark") || strings.Contains(p, "nests objects") {
		return p
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var first json.RawMessage
	if dec.Decode(&first) != nil {
		return ""
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return fmt.Sprintf("body has %d bytes after the JSON object (at offset %d); send exactly one JSON object", len(rest), dec.InputOffset())
	}
	return ""
}

func syntaxSeeds() []string {
	seeds := []string{
		`{}`, `{} `, `{}x`, `{} x`, `{}{}`, "{}\n{}", `{"a":1} trailing`, `[]`, `[1,2] 3`, `1`, `1 2`, `01`, `1.`, `1.x`, `-`, `-0 1`,
		`1e400`, `1e400 x`, `"a" "b"`, `"a\q"`, `"a`, `true`, `truex`, `tru`, `nullx`, `{"a":truex}`, `{"a":1,}`, `{"a" 1}`,
		`{"a":[1,2}`, ``, ` `, "\t{}\r\n", `{"a":"\u00e9\ud800"}x`, "{\"a\":\"\xff\"} x", "{\"a\":\"\x01\"}", `{"a":{"b":[{"c":null}]}}  {`,
		`}`, `]`, `{"a":1}}`, `[[[]]]]`, `"\u12"`, `{"id":"r1","tenant":"acme","messages":[{"role":"user","content":"hi"}]}`,
		"\xEF\xBB\xBF{}", strings.Repeat("[", 65) + strings.Repeat("]", 65), strings.Repeat("[", 64) + strings.Repeat("]", 64) + "x",
		`{"x":"` + strings.Repeat("a", 100000) + `"} y`,
	}
	return seeds
}

func TestSyntaxProblemMatchesDecoder(t *testing.T) {
	for _, s := range syntaxSeeds() {
		if got, want := syntaxProblem([]byte(s)), syntaxProblemDecoder([]byte(s)); got != want {
			t.Errorf("syntaxProblem(%.100q) = %q; json.Decoder says %q", s, got, want)
		}
	}
}

func FuzzSyntaxProblem(f *testing.F) {
	for _, s := range syntaxSeeds() {
		if len(s) < 4096 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := syntaxProblem(data), syntaxProblemDecoder(data); got != want {
			t.Fatalf("syntaxProblem(%q) = %q; json.Decoder says %q", data, got, want)
		}
	})
}

func BenchmarkSyntaxProblem(b *testing.B) {
	data := []byte(decodeSeeds()["harness envelope"])
	for _, bc := range []struct {
		name string
		fn   func([]byte) string
	}{{"json_decoder", syntaxProblemDecoder}, {"syntaxProblem", syntaxProblem}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if bc.fn(data) != "" {
					b.Fatal("problem")
				}
			}
		})
	}
}

func TestSyntaxProblemDoesNotAllocate(t *testing.T) {
	data := []byte(decodeSeeds()["every field"])
	if n := testing.AllocsPerRun(100, func() { syntaxProblem(data) }); n != 0 {
		t.Fatalf("syntaxProblem allocates %.0f objects on a valid envelope", n)
	}
}
