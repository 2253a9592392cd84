package envelope

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// requestFastValid reports whether data is a request envelope that
// schemas/request.schema.json certainly accepts, in one scan of the bytes
// without building a document. It answers false ("don't know") for
// anything it does not check exactly; DecodeRequest then runs the schema
// validator, whose refusal message stays the one clients see. So it may be
// strict where the schema is not, never lenient (TestRequestFastPathSound,
// FuzzRequestFastPathSound):
//   - a key at a level the schema names (envelope, message, response_format,
//     json_schema, policy) is compared raw: an escaped, unknown or repeated
//     key is "don't know" (the schema reads the last of repeated keys);
//   - a pattern field (id, tenant, reply_to, model) is matched on its raw
//     bytes, so an escape or a byte above ASCII is "don't know";
//   - a maxLength counts the raw string's code points, never fewer than
//     the decoded string has (an escape yields one code point, a surrogate
//     pair one for two escapes, an invalid byte one U+FFFD);
//   - an integer is plain digits (no 1.0, no 1e2), a number has no exponent
//     and no sign, and bounds are checked on the digits, not a float64;
//   - null is no string, number, object or boolean here, as in the schema.
//
// Keys of metadata and vendor_options are free: repeated ones leave fewer
// decoded keys than counted, and every value is checked.
func requestFastValid(d []byte) bool {
	end, seen, ok := requestMembers.check(d, skipSpace(d, 0))
	// Only space may follow the object, as for the schema's decoder.
	return ok && skipSpace(d, end) == len(d) && seen&requestRequired == requestRequired
}

// valueCheck checks the value at d[i] and returns the index after it.
type valueCheck func(d []byte, i int) (int, bool)

// member is one key an object may hold: its bit in the set of keys seen
// and the check of its value.
type member struct {
	bit   uint32
	value valueCheck
}

// members are the keys an object may hold (additionalProperties false).
type members map[string]member

// check checks the object at d[i]: every key one of m's, written without
// escapes and at most once, each value passing its check. It returns the
// index after the object and the bits of the keys it held.
func (m members) check(d []byte, i int) (end int, seen uint32, ok bool) {
	end, ok = eachMember(d, i, func(key []byte, j int) (int, bool) {
		k, known := m[string(key)]
		if !known {
			return j, false
		}
		end, ok := k.value(d, j)
		return end, ok && firstTime(&seen, k.bit)
	})
	return end, seen, ok
}

// The objects of schemas/request.schema.json, key by key.
var (
	requestMembers = members{
		"id":             {1 << 0, pattern(subjectTokenBytes)},
		"tenant":         {1 << 1, pattern(tenantPattern)},
		"messages":       {1 << 2, fastMessages},
		"user":           {1 << 3, maxLength(256)},
		"endpoint_tag":   {1 << 4, maxLength(128)},
		"prompt_version": {1 << 5, maxLength(128)},
		"environment":    {1 << 6, maxLength(64)},
		"reply_to":       {1 << 7, pattern(replyToPattern)},
		"route":          {1 << 8, maxLength(64)},
		"model":          {1 << 9, pattern(modelPattern)},
		"max_tokens":     {1 << 10, integerUpTo(65536)},
		"temperature":    {1 << 11, fastTemperature},
		"response_format": {1 << 12, func(d []byte, i int) (int, bool) {
			end, seen, ok := responseFormatMembers.check(d, i)
			return end, ok && seen&1 != 0 // type is required
		}},
		"policy":         {1 << 13, objectOf(policyMembers)},
		"timeout_ms":     {1 << 14, integerUpTo(600000)},
		"metadata":       {1 << 15, fastMetadata},
		"vendor_options": {1 << 16, fastVendorOptions},
		"stream":         {1 << 17, boolean},
	}
	requestRequired = requestMembers["id"].bit | requestMembers["tenant"].bit | requestMembers["messages"].bit

	messageMembers = members{
		"role":    {1 << 0, enumOf("system", "user", "assistant")},
		"content": {1 << 1, anyString},
	}
	responseFormatMembers = members{
		"type":        {1 << 0, enumOf("text", "json_object", "json_schema")},
		"json_schema": {1 << 1, objectOf(jsonSchemaMembers)},
	}
	jsonSchemaMembers = members{
		"name":   {1 << 0, anyString},
		"schema": {1 << 1, anyObject},
		"strict": {1 << 2, boolean},
	}
	policyMembers = members{
		"quality": {1 << 0, enumOf("economy", "standard", "premium")},
		"stakes":  {1 << 1, enumOf("low", "medium", "high")},
		// No upper bound in the schema; 18 digits keep it inside int64, so
		// the decode needs no overflow fallback.
		"max_latency_ms": {1 << 2, integerUpTo(999_999_999_999_999_999)},
		"max_cost_usd":   {1 << 3, fastPositive},
		"residency":      {1 << 4, maxLength(16)},
		"cache":          {1 << 5, boolean},
	}
)

