package cli

import (
	"encoding/json"
	"runtime"
	"strings"
)

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
