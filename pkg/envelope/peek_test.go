package envelope

import (
	"strings"
	"testing"
)

// peekSeeds are envelopes on which PeekIdentity must answer exactly as its
// reference (the json.Decoder token walk it replaced): valid, invalid,
// duplicate keys, escapes, huge and deep inputs.
func peekSeeds() map[string]string {
	body := `"messages":[{"role":"user","content":"hi"}]`
	return map[string]string{
		"harness envelope":          `{"id":"perf1-0","max_tokens":16,"messages":[{"content":"Say hello","role":"user"}],"route":"bench","tenant":"perf"}`,
		"reply_to":                  `{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.x",` + body + `}`,
		"inbox reply_to":            `{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.abc"}`,
		"foreign reply_to":          `{"id":"r1","tenant":"acme","reply_to":"llm.exec.openai"}`,
		"spaces":                    " \r\n\t{ \"id\" : \"r1\" ,\n\"tenant\"\t:\"acme\" } ",
		"empty object":              `{}`,
		"empty":                     ``,
		"spaces only":               `   `,
		"array":                     `[]`,
		"null":                      `null`,
		"string":                    `"r1"`,
		"bom":                       "\xEF\xBB\xBF{\"id\":\"r1\",\"tenant\":\"acme\"}",
		"trailing bytes":            `{"id":"r1","tenant":"acme"} trailing`,
		"two objects":               `{"id":"r1","tenant":"acme"}{"id":"r2"}`,
		"duplicate id":              `{"id":"r1","id":"r2","tenant":"acme"}`,
		"duplicate after empty":     `{"id":"","id":"r2","tenant":"acme"}`,
		"duplicate after number":    `{"id":1,"id":"r2","tenant":"acme"}`,
		"duplicate escaped":         `{"id":"r1","\u0069d":"r2","tenant":"acme"}`,
		"escaped key":               `{"\u0069d":"r1","tenant":"acme"}`,
		"escaped value":             `{"id":"r\u0031","tenant":"acme"}`,
		"escaped quote in value":    `{"id":"r\"1","tenant":"acme"}`,
		"escaped other value":       `{"id":"r1","tenant":"acme","x":"a\"b\\c\/\b\f\n\r\t\u00e9"}`,
		"bad escape elsewhere":      `{"id":"r1","tenant":"acme","x":"\q"}`,
		"bad escape before":         `{"x":"\q","id":"r1","tenant":"acme"}`,
		"short unicode escape":      `{"id":"r1","tenant":"acme","x":"\u00"}`,
		"non-ascii value":           `{"id":"r1","tenant":"acmé"}`,
		"invalid utf8 value":        "{\"id\":\"r1\",\"tenant\":\"ac\xffme\"}",
		"invalid utf8 elsewhere":    "{\"id\":\"r1\",\"tenant\":\"acme\",\"x\":\"\xff\"}",
		"control byte in string":    "{\"id\":\"r1\",\"tenant\":\"acme\",\"x\":\"a\x01b\"}",
		"tenant not a token":        `{"id":"r1","tenant":"ac.me"}`,
		"id not a token":            `{"id":"r 1","tenant":"acme"}`,
		"tenant too long":           `{"id":"r1","tenant":"` + strings.Repeat("t", 65) + `"}`,
		"id too long":               `{"id":"` + strings.Repeat("i", 129) + `","tenant":"acme"}`,
		"nested id ignored":         `{"x":{"id":"n1","tenant":"n"},"id":"r1","tenant":"acme"}`,
		"id is an object":           `{"id":{"a":"r1"},"tenant":"acme"}`,
		"id is an array":            `{"id":["r1"],"tenant":"acme","id":"r2"}`,
		"id is null":                `{"id":null,"tenant":"acme","id":"r2"}`,
		"values of every kind":      `{"a":true,"b":false,"c":null,"d":-0.5e+3,"e":[1,[2,{}],[]],"f":{"g":{}},"id":"r1","tenant":"acme"}`,
		"missing colon":             `{"id" "r1","tenant":"acme"}`,
		"missing comma":             `{"id":"r1" "tenant":"acme"}`,
		"trailing comma":            `{"id":"r1","tenant":"acme",}`,
		"trailing comma in array":   `{"id":"r1","x":[1,],"tenant":"acme"}`,
		"error after id":            `{"id":"r1","x":[1}, "tenant":"acme"}`,
		"error after both":          `{"id":"r1","tenant":"acme","x":[1}`,
		"truncated":                 `{"id":"r1","tenant":"acme"`,
		"truncated in value":        `{"id":"r1","tenant":"ac`,
		"mismatched close":          `{"id":"r1","x":{"a":1],"tenant":"acme"}`,
		"leading zero":              `{"id":"r1","x":01,"tenant":"acme"}`,
		"bad number":                `{"id":"r1","x":1.,"tenant":"acme"}`,
		"minus only":                `{"id":"r1","x":-,"tenant":"acme"}`,
		"bad literal":               `{"id":"r1","x":nul,"tenant":"acme"}`,
		"literal prefix":            `{"id":"r1","x":truex,"tenant":"acme"}`,
		"number out of range":       `{"id":"r1","x":1e400,"tenant":"acme"}`,
		"long number out of range":  `{"id":"r1","x":` + strings.Repeat("9", 400) + `,"tenant":"acme"}`,
		"long number in range":      `{"id":"r1","x":` + strings.Repeat("9", 300) + `.5,"tenant":"acme"}`,
		"tiny number":               `{"id":"r1","x":1e-400,"tenant":"acme"}`,
		"non-string key":            `{1:"r1","tenant":"acme"}`,
		"deep nesting":              `{"id":"r1","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"tenant":"acme"}`,
		"deep objects":              `{"id":"r1","x":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 100) + `,"tenant":"acme"}`,
		"unclosed deep nesting":     `{"id":"r1","tenant":"acme","x":` + strings.Repeat("[", 10000),
		"huge value":                `{"x":"` + strings.Repeat("a", MaxRequestBytes) + `","id":"r1","tenant":"acme"}`,
		"huge envelope":             `{"id":"r1","tenant":"acme",` + body + `,"y":[` + strings.Repeat(`{"role":"user","content":"hi"},`, 20000) + `1]}`,
		"case differs":              `{"ID":"r1","Tenant":"acme"}`,
		"empty key":                 `{"":"r1","id":"r1","tenant":"acme"}`,
		"reply_to escaped":          `{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.\u0078"}`,
		"reply_to before tenant":    `{"reply_to":"llm.replies.acme.x","id":"r1","tenant":"acme"}`,
		"reply_to of another":       `{"reply_to":"llm.replies.other.x","id":"r1","tenant":"acme"}`,
		"reply_to wildcard":         `{"reply_to":"llm.replies.acme.*","id":"r1","tenant":"acme"}`,
		"only tenant":               `{"tenant":"acme"}`,
		"value after close ignored": `{"id":"r1"},"tenant":"acme"}`,
	}
}

func TestPeekIdentityMatchesTokenWalk(t *testing.T) {
	for name, data := range peekSeeds() {
		t.Run(name, func(t *testing.T) {
			assertPeekMatches(t, []byte(data))
		})
	}
}

// The harness's envelope (the common case) takes the single scan: the
// three strings are its only allocations.
func TestPeekIdentityCommonCaseAllocations(t *testing.T) {
	data := []byte(peekSeeds()["reply_to"])
	if _, _, _, ok := scanIdentity(data); !ok {
		t.Fatal("a plain envelope fell back to the token walk")
	}
	if n := testing.AllocsPerRun(100, func() { PeekIdentity(data) }); n > 3 {
		t.Fatalf("PeekIdentity allocates %.0f objects per call on a plain envelope, want at most 3", n)
	}
}

func assertPeekMatches(t *testing.T, data []byte) {
	t.Helper()
	id, tenant, replyTo := PeekIdentity(data)
	wid, wtenant, wreplyTo := checkIdentity(peekIdentityTokens(trimBOM(data)))
	if id != wid || tenant != wtenant || replyTo != wreplyTo {
		t.Fatalf("PeekIdentity(%.200q) = %q, %q, %q; the token walk reads %q, %q, %q", data, id, tenant, replyTo, wid, wtenant, wreplyTo)
	}
}

func trimBOM(b []byte) []byte {
	if len(b) >= 3 && string(b[:3]) == "\xEF\xBB\xBF" {
		return b[3:]
	}
	return b
}

func FuzzPeekIdentity(f *testing.F) {
	for _, s := range peekSeeds() {
		if len(s) < 4096 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		assertPeekMatches(t, data)
	})
}

func BenchmarkPeekIdentity(b *testing.B) {
	data := []byte(peekSeeds()["harness envelope"])
	for _, bc := range []struct {
		name string
		fn   func([]byte) (string, string, string)
	}{
		{"token_walk", func(d []byte) (string, string, string) { return checkIdentity(peekIdentityTokens(d)) }},
		{"PeekIdentity", PeekIdentity},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if id, _, _ := bc.fn(data); id == "" {
					b.Fatal("no id")
				}
			}
		})
	}
}
