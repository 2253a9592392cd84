package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/switchyard-llm/switchyard/schemas"
)

// MaxRequestBytes is the documented payload limit of a request envelope.
const MaxRequestBytes = 256 << 10

// Invalid is a request the pipeline refuses, with the stable error code to
// reply with and a message that names the offending field.
type Invalid struct {
	Code    string
	Message string
	// ID and Tenant are filled when they could be read, so the error reply
	// can still reach the client.
	ID, Tenant string
}

func (e *Invalid) Error() string { return e.Code + ": " + e.Message }

// Validator checks envelopes against the JSON Schemas in schemas/.
type Validator struct {
	request *jsonschema.Schema
	reply   *jsonschema.Schema
}

// NewValidator compiles the embedded schemas.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	for _, name := range []string{schemas.Request, schemas.Reply} {
		b, err := schemas.FS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if err := c.AddResource(name, doc); err != nil {
			return nil, err
		}
	}
	req, err := c.Compile(schemas.Request)
	if err != nil {
		return nil, err
	}
	rep, err := c.Compile(schemas.Reply)
	if err != nil {
		return nil, err
	}
	return &Validator{request: req, reply: rep}, nil
}

// DecodeRequest validates and decodes a request envelope. Every failure is
// an *Invalid carrying a stable code.
func (v *Validator) DecodeRequest(data []byte) (*Request, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Invalid{Code: CodeInvalidRequest, Message: "empty message: a request envelope is a JSON object with id, tenant and messages"}
	}
	if len(data) > MaxRequestBytes {
		inv := &Invalid{Code: CodePayloadTooLarge, Message: fmt.Sprintf("payload is %d bytes; the limit is %d", len(data), MaxRequestBytes)}
		inv.ID, inv.Tenant = peekIdentity(data)
		return nil, inv
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, &Invalid{Code: CodeInvalidRequest, Message: "body is not valid JSON: " + err.Error()}
	}
	if err := v.request.Validate(inst); err != nil {
		inv := &Invalid{Code: CodeInvalidRequest, Message: describe(err)}
		inv.ID, inv.Tenant = peekIdentity(data)
		return nil, inv
	}
	var r Request
	if err := json.Unmarshal(data, &r); err != nil {
		// The schema accepted it, so this is a schema/type drift: a bug.
		return nil, &Invalid{Code: CodeInvalidRequest, Message: "cannot decode: " + err.Error()}
	}
	return &r, nil
}

// ValidateReply checks a reply against the reply schema (used in tests and
// by clients that want to).
func (v *Validator) ValidateReply(data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	if err := v.reply.Validate(inst); err != nil {
		return errors.New(describe(err))
	}
	return nil
}

// describe flattens a schema error into "field: problem; field: problem".
func describe(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	seen := map[string]bool{}
	var parts []string
	var walk func(u *jsonschema.OutputUnit)
	walk = func(u *jsonschema.OutputUnit) {
		if u.Error != nil && len(u.Errors) == 0 {
			field := strings.TrimPrefix(u.InstanceLocation, "/")
			if field == "" {
				field = "(envelope)"
			}
			msg := field + ": " + u.Error.String()
			if !seen[msg] {
				seen[msg] = true
				parts = append(parts, msg)
			}
		}
		for i := range u.Errors {
			walk(&u.Errors[i])
		}
	}
	walk(ve.BasicOutput())
	sort.Strings(parts)
	if len(parts) == 0 {
		return ve.Error()
	}
	return strings.Join(parts, "; ")
}

// peekIdentity reads id and tenant from an invalid envelope when it can, so
// an error reply can still be addressed.
func peekIdentity(data []byte) (id, tenant string) {
	var p struct {
		ID     any `json:"id"`
		Tenant any `json:"tenant"`
	}
	if json.Unmarshal(data, &p) != nil {
		return "", ""
	}
	id, _ = p.ID.(string)
	tenant, _ = p.Tenant.(string)
	if !subjectToken(id) || !subjectToken(tenant) {
		return "", ""
	}
	return id, tenant
}

func subjectToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
