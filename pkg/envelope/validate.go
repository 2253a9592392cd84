package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
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
	// unmarshal decodes an envelope the schema accepted: go-json (see
	// decodeValidated); tests swap in encoding/json as the reference.
	unmarshal func([]byte, any) error
	// skipFastPath sends every request through the schema validator:
	// tests compare the fast path with it.
	skipFastPath bool
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
	return &Validator{request: req, reply: rep, unmarshal: gojson.Unmarshal}, nil
}

// MaxNestingDepth bounds how deeply a request envelope may nest objects and
// arrays. A real envelope nests a handful of levels (a response_format
// schema a few more); the bound keeps a hostile document from costing the
// decoder and the schema validator their stacks.
const MaxNestingDepth = 64

// DecodeRequest validates and decodes a request envelope. Every failure is
// an *Invalid carrying a stable code; whenever the envelope's id and tenant
// can be read, the *Invalid carries them so the client gets an error reply.
//
// A common valid envelope takes a fast path: one scan of the bytes that
// checks the request schema's constraints by hand (requestFastValid), then
// the decode. Anything it is not sure of goes through the JSON Schema
// validator as before, so refusals and their messages do not change.
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
	var r Request
	// The fast path accepts only what the schema accepts (requestFastValid),
	// and decodes as the schema path does (its max_latency_ms never
	// overflows); whatever it does not take, or fails to decode, goes the
	// schema path, which names the problem.
	if v.skipFastPath || !requestFastValid(data) || v.decodeValidated(data, false, &r) != nil {
		r = Request{}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return refuse(CodeInvalidRequest, "body is not valid JSON: "+err.Error())
		}
		if err := v.request.Validate(inst); err != nil {
			return refuse(CodeInvalidRequest, describe(err))
		}
		if err := v.decodeValidated(data, latencyOverflows(inst), &r); err != nil {
			// The schema accepted it, so this is a schema/type drift: a bug.
			return refuse(CodeInvalidRequest, "cannot decode: "+err.Error())
		}
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

// decodeValidated decodes an envelope the request schema accepted
// (latencyOverflow: latencyOverflows of the schema's reading, or false
// from the fast path, which takes no overflowing max_latency_ms). go-json
// reads it with a fraction of encoding/json's allocations. Where it reads differently, encoding/json
// decodes instead, so every envelope is accepted, refused (with the same
// message) and read as before (TestDecodeRequestMatchesEncodingJSON,
// FuzzDecodeRequestMatchesEncodingJSON):
//   - go-json refuses: encoding/json's error names the problem as it did;
//   - invalid UTF-8 (go-json before v0.12 kept the bytes where
//     encoding/json writes U+FFFD; v0.12 writes U+FFFD too, and the check
//     stays as a guard that costs one scan);
//   - an integer past int64 in policy.max_latency_ms (the one integer the
//     schema does not bound): go-json wraps it, encoding/json refuses it.
func (v *Validator) decodeValidated(data []byte, latencyOverflow bool, r *Request) error {
	if utf8.Valid(data) && !latencyOverflow && v.unmarshal(data, r) == nil {
		return nil
	}
	*r = Request{}
	return json.Unmarshal(data, r)
}

