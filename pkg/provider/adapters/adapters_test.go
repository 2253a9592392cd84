package adapters

import (
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/provider/anthropic"
	"github.com/switchyard-llm/switchyard/pkg/provider/gemini"
	"github.com/switchyard-llm/switchyard/pkg/provider/openai"
)

func TestNew(t *testing.T) {
	cases := []struct {
		kind    string
		cfg     Config
		want    string // adapter type
		wantErr bool
	}{
		{"openai", Config{}, "openai", false},
		{"OpenAI", Config{}, "openai", false},
		{"openrouter", Config{}, "openai", false},
		{"anthropic", Config{}, "anthropic", false},
		{"gemini", Config{BaseURL: "http://127.0.0.1:1/gemini"}, "gemini", false},
		{"openai_compatible", Config{BaseURL: "http://vllm:8000/v1"}, "openai", false},
		{"openai_compatible", Config{}, "", true},
		{"mistral", Config{BaseURL: "https://api.mistral.ai/v1"}, "openai", false},
		{"bedrock-proxy", Config{BaseURL: "http://gw/anthropic", Protocol: ProtocolAnthropic}, "anthropic", false},
		{"mistral", Config{}, "", true},
		{"x", Config{BaseURL: "ftp://x"}, "", true},
		{"", Config{}, "", true},
		{"Bad Name!", Config{BaseURL: "http://x"}, "", true},
		{"custom", Config{BaseURL: "http://x", Protocol: "grpc"}, "", true},
	}
	for _, tc := range cases {
		a, err := New(tc.kind, tc.cfg)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s %+v: want error", tc.kind, tc.cfg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.kind, err)
			continue
		}
		got := ""
		switch a.(type) {
		case *openai.Adapter:
			got = "openai"
		case *anthropic.Adapter:
			got = "anthropic"
		case *gemini.Adapter:
			got = "gemini"
		}
		if got != tc.want {
			t.Errorf("%s: %T, want %s", tc.kind, a, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	for _, k := range Kinds() {
		if k != KindOpenAICompatible && DefaultBaseURL(k) == "" {
			t.Errorf("%s has no default base URL", k)
		}
	}
	if Protocol("openrouter") != ProtocolOpenAI || Protocol("anthropic") != ProtocolAnthropic || Protocol("gemini") != ProtocolGemini || Protocol("groq") != ProtocolOpenAI {
		t.Fatal("protocols")
	}
}
