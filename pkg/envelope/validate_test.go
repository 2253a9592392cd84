package envelope

import (
	"errors"
	"os"
	"strings"
	"testing"
)

const okBody = `"messages":[{"role":"user","content":"hi"}]`

// TestDecodeRequestRefusals: each bad envelope gets the stable code, a
// message naming the problem, and (when they are readable) the id and
// tenant, so the client gets an error reply and not only a dead letter.
func TestDecodeRequestRefusals(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	cwd, _ := os.Getwd()
	deep := `{"id":"r1","tenant":"acme",` + okBody + `,"metadata":{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`
	tests := []struct {
		name, body          string
		code, want          string
		id, tenant, replyTo string
	}{
		{"empty", "  ", CodeInvalidRequest, "empty message", "", "", ""},
		{"too large", `{"id":"r1","tenant":"acme",` + okBody + `,"user":"` + strings.Repeat("x", MaxRequestBytes) + `"}`, CodePayloadTooLarge, "the limit is 262144", "r1", "acme", ""},
		{"byte order mark", "\xEF\xBB\xBF" + `{"id":"r1","tenant":"acme",` + okBody + `}`, CodeInvalidRequest, "byte order mark", "r1", "acme", ""},
		{"trailing bytes", `{"id":"r1","tenant":"acme",` + okBody + `} {"id":"r2"}`, CodeInvalidRequest, "bytes after the JSON object", "r1", "acme", ""},
		{"trailing garbage", `{"id":"r1","tenant":"acme",` + okBody + `}xyz`, CodeInvalidRequest, "3 bytes after the JSON object", "r1", "acme", ""},
		{"10000 levels of nesting", deep, CodeInvalidRequest, "deeper than 64 levels", "r1", "acme", ""},
		{"id after a deep field", `{"tenant":"acme","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"id":"r1"}`, CodeInvalidRequest, "deeper than 64 levels", "r1", "acme", ""},
		{"not JSON", `{"id":"r1",`, CodeInvalidRequest, "not valid JSON", "", "", ""},
		{"unknown field", `{"id":"r1","tenant":"acme",` + okBody + `,"colour":"red"}`, CodeInvalidRequest, "colour", "r1", "acme", ""},
		{"max_cost_usd 0", `{"id":"r1","tenant":"acme",` + okBody + `,"policy":{"max_cost_usd":0}}`, CodeInvalidRequest, "policy/max_cost_usd: must be greater than 0; omit it for no cost limit", "r1", "acme", ""},
		{"reply_to internal subject", `{"id":"r1","tenant":"acme","reply_to":"llm.exec.openai",` + okBody + `}`, CodeInvalidRequest, "reply_to", "r1", "acme", ""},
		{"reply_to telemetry", `{"id":"r1","tenant":"acme","reply_to":"llm.telemetry.request",` + okBody + `}`, CodeInvalidRequest, "reply_to", "r1", "acme", ""},
		{"reply_to other tenant", `{"id":"r1","tenant":"acme","reply_to":"llm.replies.globex.r1",` + okBody + `}`, CodeInvalidRequest, "outside the tenant's reply space", "r1", "acme", ""},
		{"reply_to other tenant's inbox", `{"id":"r1","tenant":"acme","reply_to":"_INBOX.globex.x",` + okBody + `}`, CodeInvalidRequest, "reply_to", "r1", "acme", ""},
		{"reply_to bare prefix", `{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme",` + okBody + `}`, CodeInvalidRequest, "reply_to", "r1", "acme", ""},
		{"error reply honours a valid reply_to", `{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.abc","colour":1,` + okBody + `}`, CodeInvalidRequest, "colour", "r1", "acme", "_INBOX.acme.abc"},
		{"schema does not compile", `{"id":"r1","tenant":"acme",` + okBody + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"nope"}}}}`, CodeInvalidRequest, "response_format/json_schema/schema: does not compile", "r1", "acme", ""},
		{"schema refers to a file", `{"id":"r1","tenant":"acme",` + okBody + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"$ref":"file:///etc/passwd"}}}}`, CodeInvalidRequest, "may not refer to other documents", "r1", "acme", ""},
		{"schema refers to a relative file", `{"id":"r1","tenant":"acme",` + okBody + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"properties":{"a":{"$ref":"defs.json#/a"}}}}}}`, CodeInvalidRequest, "may not refer to other documents", "r1", "acme", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.DecodeRequest([]byte(tc.body))
			var inv *Invalid
			if !errors.As(err, &inv) {
				t.Fatalf("got %v, want an *Invalid", err)
			}
			if inv.Code != tc.code || !strings.Contains(inv.Message, tc.want) {
				t.Errorf("got %s %q, want %s containing %q", inv.Code, inv.Message, tc.code, tc.want)
			}
			if inv.ID != tc.id || inv.Tenant != tc.tenant || inv.ReplyTo != tc.replyTo {
				t.Errorf("identity %q/%q/%q, want %q/%q/%q", inv.ID, inv.Tenant, inv.ReplyTo, tc.id, tc.tenant, tc.replyTo)
			}
			if strings.Contains(inv.Message, "file://") || strings.Contains(inv.Message, cwd) || strings.Contains(inv.Message, "\n") {
				t.Errorf("message shows a server path or spans lines: %q", inv.Message)
			}
		})
	}
}

func TestDecodeRequestAccepts(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		`{"id":"r1","tenant":"acme",` + okBody + "}\n",
		`{"id":"r1","tenant":"acme","reply_to":"llm.replies.acme.mine",` + okBody + `}`,
		`{"id":"r1","tenant":"acme","reply_to":"_INBOX.acme.Xy7.1",` + okBody + `}`,
		`{"id":"r1","tenant":"acme","policy":{"max_cost_usd":0.01},` + okBody + `}`,
		`{"id":"r1","tenant":"acme",` + okBody + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object","properties":{"a":{"$ref":"#/$defs/a"}},"$defs":{"a":{"type":"string"}}}}}}`,
	} {
		if _, err := v.DecodeRequest([]byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