// latencyOverflows reports whether policy.max_latency_ms is an integer
// that does not fit an int64.
func latencyOverflows(inst any) bool {
	policy, _ := inst.(map[string]any)["policy"].(map[string]any)
	n, ok := policy["max_latency_ms"].(json.Number)
	if !ok {
		return false
	}
	_, err := strconv.ParseInt(string(n), 10, 64)
	return err != nil
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
	// Where the first value ends: what json.Decoder reads into a
	// RawMessage (InputOffset after it), in one scan without allocating
	// (TestSyntaxProblemMatchesDecoder). Invalid JSON is the decoder's to name.
	end, ok := skipValue(data, 0, false)
	if !ok {
		return ""
	}
	if rest := bytes.TrimSpace(data[end:]); len(rest) > 0 {
		return fmt.Sprintf("body has %d bytes after the JSON object (at offset %d); send exactly one JSON object", len(rest), end)
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
	for _, space := range [...]string{"llm.replies.", ReplyInboxPrefix} {
		// <space><tenant>.<rest>, without building the prefix (PeekIdentity calls this per message)
		rest, found := strings.CutPrefix(replyTo, space)
		if found {
			rest, found = strings.CutPrefix(rest, tenant)
		}
		if found {
			rest, found = strings.CutPrefix(rest, ".")
		}
		if found && subjectTokens(rest) {
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
	for {
		tok, rest, more := strings.Cut(s, ".")
		if !subjectToken(tok) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
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
// violation), so an error reply can still be addressed. For each of the
// three top-level keys the first non-empty string value counts; nested
// values are skipped, and reading stops at the first syntax error (what was
// read before it still counts). Values that are not valid subject tokens
// are dropped (reply_to when it is outside the tenant's reply space).
//
// The intake calls it several times per request, so the common case (a
// well-formed object whose three values hold no escapes) is one scan
// without allocation beyond the three strings; anything else (a syntax
// error, an escape in a key or in one of the three values, a number out of
// float64's range) is read by peekIdentityTokens, the json.Decoder walk
// that defines the result.
func PeekIdentity(data []byte) (id, tenant, replyTo string) {
	data = bytes.TrimPrefix(data, utf8BOM)
	rawID, rawTenant, rawReply, ok := scanIdentity(data)
	if !ok {
		return checkIdentity(peekIdentityTokens(data))
	}
	if !subjectTokenBytes(rawID) || !subjectTokenBytes(rawTenant) || len(rawTenant) > 64 {
		return "", "", ""
	}
	return checkIdentity(string(rawID), string(rawTenant), string(rawReply))
}

// checkIdentity drops an id or tenant that is not a subject token (both
// then) and a reply_to outside the tenant's reply space.
func checkIdentity(id, tenant, replyTo string) (string, string, string) {
	if !subjectToken(id) || !subjectToken(tenant) || len(tenant) > 64 {
		return "", "", ""
	}
	if ValidReplyTo(tenant, replyTo) != nil {
		replyTo = ""
	}
	return id, tenant, replyTo
}

// peekIdentityTokens is PeekIdentity's reference reading: json.Decoder's
// tokens, one allocation or more each. It returns the raw values.
func peekIdentityTokens(data []byte) (id, tenant, replyTo string) {
	dec := json.NewDecoder(bytes.NewReader(data))
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
				return id, tenant, replyTo // end of the envelope
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
	return id, tenant, replyTo
}

// scanIdentity reads the raw values of id, tenant and reply_to from a
// well-formed top-level object in one pass. ok is false whenever its
// answer could differ from peekIdentityTokens': a syntax error anywhere
// up to the object's end, a key with an escape, one of the three values
// with an escape or a non-ASCII byte, or a number json.Decoder refuses
// (out of float64's range). A document that is not an object is ok with
// no values, as for the reference.
func scanIdentity(d []byte) (id, tenant, replyTo []byte, ok bool) {
	i := skipSpace(d, 0)
	if i >= len(d) || d[i] != '{' {
		return nil, nil, nil, i < len(d) // empty input: the reference fails too, but let it say so
	}
	i = skipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		return nil, nil, nil, true
	}
	for {
		if i >= len(d) || d[i] != '"' {
			return nil, nil, nil, false
		}
		end, escaped, _, good := scanString(d, i)
		if !good || escaped {
			return nil, nil, nil, false
		}
		var field *[]byte
		switch string(d[i+1 : end-1]) {
		case "id":
			field = &id
		case "tenant":
			field = &tenant
		case "reply_to":
			field = &replyTo
		}
		i = skipSpace(d, end)
		if i >= len(d) || d[i] != ':' {
			return nil, nil, nil, false
		}
		i = skipSpace(d, i+1)
		if i < len(d) && d[i] == '"' {
			end, escaped, high, good := scanString(d, i)
			if !good || field != nil && (escaped || high) {
				return nil, nil, nil, false
			}
			if field != nil && len(*field) == 0 {
				*field = d[i+1 : end-1]
			}
			i = end
		} else if i, good = skipValue(d, i, true); !good {
			return nil, nil, nil, false
		}
		i = skipSpace(d, i)
		if i >= len(d) {
			return nil, nil, nil, false
		}
		switch d[i] {
		case '}':
			return id, tenant, replyTo, true
		case ',':
			i = skipSpace(d, i+1)
		default:
			return nil, nil, nil, false
		}
	}
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// scanString checks the JSON string starting at d[i] (a quote) and returns
// the index after its closing quote, whether it holds an escape or a byte
// above ASCII, and whether it is well formed (json's rules: no control
// byte, only the defined escapes).
func scanString(d []byte, i int) (end int, escaped, high, ok bool) {
	for i++; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			return i + 1, escaped, high, true
		case c < 0x20:
			return i, escaped, high, false
		case c >= 0x80:
			high = true
		case c == '\\':
			escaped = true
			if i++; i >= len(d) {
				return i, escaped, high, false
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) {
					return i, escaped, high, false
				}
				for _, h := range d[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return i, escaped, high, false
					}
				}
				i += 4
			default:
				return i, escaped, high, false
			}
		}
	}
	return i, escaped, high, false
}

// scanNumber checks the JSON number starting at d[i] and returns the index
// after it. With floatRange, a number json.Decoder refuses to hold in a
// float64 (a large exponent, or more than 308 digits before the point) is
// not ok.
func scanNumber(d []byte, i int, floatRange bool) (int, bool) {
	start := i
	digits := func() bool {
		n := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > n
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return i, false
	}
	rangeCheck := i-start > 308
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
		rangeCheck = true
	}
	if floatRange && rangeCheck {
		if _, err := strconv.ParseFloat(string(d[start:i]), 64); err != nil {
			return i, false
		}
	}
	return i, true
}