func objectOf(m members) valueCheck {
	return func(d []byte, i int) (int, bool) {
		end, _, ok := m.check(d, i)
		return end, ok
	}
}

func enumOf(options ...string) valueCheck {
	return func(d []byte, i int) (int, bool) { return enumString(d, i, options...) }
}

func maxLength(n int) valueCheck {
	return func(d []byte, i int) (int, bool) { return shortString(d, i, n) }
}

func integerUpTo(max int64) valueCheck {
	return func(d []byte, i int) (int, bool) { return plainInteger(d, i, max) }
}

// pattern accepts a string whose raw bytes valid accepts (plainString).
func pattern(valid func([]byte) bool) valueCheck {
	return func(d []byte, i int) (int, bool) { return plainString(d, i, valid) }
}

func tenantPattern(s []byte) bool { return len(s) <= 64 && subjectTokenBytes(s) }

func replyToPattern(s []byte) bool { return len(s) <= 255 && subjectTokensBytes(s) }

// fastMetadata checks metadata: at most 64 members, each a string. Its
// keys are free; repeated ones leave fewer decoded keys than counted.
func fastMetadata(d []byte, i int) (int, bool) {
	n := 0
	end, ok := eachMember(d, i, func(_ []byte, j int) (int, bool) {
		n++
		return anyString(d, j)
	})
	return end, ok && n <= 64
}

// fastVendorOptions checks vendor_options: free keys, each value an object.
func fastVendorOptions(d []byte, i int) (int, bool) {
	return eachMember(d, i, func(_ []byte, j int) (int, bool) { return anyObject(d, j) })
}

// firstTime marks bit as seen; it is false for a repeated key.
func firstTime(seen *uint32, bit uint32) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// fastMessages checks messages: 1 to 256 objects of exactly role (an enum)
// and content (a string).
func fastMessages(d []byte, i int) (int, bool) {
	if i >= len(d) || d[i] != '[' {
		return i, false
	}
	i = skipSpace(d, i+1)
	for n := 1; n <= 256; n++ {
		end, seen, ok := messageMembers.check(d, i)
		if !ok || seen != 3 {
			return end, false
		}
		var done bool
		if i, done, ok = afterElement(d, end, ']'); !ok || done {
			return i, ok
		}
	}
	return i, false // more than 256 (or an empty array, which eachMember refused)
}

// eachMember walks the object starting at d[i] and calls value with each
// raw key (between its quotes, escapes kept) and the index of its value;
// value checks the value and returns the index after it. It returns the
// index after the object.
func eachMember(d []byte, i int, value func(key []byte, j int) (int, bool)) (int, bool) {
	if i >= len(d) || d[i] != '{' {
		return i, false
	}
	if i = skipSpace(d, i+1); i < len(d) && d[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(d) || d[i] != '"' {
			return i, false
		}
		end, _, _, ok := scanString(d, i)
		if !ok {
			return end, false
		}
		key := d[i+1 : end-1]
		if i = skipSpace(d, end); i >= len(d) || d[i] != ':' {
			return i, false
		}
		if i, ok = value(key, skipSpace(d, i+1)); !ok {
			return i, false
		}
		var done bool
		if i, done, ok = afterElement(d, i, '}'); !ok || done {
			return i, ok
		}
	}
}

// afterElement reads what follows an element of an array or object that
// ends at end: close ends the container (done, the index after it); a
// comma means another element, at the index returned.
func afterElement(d []byte, end int, close byte) (i int, done, ok bool) {
	if i = skipSpace(d, end); i >= len(d) {
		return i, false, false
	}
	switch d[i] {
	case close:
		return i + 1, true, true
	case ',':
		return skipSpace(d, i+1), false, true
	}
	return i, false, false
}

// stringAt checks the JSON string at d[i] and returns its raw content.
func stringAt(d []byte, i int) (raw []byte, end int, escaped, high, ok bool) {
	if i >= len(d) || d[i] != '"' {
		return nil, i, false, false, false
	}
	end, escaped, high, ok = scanString(d, i)
	if !ok {
		return nil, end, false, false, false
	}
	return d[i+1 : end-1], end, escaped, high, true
}

