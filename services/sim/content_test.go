package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// check is a small validator for the JSON Schema subset Instance supports.
func check(root, s map[string]any, v any) error {
	if ref, ok := s["$ref"].(string); ok {
		cur := any(root)
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[p]
		}
		return check(root, cur.(map[string]any), v)
	}
	if c, ok := s["const"]; ok && fmt.Sprint(c) != fmt.Sprint(v) {
		return fmt.Errorf("const %v != %v", c, v)
	}
	if e, ok := s["enum"].([]any); ok {
		found := false
		for _, x := range e {
			found = found || fmt.Sprint(x) == fmt.Sprint(v)
		}
		if !found {
			return fmt.Errorf("%v not in enum %v", v, e)
		}
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if alts, ok := s[k].([]any); ok {
			var errs []string
			for _, a := range alts {
				if err := check(root, a.(map[string]any), v); err == nil {
					errs = nil
					break
				} else {
					errs = append(errs, err.Error())
				}
			}
			if errs != nil {
				return fmt.Errorf("%s: %v", k, errs)
			}
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, a := range all {
			if err := check(root, a.(map[string]any), v); err != nil {
				return err
			}
		}
	}
	types := []string{}
	switch t := s["type"].(type) {
	case string:
		types = append(types, strings.ToLower(t))
	case []any:
		for _, x := range t {
			types = append(types, strings.ToLower(x.(string)))
		}
	}
	if len(types) > 0 {
		ok := false
		for _, t := range types {
			switch x := v.(type) {
			case map[string]any:
				ok = ok || t == "object"
			case []any:
				ok = ok || t == "array"
			case string:
				ok = ok || t == "string"
			case bool:
				ok = ok || t == "boolean"
			case nil:
				ok = ok || t == "null"
			case float64:
				ok = ok || t == "number" || (t == "integer" && x == math.Trunc(x))
			}
		}
		if !ok {
			return fmt.Errorf("%v (%T) is not %v", v, v, types)
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := x[r.(string)]; !ok {
				return fmt.Errorf("required %v missing", r)
			}
		}
		for k, pv := range x {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					return fmt.Errorf("additional property %s", k)
				}
				continue
			}
			if err := check(root, ps, pv); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	case []any:
		if n, ok := s["minItems"].(float64); ok && float64(len(x)) < n {
			return fmt.Errorf("minItems")
		}
		if n, ok := s["maxItems"].(float64); ok && float64(len(x)) > n {
			return fmt.Errorf("maxItems")
		}
		if s["uniqueItems"] == true {
			seen := map[string]bool{}
			for _, it := range x {
				k := fmt.Sprint(it)
				if seen[k] {
					return fmt.Errorf("duplicate item %v", it)
				}
				seen[k] = true
			}
		}
		if is, ok := s["items"].(map[string]any); ok {
			for _, it := range x {
				if err := check(root, is, it); err != nil {
					return err
				}
			}
		}
	case string:
		if n, ok := s["minLength"].(float64); ok && float64(utf8.RuneCountInString(x)) < n {
			return fmt.Errorf("minLength")
		}
		if n, ok := s["maxLength"].(float64); ok && float64(utf8.RuneCountInString(x)) > n {
			return fmt.Errorf("maxLength")
		}
	case float64:
		if n, ok := s["minimum"].(float64); ok && x < n {
			return fmt.Errorf("%v < minimum %v", x, n)
		}
		if n, ok := s["maximum"].(float64); ok && x > n {
			return fmt.Errorf("%v > maximum %v", x, n)
		}
		if n, ok := s["exclusiveMinimum"].(float64); ok && x <= n {
			return fmt.Errorf("exclusiveMinimum")
		}
		if n, ok := s["exclusiveMaximum"].(float64); ok && x >= n {
			return fmt.Errorf("exclusiveMaximum")
		}
		if m, ok := s["multipleOf"].(float64); ok && math.Abs(x/m-math.Round(x/m)) > 1e-9 {
			return fmt.Errorf("multipleOf")
		}
	}
	return nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