// skipValue checks the JSON value starting at d[i] (after any space) and
// returns the index after it; floatRange as for scanNumber.
func skipValue(d []byte, i int, floatRange bool) (int, bool) {
	var buf [32]byte
	closers := buf[:0] // the closing byte of each open container
	ok := false
	for {
		// a value starts at i
		i = skipSpace(d, i)
		if i >= len(d) {
			return i, false
		}
		switch c := d[i]; {
		case c == '{' || c == '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if i = skipSpace(d, i+1); i < len(d) && d[i] == closer {
				i++
				break
			}
			closers = append(closers, closer)
			if closer == '}' {
				if i, ok = skipKey(d, i); !ok {
					return i, false
				}
			}
			continue
		case c == '"':
			if i, _, _, ok = scanString(d, i); !ok {
				return i, false
			}
		case c == '-' || c >= '0' && c <= '9':
			if i, ok = scanNumber(d, i, floatRange); !ok {
				return i, false
			}
		case bytes.HasPrefix(d[i:], litTrue):
			i += len(litTrue)
		case bytes.HasPrefix(d[i:], litFalse):
			i += len(litFalse)
		case bytes.HasPrefix(d[i:], litNull):
			i += len(litNull)
		default:
			return i, false
		}
		// after a value: close containers until a comma or the end
	closing:
		for {
			if len(closers) == 0 {
				return i, true
			}
			if i = skipSpace(d, i); i >= len(d) {
				return i, false
			}
			top := closers[len(closers)-1]
			switch d[i] {
			case top:
				closers = closers[:len(closers)-1]
				i++
			case ',':
				i++
				if top == '}' {
					if i, ok = skipKey(d, skipSpace(d, i)); !ok {
						return i, false
					}
				}
				break closing
			default:
				return i, false
			}
		}
	}
}

// skipKey checks an object's key and its colon at d[i] and returns the
// index after the colon.
func skipKey(d []byte, i int) (int, bool) {
	if i >= len(d) || d[i] != '"' {
		return i, false
	}
	i, _, _, ok := scanString(d, i)
	if !ok {
		return i, false
	}
	if i = skipSpace(d, i); i >= len(d) || d[i] != ':' {
		return i, false
	}
	return i + 1, true
}

var litTrue, litFalse, litNull = []byte("true"), []byte("false"), []byte("null")

func subjectTokenBytes(s []byte) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
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
