// Package adapters builds a provider.Adapter from a vendor name; the wire
// protocols live in its sub-packages openai, anthropic and gemini.
package adapters

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/provider"
	"github.com/switchyard-llm/switchyard/pkg/provider/anthropic"
	"github.com/switchyard-llm/switchyard/pkg/provider/gemini"
	"github.com/switchyard-llm/switchyard/pkg/provider/openai"
)

// Vendor kinds with a built-in default. Any other well-formed name is taken
// to be an OpenAI-compatible endpoint and needs a BaseURL.
const (
	KindOpenAI           = "openai"
	KindAnthropic        = "anthropic"
	KindGemini           = "gemini"
	KindOpenRouter       = "openrouter"
	KindOpenAICompatible = "openai_compatible"
)

// Wire protocols.
const (
	ProtocolOpenAI    = "openai"
	ProtocolAnthropic = "anthropic"
	ProtocolGemini    = "gemini"
)

// Config is what every adapter needs.
type Config struct {
	BaseURL    string // empty: the vendor's public API root
	APIKey     string
	HTTPClient *http.Client // nil: a pooled client of its own (MaxConcurrency)
	Headers    map[string]string
	// Protocol forces a wire protocol (openai, anthropic, gemini) for a
	// custom kind, e.g. an Anthropic-compatible gateway; empty: by kind.
	Protocol string
	// MaxConcurrency sizes the adapter's own connection pool when
	// HTTPClient is nil (the vendor's max_concurrency; 0:
	// provider.DefaultMaxConns). See provider.NewHTTPClient.
	MaxConcurrency int
}

var kindRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Protocol returns the wire protocol a vendor kind speaks.
func Protocol(kind string) string {
	switch strings.ToLower(kind) {
	case KindAnthropic:
		return ProtocolAnthropic
	case KindGemini:
		return ProtocolGemini
	default:
		return ProtocolOpenAI
	}
}

// DefaultBaseURL returns the public API root of a known kind, or "".
func DefaultBaseURL(kind string) string {
	switch strings.ToLower(kind) {
	case KindOpenAI:
		return openai.DefaultBaseURL
	case KindOpenRouter:
		return openai.OpenRouterBaseURL
	case KindAnthropic:
		return anthropic.DefaultBaseURL
	case KindGemini:
		return gemini.DefaultBaseURL
	}
	return ""
}

// Kinds lists the kinds with a built-in default base URL, plus the generic
// openai_compatible one.
func Kinds() []string {
	return []string{KindOpenAI, KindAnthropic, KindGemini, KindOpenRouter, KindOpenAICompatible}
}

// New returns the adapter for kind. openai, anthropic, gemini and openrouter
// default to the public endpoints; openai_compatible and any other name
// (e.g. "mistral", "groq", "vllm") speak Chat Completions and need BaseURL.
func New(kind string, cfg Config) (provider.StreamingAdapter, error) {
	k := strings.ToLower(strings.TrimSpace(kind))
	if !kindRE.MatchString(k) {
		return nil, fmt.Errorf("adapters: invalid vendor kind %q", kind)
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL(k)
	}
	if base == "" {
		return nil, fmt.Errorf("adapters: vendor %q is OpenAI-compatible and needs a base URL", k)
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("adapters: vendor %q base URL must be http(s)", k)
	}
	proto := cfg.Protocol
	if proto == "" {
		proto = Protocol(k)
	}
	if cfg.HTTPClient == nil {
		// One pool per vendor, sized by its concurrency.
		cfg.HTTPClient = provider.NewHTTPClient(cfg.MaxConcurrency)
	}
	switch proto {
	case ProtocolAnthropic:
		return anthropic.New(anthropic.Config{BaseURL: base, APIKey: cfg.APIKey, HTTPClient: cfg.HTTPClient, Headers: cfg.Headers}), nil
	case ProtocolGemini:
		return gemini.New(gemini.Config{BaseURL: base, APIKey: cfg.APIKey, HTTPClient: cfg.HTTPClient, Headers: cfg.Headers}), nil
	case ProtocolOpenAI:
		return openai.New(openai.Config{BaseURL: base, APIKey: cfg.APIKey, HTTPClient: cfg.HTTPClient, Headers: cfg.Headers,
			OpenRouter: k == KindOpenRouter}), nil
	}
	return nil, fmt.Errorf("adapters: unknown protocol %q", proto)
}
