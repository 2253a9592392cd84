package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Prompt markers, honoured in any message, make single calls deterministic
// for tests (see also pkg/provider/vendortest).
const (
	markerPrefix       = "[[sim:"
	MarkerInvalidJSON  = "[[sim:invalid_json]]"
	MarkerSchemaMiss   = "[[sim:schema_mismatch]]"
	MarkerEmpty        = "[[sim:empty]]"
	MarkerLength       = "[[sim:length]]"
	markerStatusKey    = "status"
	markerRetryKey     = "retry_after"
	markerDelayKey     = "delay_ms"
	markerErrorKey     = "error"
	markerStreamKey    = "stream"
	maxMarkerDelayMS   = 120_000
	maxSchemaDepth     = 12
	maxGeneratedItems  = 16
	maxStringLengthGen = 4096
)

// markers are the prompt markers found in a request.
type markers struct {
	status      int
	retryAfter  int // -1: unset
	delayMS     int
	invalidJSON bool
	mismatch    bool
	empty       bool
	length      bool
	// noRetryAfter drops the retry-after header from a 429, as some
	// gateways and proxies do.
	noRetryAfter bool
	// vendorError names a vendor condition to answer with
	// ([[sim:error=context_length]], [[sim:error=billing]]).
	vendorError string
	// noPrefill refuses an assistant prefill ([[sim:no_prefill]]).
	noPrefill bool
	// stream is a stream fault ([[sim:stream=KIND:N]], see streamMarker).
	stream *StreamBehavior
}

func parseMarkers(prompt string) markers {
	m := markers{retryAfter: -1}
	for {
		i := strings.Index(prompt, markerPrefix)
		if i < 0 {
			return m
		}
		prompt = prompt[i+len(markerPrefix):]
		j := strings.Index(prompt, "]]")
		if j < 0 {
			return m
		}
		tok := prompt[:j]
		prompt = prompt[j+2:]
		key, val, _ := strings.Cut(tok, "=")
		n, _ := strconv.Atoi(val)
		switch key {
		case "invalid_json":
			m.invalidJSON = true
		case "schema_mismatch":
			m.mismatch = true
		case "empty":
			m.empty = true
		case "length":
			m.length = true
		case "no_retry_after":
			m.noRetryAfter = true
		case "no_prefill":
			m.noPrefill = true
		case markerStreamKey:
			m.stream = streamMarker(val)
		case markerErrorKey:
			m.vendorError = val
		case markerStatusKey:
			if n >= 400 && n <= 599 {
				m.status = n
			}
		case markerRetryKey:
			if n >= 0 {
				m.retryAfter = n
			}
		case markerDelayKey:
			if n > 0 {
				m.delayMS = min(n, maxMarkerDelayMS)
			}
		}
	}
}

// fnv64a hashes the prompt; same prompt, same hash, same content.
func fnv64a(parts ...string) uint64 {
	h := uint64(14695981039346656037)
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			h ^= uint64(p[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	return h
}

// rng is splitmix64: tiny, fast, deterministic.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) intn(n int) int {
	if n <= 0 {
		return 0
	}
	return int(r.next() % uint64(n))
}

// unit maps a hash to [0,1).
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

var words = strings.Fields(`the a system request vendor model token latency route cache budget
	quality signal river mountain lantern harbor meadow copper engine garden window
	quickly gently clearly steady bright quiet rapid careful simple robust
	answer summary detail result report insight pattern measure balance record
	runs keeps shows finds makes holds moves builds turns reads`)

// text produces deterministic prose of 12..39 words.
func text(h uint64) string {
	r := rng{s: h}
	n := 12 + r.intn(28)
	var sb strings.Builder
	for i := 0; i < n; i++ {
		w := words[r.intn(len(words))]
		if i == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		} else {
			sb.WriteByte(' ')
		}
		sb.WriteString(w)
	}
	sb.WriteByte('.')
	return sb.String()
}

// tokens estimates tokens as ceil(chars/4).
func tokens(s string) int { return (len(s) + 3) / 4 }

// truncateTokens cuts s to at most n tokens (4n bytes) on a rune boundary.
func truncateTokens(s string, n int) string {
	limit := n * 4
	if limit >= len(s) {
		return s
	}
	if limit < 0 {
		limit = 0
	}
	for limit > 0 && !utf8.RuneStart(s[limit]) {
		limit--
	}
	return s[:limit]
}

// ---- JSON generation ----

