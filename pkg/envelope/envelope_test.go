package envelope

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/schemas"
)

// jsonFields lists the JSON names of a struct's fields.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("json")
		name := strings.Split(tag, ",")[0]
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func schemaProps(t *testing.T, file string, path ...string) []string {
	t.Helper()
	b, err := schemas.FS.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var node map[string]any
	if err := json.Unmarshal(b, &node); err != nil {
		t.Fatal(err)
	}
	for _, p := range path {
		next, ok := node[p].(map[string]any)
		if !ok {
			t.Fatalf("%s: no %v", file, path)
		}
		node = next
	}
	props, ok := node["properties"].(map[string]any)
	if !ok {
		t.Fatalf("%s %v: no properties", file, path)
	}
	var out []string
	for k := range props {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestTypesMatchSchemas keeps the Go types and the JSON Schemas in schemas/
// describing the same fields: the schemas are the contract.
func TestTypesMatchSchemas(t *testing.T) {
	tests := []struct {
		name string
		typ  any
		file string
		path []string
	}{
		{"request", Request{}, schemas.Request, nil},
		{"message", Message{}, schemas.Request, []string{"properties", "messages", "items"}},
		{"response_format", ResponseFormat{}, schemas.Request, []string{"properties", "response_format"}},
		{"json_schema", JSONSchemaSpec{}, schemas.Request, []string{"properties", "response_format", "properties", "json_schema"}},
		{"policy", RequestPolicy{}, schemas.Request, []string{"properties", "policy"}},
		{"reply", Reply{}, schemas.Reply, nil},
		{"usage", Usage{}, schemas.Reply, []string{"$defs", "usage"}},
		{"attempt", AttemptResult{}, schemas.Reply, []string{"properties", "attempts", "items"}},
		{"quality", Quality{}, schemas.Reply, []string{"properties", "quality"}},
		{"error", Error{}, schemas.Reply, []string{"properties", "error"}},
		{"attempt event", AttemptEvent{}, schemas.AttemptEvent, nil},
		{"request event", RequestEvent{}, schemas.RequestEvent, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jsonFields(reflect.TypeOf(tt.typ))
			want := schemaProps(t, tt.file, tt.path...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Go fields %v\nschema props %v", got, want)
			}
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		body     string
		code     string
		contains string
	}{
		{"valid", `{"id":"r1","tenant":"acme","messages":[{"role":"user","content":"hi"}]}`, "", ""},
		{"empty", ``, CodeInvalidRequest, "empty message"},
		{"whitespace", "  \n", CodeInvalidRequest, "empty message"},
		{"not json", `{"id":`, CodeInvalidRequest, "not valid JSON"},
		{"missing id", `{"tenant":"acme","messages":[{"role":"user","content":"hi"}]}`, CodeInvalidRequest, "'id'"},
		{"missing tenant", `{"id":"r1","messages":[{"role":"user","content":"hi"}]}`, CodeInvalidRequest, "'tenant'"},
		{"empty messages", `{"id":"r1","tenant":"acme","messages":[]}`, CodeInvalidRequest, "messages"},
		{"unknown field", `{"id":"r1","tenant":"acme","messages":[{"role":"user","content":"hi"}],"colour":"red"}`, CodeInvalidRequest, "colour"},
		{"bad role", `{"id":"r1","tenant":"acme","messages":[{"role":"robot","content":"hi"}]}`, CodeInvalidRequest, "messages/0/role"},
		{"id with dot", `{"id":"r.1","tenant":"acme","messages":[{"role":"user","content":"hi"}]}`, CodeInvalidRequest, "id"},
		{"max_tokens", `{"id":"r1","tenant":"acme","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, CodeInvalidRequest, "max_tokens"},
		{"too large", `{"id":"r1","tenant":"acme","messages":[{"role":"user","content":"` + strings.Repeat("x", MaxRequestBytes) + `"}]}`, CodePayloadTooLarge, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := v.DecodeRequest([]byte(tt.body))
			if tt.code == "" {
				if err != nil || r == nil {
					t.Fatalf("want ok, got %v", err)
				}
				return
			}
			inv, ok := err.(*Invalid)
			if !ok {
				t.Fatalf("want *Invalid, got %T %v", err, err)
			}
			if inv.Code != tt.code || !strings.Contains(inv.Message, tt.contains) {
				t.Fatalf("got %s %q; want %s containing %q", inv.Code, inv.Message, tt.code, tt.contains)
			}
		})
	}
}

func TestInvalidKeepsIdentity(t *testing.T) {
	v, _ := NewValidator()
	_, err := v.DecodeRequest([]byte(`{"id":"r9","tenant":"acme","messages":[],"x":1}`))
	inv := err.(*Invalid)
	if inv.ID != "r9" || inv.Tenant != "acme" {
		t.Fatalf("identity lost: %+v", inv)
	}
}

func TestReplyValidatesAgainstSchema(t *testing.T) {
	v, _ := NewValidator()
	r := Reply{ID: "r1", Tenant: "acme", Status: StatusOK, Attempts: []AttemptResult{{Attempt: 1, Vendor: "openai", Model: "m", Outcome: OutcomeOK}}, Quality: &Quality{Passed: true, Checks: []string{"non_empty"}}}
	b, _ := json.Marshal(r)
	if err := v.ValidateReply(b); err != nil {
		t.Fatal(err)
	}
	r.Status = "maybe"
	b, _ = json.Marshal(r)
	if err := v.ValidateReply(b); err == nil {
		t.Fatal("invalid status accepted")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"id":"r1","tenant":"acme","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	body := `"messages":[{"role":"user","content":"hi"}]`
	f.Add([]byte("\xEF\xBB\xBF{\"id\":\"r1\",\"tenant\":\"acme\"," + body + "}"))
	f.Add([]byte(`{"id":"r1","tenant":"acme",` + body + `} trailing`))
	f.Add([]byte(`{"id":"r1","tenant":"acme",` + body + `}{}`))
	f.Add([]byte(`{"id":"r1","tenant":"acme","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`))
	f.Add([]byte(`{"id":"r1","tenant":"acme","x":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 100) + `}`))
	f.Add([]byte(`{"id":"r1","tenant":"acme","reply_to":"llm.exec.openai",` + body + `}`))
	f.Add([]byte(`{"id":"r1","tenant":"acme",` + body + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"$ref":"file:///etc/passwd"}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := v.DecodeRequest(data)
		if err == nil {
			if r.ID == "" || r.Tenant == "" || len(r.Messages) == 0 {
				t.Fatalf("accepted an envelope without id/tenant/messages: %s", data)
			}
			return
		}
		inv, ok := err.(*Invalid)
		if !ok {
			t.Fatalf("unclassified error %T", err)
		}
		if strings.Contains(inv.Message, "file://") {
			t.Fatalf("message shows a file URL: %s", inv.Message)
		}
	})
}