func anyString(d []byte, i int) (int, bool) {
	_, end, _, _, ok := stringAt(d, i)
	return end, ok
}

// plainString accepts a string whose raw bytes valid accepts. Every valid
// here allows only ASCII token bytes: a backslash or a byte above ASCII
// fails it, so the raw bytes are the decoded value the pattern is for.
func plainString(d []byte, i int, valid func([]byte) bool) (int, bool) {
	raw, end, _, _, ok := stringAt(d, i)
	return end, ok && valid(raw)
}

// shortString accepts a string of at most max code points, counted on the
// raw bytes (never fewer than the decoded value holds).
func shortString(d []byte, i, max int) (int, bool) {
	raw, end, _, high, ok := stringAt(d, i)
	if !ok {
		return end, false
	}
	if !high {
		return end, len(raw) <= max
	}
	return end, utf8.RuneCount(raw) <= max
}

// enumString accepts one of options written without escapes.
func enumString(d []byte, i int, options ...string) (int, bool) {
	raw, end, _, _, ok := stringAt(d, i)
	if !ok {
		return end, false
	}
	for _, o := range options {
		if string(raw) == o {
			return end, true
		}
	}
	return end, false
}

func boolean(d []byte, i int) (int, bool) {
	switch {
	case bytes.HasPrefix(d[i:], litTrue):
		return i + len(litTrue), true
	case bytes.HasPrefix(d[i:], litFalse):
		return i + len(litFalse), true
	}
	return i, false
}

// anyObject accepts any well-formed object (numbers of any size, as the
// schema's decoder reads them with UseNumber).
func anyObject(d []byte, i int) (int, bool) {
	if i >= len(d) || d[i] != '{' {
		return i, false
	}
	return skipValue(d, i, false)
}

// number returns the raw JSON number at d[i].
func number(d []byte, i int) ([]byte, int, bool) {
	if i >= len(d) || !(d[i] == '-' || d[i] >= '0' && d[i] <= '9') {
		return nil, i, false
	}
	end, ok := scanNumber(d, i, false)
	return d[i:end], end, ok
}

// plainInteger accepts an integer written as plain digits from 1 to max.
func plainInteger(d []byte, i int, max int64) (int, bool) {
	raw, end, ok := number(d, i)
	if !ok || len(raw) > 18 || raw[0] == '0' {
		return end, false
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return end, false // a sign, a fraction or an exponent
		}
		n = n*10 + int64(c-'0')
	}
	return end, n <= max
}

// fastTemperature accepts a number from 0 to 2 written without sign or
// exponent: an integer part of 0 or 1, or 2 with only zeros after it.
func fastTemperature(d []byte, i int) (int, bool) {
	raw, end, ok := number(d, i)
	if !ok || bytes.ContainsAny(raw, "-eE") {
		return end, false
	}
	switch raw[0] {
	case '0', '1':
		return end, len(raw) == 1 || raw[1] == '.'
	case '2':
		return end, len(raw) == 1 || raw[1] == '.' && len(bytes.Trim(raw[2:], "0")) == 0
	}
	return end, false
}

// fastPositive accepts a number above 0 written without sign or exponent,
// short enough to stay far from float64's limits.
func fastPositive(d []byte, i int) (int, bool) {
	raw, end, ok := number(d, i)
	if !ok || len(raw) > 32 || bytes.ContainsAny(raw, "-eE") {
		return end, false
	}
	return end, bytes.ContainsAny(raw, "123456789")
}

// subjectTokensBytes matches reply_to's pattern ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$.
func subjectTokensBytes(s []byte) bool {
	for {
		tok, rest, more := bytes.Cut(s, []byte{'.'})
		if len(tok) == 0 || !tokenBytes(tok, "") {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// modelPattern matches model's pattern ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.:/@-]+$
// and its maxLength 160: the first part holds no slash, so it ends at the
// first one.
func modelPattern(s []byte) bool {
	vendor, name, found := bytes.Cut(s, []byte{'/'})
	return found && len(s) <= 160 && len(vendor) > 0 && len(name) > 0 &&
		tokenBytes(vendor, ".") && tokenBytes(name, ".:/@")
}

// tokenBytes reports whether every byte of s is in [A-Za-z0-9_-] or extra.
func tokenBytes(s []byte, extra string) bool {
	for _, c := range s {
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}