// object is a JSON object that keeps key order, so generated instances list
// properties in schema order, as real structured-output models do.
type object struct {
	keys []string
	vals map[string]any
}

func (o *object) get(k string) (any, bool) {
	if o == nil {
		return nil, false
	}
	v, ok := o.vals[k]
	return v, ok
}

func (o *object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// decodeOrdered decodes JSON keeping object key order.
func decodeOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("schema nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				if _, dup := o.vals[k]; !dup {
					o.keys = append(o.keys, k)
				}
				o.vals[k] = v
			}
			_, err := dec.Token()
			return o, err
		case '[':
			var arr []any
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			_, err := dec.Token()
			if arr == nil {
				arr = []any{}
			}
			return arr, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// generator builds a minimal instance of a JSON Schema (also the OpenAPI
// subset Gemini's responseSchema uses: upper-case types, nullable).
type generator struct {
	root *object
	r    rng
	base int // fixed per document: enum picks of array items differ by index
}

// Instance returns a JSON document satisfying schema, chosen
// deterministically by seed. It supports type (string or list), properties,
// required, items/prefixItems, min/maxItems, enum, const, anyOf/oneOf/allOf,
// local $ref, numeric bounds and multipleOf, string formats and lengths.
func Instance(schema []byte, seed uint64) ([]byte, error) {
	v, err := decodeOrdered(schema)
	if err != nil {
		return nil, err
	}
	o, ok := v.(*object)
	if !ok {
		if b, isBool := v.(bool); isBool && b {
			return []byte(`{}`), nil
		}
		return nil, fmt.Errorf("schema is not an object")
	}
	g := &generator{root: o, r: rng{s: seed}, base: int(seed % 1024)}
	return json.Marshal(g.gen(o, 0, 0))
}

func (g *generator) deref(s *object, depth int) *object {
	for i := 0; i < 16; i++ {
		ref, ok := s.get("$ref")
		if !ok {
			return s
		}
		p, _ := ref.(string)
		if !strings.HasPrefix(p, "#") {
			return s
		}
		var cur any = g.root
		for _, part := range strings.Split(strings.TrimPrefix(strings.TrimPrefix(p, "#"), "/"), "/") {
			if part == "" {
				continue
			}
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			o, ok := cur.(*object)
			if !ok {
				return &object{vals: map[string]any{}}
			}
			cur, _ = o.get(part)
		}
		next, ok := cur.(*object)
		if !ok {
			return &object{vals: map[string]any{}}
		}
		s = next
	}
	return s
}

func (g *generator) gen(s *object, depth, variant int) any {
	if depth > maxSchemaDepth {
		return nil
	}
	s = g.deref(s, depth)
	if c, ok := s.get("const"); ok {
		return c
	}
	if e, ok := s.get("enum"); ok {
		if arr, ok := e.([]any); ok && len(arr) > 0 {
			return arr[(g.base+variant)%len(arr)]
		}
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if alts, ok := s.get(k); ok {
			if arr, ok := alts.([]any); ok && len(arr) > 0 {
				for _, a := range arr {
					if ao, ok := a.(*object); ok && schemaType(g.deref(ao, depth)) != "null" {
						return g.gen(ao, depth+1, variant)
					}
				}
				if ao, ok := arr[0].(*object); ok {
					return g.gen(ao, depth+1, variant)
				}
			}
		}
	}
	if all, ok := s.get("allOf"); ok {
		if arr, ok := all.([]any); ok && len(arr) > 0 {
			s = g.mergeAll(s, arr, depth)
		}
	}
	switch schemaType(s) {
	case "object":
		return g.genObject(s, depth, variant)
	case "array":
		return g.genArray(s, depth)
	case "string":
		return g.genString(s, variant)
	case "integer":
		return g.genNumber(s, true)
	case "number":
		return g.genNumber(s, false)
	case "boolean":
		return g.r.next()&1 == 0
	case "null":
		return nil
	}
	return g.genString(s, variant)
}

