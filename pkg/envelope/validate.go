package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
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
	// ID, Tenant and ReplyTo are filled when they could be read, so the
	// error reply can still reach the client.
	ID, Tenant, ReplyTo string
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

// MaxNestingDepth bounds how deeply a request envelope may nest objects and
// arrays. A real envelope nests a handful of levels (a response_format
// schema a few more); the bound keeps a hostile document from costing the
// decoder and the schema validator their stacks.
const MaxNestingDepth = 64

// DecodeRequest validates and decodes a request envelope. Every failure is
// an *Invalid carrying a stable code; whenever the envelope's id and tenant
// can be read, the *Invalid carries them so the client gets an error reply.
func (v *Validator) DecodeRequest(data []byte) (*Request, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Invalid{Code: CodeInvalidRequest, Message: "empty message: a request envelope is a JSON object with id, tenant and messages"}
	}
	refuse := func(code, msg string) (*Request, error) {
		inv := &Invalid{Code: code, Message: msg}
		inv.ID, inv.Tenant, inv.ReplyTo = PeekIdentity(data)
		return nil, inv
	}
	if len(data) > MaxRequestBytes {
		return refuse(CodePayloadTooLarge, fmt.Sprintf("payload is %d bytes; the limit is %d", len(data), MaxRequestBytes))
	}
	if problem := syntaxProblem(data); problem != "" {
		return refuse(CodeInvalidRequest, problem)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return refuse(CodeInvalidRequest, "body is not valid JSON: "+err.Error())
	}
	if err := v.request.Validate(inst); err != nil {
		return refuse(CodeInvalidRequest, describe(err))
	}
	var r Request
	if err := json.Unmarshal(data, &r); err != nil {
		// The schema accepted it, so this is a schema/type drift: a bug.
		return refuse(CodeInvalidRequest, "cannot decode: "+err.Error())
	}
	if err := ValidReplyTo(r.Tenant, r.ReplyTo); err != nil {
		return refuse(CodeInvalidRequest, err.Error())
	}
	if rf := r.ResponseFormat; rf != nil && rf.JSONSchema != nil && len(rf.JSONSchema.Schema) > 0 {
		if _, err := CompileResponseSchema(rf.JSONSchema.Schema); err != nil {
			return refuse(CodeInvalidRequest, "response_format/json_schema/schema: "+err.Error())
		}
	}
	return &r, nil
}

// syntaxProblem names what makes data not one plain JSON object: a byte
// order mark, nesting deeper than MaxNestingDepth, or bytes after the
// object. It returns "" when none applies (other syntax errors are left to
// the decoder, whose message names them).
func syntaxProblem(data []byte) string {
	if bytes.HasPrefix(data, utf8BOM) {
		return "body starts with a UTF-8 byte order mark (EF BB BF); send the JSON object without it"
	}
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > MaxNestingDepth {
				return fmt.Sprintf("body nests objects and arrays deeper than %d levels", MaxNestingDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
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

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ReplyInboxPrefix starts the core-NATS inboxes a tenant may name as
// reply_to: _INBOX.<tenant>. (nats.go: nats.CustomInboxPrefix("_INBOX.<tenant>")).
const ReplyInboxPrefix = "_INBOX."

// ValidReplyTo checks that a reply_to stays inside the tenant's own reply
// space: llm.replies.<tenant>.… (persisted in LLM_REPLIES) or
// _INBOX.<tenant>.… (core NATS request-reply). Anything else could make the
// pipeline publish onto another tenant's replies or an internal subject.
func ValidReplyTo(tenant, replyTo string) error {
	if replyTo == "" {
		return nil
	}
	ok := false
	for _, prefix := range []string{"llm.replies." + tenant + ".", ReplyInboxPrefix + tenant + "."} {
		if rest, found := strings.CutPrefix(replyTo, prefix); found && subjectTokens(rest) {
			ok = true
		}
	}
	if !ok || len(replyTo) > 255 {
		return fmt.Errorf("reply_to: %q is outside the tenant's reply space; use llm.replies.%s.<name> or %s%s.<name> (tokens of [A-Za-z0-9_-], no wildcards), or omit it for llm.replies.%s.<id>",
			clipString(replyTo, 80), tenant, ReplyInboxPrefix, tenant, tenant)
	}
	return nil
}

func subjectTokens(s string) bool {
	for _, tok := range strings.Split(s, ".") {
		if !subjectToken(tok) {
			return false
		}
	}
	return true
}

func clipString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// responseSchemaURL names a client's response_format schema inside the
// compiler. It is an absolute URL, not a file name: a relative name would resolve
// against the server's working directory and show up in error messages.
const responseSchemaURL = "https://switchyard.invalid/response_format.json"

// CompileResponseSchema compiles a client's response_format JSON Schema.
// Nothing outside the document is ever loaded (no file://, no http://: a
// $ref to another document is an error), and error messages never show a
// server path.
func CompileResponseSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, errors.New("not valid JSON: " + scrub(err.Error()))
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(responseSchemaURL, doc); err != nil {
		return nil, errors.New(scrub(err.Error()))
	}
	sch, err := c.Compile(responseSchemaURL)
	if err != nil {
		return nil, errors.New("does not compile: " + scrub(err.Error()))
	}
	return sch, nil
}

// noLoader refuses every external document a schema refers to.
type noLoader struct{}

func (noLoader) Load(string) (any, error) {
	return nil, errors.New("schemas may not refer to other documents")
}

var fileURL = regexp.MustCompile(`file:/[^\s"']*`)

// scrub removes file URLs from a message shown to clients: the compiler
// names the documents it tried to load, and a file URL would show a server
// path.
// The compiler's messages span several indented lines; a reply carries one.
func scrub(msg string) string {
	var parts []string
	for _, line := range strings.Split(fileURL.ReplaceAllString(msg, "(file URL)"), "\n") {
		if line = strings.TrimPrefix(strings.TrimSpace(line), "- "); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
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

// fieldHints replace the schema library's wording where it would not tell a
// client what to send instead.
var fieldHints = map[string]string{
	"policy/max_cost_usd": "must be greater than 0; omit it for no cost limit",
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
			if hint, ok := fieldHints[field]; ok {
				msg = field + ": " + hint
			}
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

// PeekIdentity reads id, tenant and reply_to from an envelope that may be
// invalid (a byte order mark, trailing bytes, deep nesting, a schema
// violation), so an error reply can still be addressed. It streams the
// top-level keys and never decodes nested values, so depth costs nothing.
// Values that are not valid subject tokens are dropped (reply_to when it is
// outside the tenant's reply space).
func PeekIdentity(data []byte) (id, tenant, replyTo string) {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", "", ""
	}
	fields := map[string]*string{"id": &id, "tenant": &tenant, "reply_to": &replyTo}
	depth := 0
	var key *string
	expectKey := true
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				depth++
			} else if depth--; depth < 0 {
				goto done // end of the envelope
			}
			if depth == 0 {
				expectKey = true
			}
			continue
		case string:
			if depth == 0 && expectKey {
				key, expectKey = fields[t], false
				continue
			}
			if depth == 0 && key != nil && *key == "" {
				*key = t
			}
		}
		if depth == 0 {
			expectKey, key = true, nil
		}
	}
done:
	if !subjectToken(id) || !subjectToken(tenant) || len(tenant) > 64 {
		return "", "", ""
	}
	if ValidReplyTo(tenant, replyTo) != nil {
		replyTo = ""
	}
	return id, tenant, replyTo
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