func TestInstanceSatisfiesSchema(t *testing.T) {
	cases := []struct{ name, schema string }{
		{"empty object", `{"type":"object"}`},
		{"flat", `{"type":"object","properties":{"s":{"type":"string"},"i":{"type":"integer"},"n":{"type":"number"},"b":{"type":"boolean"}},"required":["s","i","n","b"],"additionalProperties":false}`},
		{"enum and const", `{"type":"object","properties":{"e":{"enum":["x","y",3]},"c":{"const":"fixed"}},"required":["e","c"]}`},
		{"bounds", `{"type":"object","properties":{"a":{"type":"integer","minimum":-5,"maximum":-5},"b":{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1},"c":{"type":"integer","multipleOf":25,"minimum":30,"maximum":120},"d":{"type":"number","maximum":-1000}},"required":["a","b","c","d"]}`},
		{"strings", `{"type":"object","properties":{"long":{"type":"string","minLength":40},"short":{"type":"string","maxLength":3},"dt":{"type":"string","format":"date-time"},"mail":{"type":"string","format":"email"}},"required":["long","short"]}`},
		{"arrays", `{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string"},"minItems":3,"uniqueItems":true},"none":{"type":"array","maxItems":0},"enums":{"type":"array","items":{"enum":["a","b"]},"minItems":2,"uniqueItems":true}},"required":["tags","none","enums"]}`},
		{"nested refs", `{"type":"object","$defs":{"item":{"type":"object","properties":{"id":{"type":"integer","minimum":1},"child":{"$ref":"#/$defs/leaf"}},"required":["id","child"]},"leaf":{"type":"string","enum":["L"]}},"properties":{"items":{"type":"array","items":{"$ref":"#/$defs/item"},"minItems":2}},"required":["items"]}`},
		{"nullable union", `{"type":"object","properties":{"a":{"type":["string","null"]},"b":{"anyOf":[{"type":"null"},{"type":"integer","minimum":7,"maximum":7}]}},"required":["a","b"]}`},
		{"allOf", `{"allOf":[{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]},{"properties":{"b":{"type":"boolean"}},"required":["b"]}]}`},
		{"gemini openapi", `{"type":"OBJECT","properties":{"name":{"type":"STRING"},"age":{"type":"INTEGER"},"tags":{"type":"ARRAY","items":{"type":"STRING"}}},"required":["name","age"]}`},
		{"required without properties", `{"type":"object","required":["x"]}`},
		{"recursive", `{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"next":{"$ref":"#/$defs/node"}}}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var schema map[string]any
			if err := json.Unmarshal([]byte(tc.schema), &schema); err != nil {
				t.Fatal(err)
			}
			for seed := uint64(0); seed < 50; seed++ {
				doc, err := Instance([]byte(tc.schema), seed)
				if err != nil {
					t.Fatal(err)
				}
				var v any
				if err := json.Unmarshal(doc, &v); err != nil {
					t.Fatalf("invalid JSON %s: %v", doc, err)
				}
				if tc.name == "recursive" {
					continue // depth-capped: only well-formedness is promised
				}
				if err := check(schema, schema, v); err != nil {
					t.Fatalf("seed %d: %s: %v", seed, doc, err)
				}
			}
		})
	}
}

func TestInstanceKeepsPropertyOrderAndIsDeterministic(t *testing.T) {
	schema := []byte(`{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"},"mid":{"type":"boolean"}}}`)
	a, _ := Instance(schema, 42)
	b, _ := Instance(schema, 42)
	if string(a) != string(b) {
		t.Fatalf("not deterministic: %s vs %s", a, b)
	}
	if z, al, m := strings.Index(string(a), "zeta"), strings.Index(string(a), "alpha"), strings.Index(string(a), "mid"); !(z < al && al < m) {
		t.Fatalf("order lost: %s", a)
	}
	if _, err := Instance([]byte(`[1]`), 1); err == nil {
		t.Fatal("non-object schema accepted")
	}
}

func TestParseMarkers(t *testing.T) {
	cases := []struct {
		prompt string
		want   markers
	}{
		{"plain", markers{retryAfter: -1}},
		{"x [[sim:status=503]] y", markers{status: 503, retryAfter: -1}},
		{"[[sim:status=200]]", markers{retryAfter: -1}}, // not an error status: ignored
		{"[[sim:status=429]][[sim:retry_after=0]]", markers{status: 429, retryAfter: 0}},
		{"[[sim:delay_ms=999999]]", markers{delayMS: maxMarkerDelayMS, retryAfter: -1}},
		{"[[sim:empty]] [[sim:length]] [[sim:invalid_json]] [[sim:schema_mismatch]]", markers{empty: true, length: true, invalidJSON: true, mismatch: true, retryAfter: -1}},
		{"[[sim:unknown]] [[sim:status=5", markers{retryAfter: -1}},
	}
	for _, tc := range cases {
		if got := parseMarkers(tc.prompt); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.prompt, got, tc.want)
		}
	}
}

func TestFindSchema(t *testing.T) {
	cases := []struct{ text, want string }{
		{`Respond in JSON. Schema: {"type":"object","properties":{"a":{"type":"string"}}} thanks`, `{"type":"object","properties":{"a":{"type":"string"}}}`},
		{`Example {"a":1} then schema {"properties":{}}`, `{"properties":{}}`},
		{`no schema {here`, ``},
	}
	for _, tc := range cases {
		if got := string(findSchema(tc.text)); got != tc.want {
			t.Errorf("%q: %q", tc.text, got)
		}
	}
}

func TestLimiterWindow(t *testing.T) {
	var l limiter
	now := timeAt(0)
	for i := 0; i < 3; i++ {
		if st := l.admit(now, 3, 0, 10); st.limited || st.remainingReq != 2-i {
			t.Fatalf("call %d: %+v", i, st)
		}
	}
	st := l.admit(now.Add(30e9), 3, 0, 10)
	if !st.limited || st.retryAfter != 30e9 {
		t.Fatalf("4th: %+v", st)
	}
	if st := l.admit(now.Add(60e9+1), 3, 0, 10); st.limited {
		t.Fatalf("after the window: %+v", st)
	}
	var tl limiter
	if st := tl.admit(now, 0, 100, 60); st.limited || st.remainingTok != 40 {
		t.Fatalf("tpm 1: %+v", st)
	}
	if st := tl.admit(now.Add(10e9), 0, 100, 60); !st.limited || !st.limitedByTokens || st.retryAfter != 50e9 {
		t.Fatalf("tpm 2: %+v", st)
	}
	if st := tl.admit(now, 0, 100, 500); !st.limited || st.retryAfter != rateWindow {
		t.Fatalf("oversized: %+v", st)
	}
}

func timeAt(sec int64) time.Time { return time.Unix(1_700_000_000+sec, 0) }