func (g *generator) mergeAll(s *object, parts []any, depth int) *object {
	out := &object{vals: map[string]any{}}
	add := func(src *object) {
		for _, k := range src.keys {
			v := src.vals[k]
			switch k {
			case "allOf":
				continue
			case "properties":
				po, ok := v.(*object)
				if !ok {
					continue
				}
				dst, _ := out.vals["properties"].(*object)
				if dst == nil {
					dst = &object{vals: map[string]any{}}
					out.keys = append(out.keys, "properties")
					out.vals["properties"] = dst
				}
				for _, pk := range po.keys {
					if _, dup := dst.vals[pk]; !dup {
						dst.keys = append(dst.keys, pk)
					}
					dst.vals[pk] = po.vals[pk]
				}
			case "required":
				req, _ := out.vals["required"].([]any)
				if _, ok := out.vals["required"]; !ok {
					out.keys = append(out.keys, "required")
				}
				more, _ := v.([]any)
				out.vals["required"] = append(req, more...)
			default:
				if _, dup := out.vals[k]; !dup {
					out.keys = append(out.keys, k)
				}
				out.vals[k] = v
			}
		}
	}
	add(s)
	for _, p := range parts {
		if po, ok := p.(*object); ok {
			add(g.deref(po, depth))
		}
	}
	return out
}

func schemaType(s *object) string {
	t, ok := s.get("type")
	if ok {
		switch tv := t.(type) {
		case string:
			return strings.ToLower(tv)
		case []any:
			for _, x := range tv {
				if xs, ok := x.(string); ok && strings.ToLower(xs) != "null" {
					return strings.ToLower(xs)
				}
			}
			return "null"
		}
	}
	if _, ok := s.get("properties"); ok {
		return "object"
	}
	if _, ok := s.get("items"); ok {
		return "array"
	}
	if _, ok := s.get("prefixItems"); ok {
		return "array"
	}
	return "string"
}

func (g *generator) genObject(s *object, depth, variant int) any {
	out := &object{vals: map[string]any{}}
	props, _ := s.vals["properties"].(*object)
	if props != nil {
		for _, k := range props.keys {
			ps, ok := props.vals[k].(*object)
			if !ok {
				if b, isBool := props.vals[k].(bool); isBool && !b {
					continue
				}
				ps = &object{vals: map[string]any{}}
			}
			out.keys = append(out.keys, k)
			out.vals[k] = g.gen(ps, depth+1, variant)
		}
	}
	if req, ok := s.vals["required"].([]any); ok {
		for _, r := range req {
			k, ok := r.(string)
			if !ok {
				continue
			}
			if _, have := out.vals[k]; !have {
				out.keys = append(out.keys, k)
				out.vals[k] = words[g.r.intn(len(words))]
			}
		}
	}
	return out
}

func (g *generator) genArray(s *object, depth int) any {
	n := 1
	if v, ok := number(s.vals["minItems"]); ok && v > 1 {
		n = int(math.Min(v, maxGeneratedItems))
	}
	if v, ok := number(s.vals["maxItems"]); ok && float64(n) > v {
		n = int(math.Max(v, 0))
	}
	prefix, _ := s.vals["prefixItems"].([]any)
	items, _ := s.vals["items"].(*object)
	if items == nil {
		if arr, ok := s.vals["items"].([]any); ok { // draft-4 tuple form
			prefix = arr
		}
	}
	n = max(n, min(len(prefix), maxGeneratedItems))
	out := make([]any, 0, n)
	for i := 0; i < n; i++ {
		var is *object
		if i < len(prefix) {
			is, _ = prefix[i].(*object)
		} else {
			is = items
		}
		if is == nil {
			is = &object{vals: map[string]any{}}
		}
		out = append(out, g.gen(is, depth+1, i))
	}
	return out
}

func (g *generator) genString(s *object, variant int) any {
	format, _ := s.vals["format"].(string)
	var v string
	switch format {
	case "date-time":
		v = fmt.Sprintf("2024-0%d-1%dT12:00:00Z", 1+g.r.intn(9), g.r.intn(10))
	case "date":
		v = fmt.Sprintf("2024-0%d-1%d", 1+g.r.intn(9), g.r.intn(10))
	case "time":
		v = "12:00:00Z"
	case "email":
		v = fmt.Sprintf("user%d@example.com", g.r.intn(1000)+variant)
	case "uri", "url", "uri-reference":
		v = fmt.Sprintf("https://example.com/%s", words[g.r.intn(len(words))])
	case "uuid":
		a, b := g.r.next(), g.r.next()
		v = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(a), uint16(a>>32), uint16(a>>48)&0xfff, uint16(b)&0xfff, b>>16&0xffffffffffff)
	case "ipv4":
		v = fmt.Sprintf("192.0.2.%d", 1+g.r.intn(254))
	case "ipv6":
		v = "2001:db8::1"
	case "hostname":
		v = "example.com"
	default:
		v = words[g.r.intn(len(words))] + " " + words[g.r.intn(len(words))]
		if variant > 0 {
			v += " " + strconv.Itoa(variant)
		}
	}
	if mn, ok := number(s.vals["minLength"]); ok {
		want := int(math.Min(mn, maxStringLengthGen))
		for utf8.RuneCountInString(v) < want {
			v += " " + words[g.r.intn(len(words))]
		}
	}
	if mx, ok := number(s.vals["maxLength"]); ok && mx >= 0 && utf8.RuneCountInString(v) > int(mx) {
		v = string([]rune(v)[:int(mx)])
	}
	return v
}

func (g *generator) genNumber(s *object, integer bool) any {
	lo, hasLo := number(s.vals["minimum"])
	hi, hasHi := number(s.vals["maximum"])
	// draft-6+: exclusiveMinimum is a number; draft-4: a boolean modifier.
	if x, ok := number(s.vals["exclusiveMinimum"]); ok {
		lo, hasLo = x+exclusiveStep(integer, x), true
	} else if b, _ := s.vals["exclusiveMinimum"].(bool); b && hasLo {
		lo += exclusiveStep(integer, lo)
	}
	if x, ok := number(s.vals["exclusiveMaximum"]); ok {
		hi, hasHi = x-exclusiveStep(integer, x), true
	} else if b, _ := s.vals["exclusiveMaximum"].(bool); b && hasHi {
		hi -= exclusiveStep(integer, hi)
	}
	switch {
	case !hasLo && !hasHi:
		lo, hi = 1, 100
	case !hasHi:
		hi = lo + 100
	case !hasLo:
		lo = hi - 100
	}
	if integer {
		lo, hi = math.Ceil(lo), math.Floor(hi)
	}
	if hi < lo {
		hi = lo // unsatisfiable bounds: stay at the lower one
	}
	var v float64
	if m, ok := number(s.vals["multipleOf"]); ok && m > 0 {
		first, last := math.Ceil(lo/m), math.Floor(hi/m)
		k := first
		if last > first {
			k += float64(g.r.intn(int(math.Min(last-first+1, 1<<30))))
		}
		v = k * m
	} else if integer {
		v = lo + float64(g.r.intn(int(math.Min(hi-lo+1, 1<<30))))
	} else {
		v = lo + (hi-lo)*float64(g.r.intn(1000))/1000
		v = math.Round(v*100) / 100
		if v < lo || v > hi {
			v = lo
		}
	}
	if integer {
		return int64(v)
	}
	return v
}

func exclusiveStep(integer bool, x float64) float64 {
	if integer {
		if x == math.Trunc(x) {
			return 1
		}
		return 0
	}
	return math.Max(math.Abs(x)*1e-9, 1e-6)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	}
	return 0, false
}

// findSchema finds a JSON schema embedded in free text: the first balanced
// JSON object that looks like a schema. Used for Anthropic, whose classic
// API takes the schema as an instruction in the prompt.
func findSchema(s string) []byte {
	attempts := 0
	for i := 0; i < len(s) && attempts < 64; i++ {
		if s[i] != '{' {
			continue
		}
		attempts++
		dec := json.NewDecoder(strings.NewReader(s[i:]))
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			continue
		}
		var probe map[string]json.RawMessage
		if json.Unmarshal(raw, &probe) != nil {
			continue
		}
		_, t := probe["type"]
		_, p := probe["properties"]
		_, sc := probe["$schema"]
		_, r := probe["$ref"]
		if t || p || sc || r {
			return raw
		}
		i += int(dec.InputOffset()) - 1
	}
	return nil
}

// streamMarker reads a stream fault marker value KIND[:N]: stall_first,
// stall:N, cut:N, malformed:N, error:N, refuse:N, no_end, huge_line:N
// (a line longer than any decoder accepts). Unknown kinds are ignored.
func streamMarker(val string) *StreamBehavior {
	kind, num, _ := strings.Cut(val, ":")
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		n = 0
	}
	sb := &StreamBehavior{}
	switch kind {
	case "stall_first":
		sb.StallFirstMS = maxMarkerDelayMS
	case "stall":
		sb.StallAfterChunks, sb.StallMS = &n, maxMarkerDelayMS
	case "cut":
		sb.CutAfterChunks = &n
	case "malformed":
		sb.MalformedAfterChunks = &n
	case "error":
		sb.ErrorAfterChunks = &n
	case "refuse":
		sb.RefuseAfterChunks = &n
	case "no_end":
		sb.OmitEndMarker = true
	case "huge_line":
		sb.hugeLineAfter = &n
	default:
		return nil
	}
	return sb
}
