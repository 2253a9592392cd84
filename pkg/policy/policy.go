// Package policy loads and validates the declarative routing policy: vendors,
// the model catalog with prices and capability profiles, and routes with
// their ordered chains. Every stage reads the same file.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Policy is the whole routing policy.
type Policy struct {
	Version      string            `yaml:"version" json:"version"`
	DefaultRoute string            `yaml:"default_route" json:"default_route"`
	Vendors      map[string]Vendor `yaml:"vendors" json:"vendors"`
	Models       []Model           `yaml:"models" json:"models"`
	Routes       []Route           `yaml:"routes" json:"routes"`
	Tenants      map[string]Tenant `yaml:"tenants" json:"tenants"`
	Alerts       Alerts            `yaml:"alerts" json:"alerts"`

	models map[Key]*Model
	routes map[string]*Route
}

// Vendor is one upstream API.
type Vendor struct {
	// Kind selects the wire protocol: openai, anthropic, gemini, openrouter
	// or openai_compatible.
	Kind           string   `yaml:"kind" json:"kind"`
	BaseURL        string   `yaml:"base_url" json:"base_url"`
	APIKeyEnv      string   `yaml:"api_key_env" json:"api_key_env"`
	Timeout        Duration `yaml:"timeout" json:"timeout"`
	MaxConcurrency int      `yaml:"max_concurrency" json:"max_concurrency"`
	RPM            int      `yaml:"rpm" json:"rpm"`
	TPM            int      `yaml:"tpm" json:"tpm"`
}

// Key names a model of a vendor.
type Key struct{ Vendor, Model string }

// Price is USD per one million tokens.
type Price struct {
	InputPerMTok      float64 `yaml:"input_per_mtok" json:"input_per_mtok"`
	OutputPerMTok     float64 `yaml:"output_per_mtok" json:"output_per_mtok"`
	CachedPerMTok     float64 `yaml:"cached_input_per_mtok" json:"cached_input_per_mtok"`
	CacheWritePerMTok float64 `yaml:"cache_write_per_mtok" json:"cache_write_per_mtok"`
}

// Model is one catalog entry with its capability profile.
type Model struct {
	Vendor        string   `yaml:"vendor" json:"vendor"`
	Model         string   `yaml:"model" json:"model"`
	Price         Price    `yaml:"price" json:"price"`
	ContextWindow int      `yaml:"context_window" json:"context_window"`
	LatencyMS     int      `yaml:"latency_ms" json:"latency_ms"`
	Capabilities  []string `yaml:"capabilities" json:"capabilities"`
	Residency     []string `yaml:"residency" json:"residency"`
	Quality       float64  `yaml:"quality" json:"quality"`
}

// Quality failure handling for a route.
const (
	OnQualityEscalate = "escalate"
	OnQualityReject   = "reject"
	OnQualityDegrade  = "degrade"
)

// Route is a named chain of targets.
type Route struct {
	Name          string   `yaml:"name" json:"name"`
	Strategy      string   `yaml:"strategy" json:"strategy"`
	Match         Match    `yaml:"match" json:"match"`
	Chain         []Target `yaml:"chain" json:"chain"`
	OnQualityFail string   `yaml:"on_quality_fail" json:"on_quality_fail"`
	// Retry is how a retryable failure is retried on the same target
	// before the route falls to the next one.
	Retry Retry `yaml:"retry" json:"retry"`
	// OnSaturated says what happens when a target's vendor is at its
	// rpm/tpm limit: spill to the next target (default) or wait for a slot.
	OnSaturated string `yaml:"on_saturated" json:"on_saturated"`
	// RedactPII replaces personal data with placeholders before the vendor
	// call and restores them in the answer.
	RedactPII bool `yaml:"redact_pii" json:"redact_pii"`
	// Toxicity makes the gate fail answers with abusive language (a
	// failed quality verdict, handled by on_quality_fail).
	Toxicity bool `yaml:"toxicity,omitempty" json:"toxicity,omitempty"`
	// Hedge configures the hedged strategy.
	Hedge Hedge `yaml:"hedge" json:"hedge"`
	// QualityFloor is the lowest catalog quality the cost strategy picks.
	QualityFloor float64 `yaml:"quality_floor" json:"quality_floor"`
	// Weights of the score strategy (default 1, 1, 1).
	Weights Weights `yaml:"weights" json:"weights"`
	// Depth bounds how many targets a request may try, by its stakes
	// (low, medium, high; 0 or absent: the whole chain).
	Depth map[string]int `yaml:"depth" json:"depth"`
	// Cache turns the exact response cache on for the route (TTL > 0).
	Cache RouteCache `yaml:"cache" json:"cache"`
	// Stream bounds the waits of a streamed call (0: no limit but the
	// attempt's deadline).
	Stream RouteStream `yaml:"stream" json:"stream"`
}

// RouteStream bounds a streamed vendor call: the wait for its first token
// and the silence between two chunks. A call over either fails with
// stream_stalled and the router fails over like for any retryable failure.
type RouteStream struct {
	FirstTokenTimeout Duration `yaml:"first_token_timeout" json:"first_token_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout" json:"idle_timeout"`
}

// CapabilityPrefill is the model capability of continuing an answer from an
// assistant prefill (the last message has role assistant): a streamed
// answer cut mid-way is continued only on a later target with it.
const CapabilityPrefill = "prefill"

// HasCapability reports whether the model lists capability c.
func (m *Model) HasCapability(c string) bool {
	for _, x := range m.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

// RouteCache is a route's response cache setting.
type RouteCache struct {
	TTL Duration `yaml:"ttl" json:"ttl"`
	// AllowSensitive caches requests in which PII was detected too.
	AllowSensitive bool `yaml:"allow_sensitive" json:"allow_sensitive"`
}

// What a route does when a vendor is at its limits.
const (
	OnSaturatedSpill = "spill"
	OnSaturatedWait  = "wait"
)

// Retry is the per-target retry policy of a route. The zero value falls
// over at once, with no retry.
type Retry struct {
	// Attempts is how many more times one target is tried after a
	// retryable failure (0: fall to the next target at once).
	Attempts int `yaml:"attempts" json:"attempts"`
	// Backoff is capped exponential with jitter: Base, 2·Base, … ≤ Max.
	Base Duration `yaml:"base" json:"base"`
	Max  Duration `yaml:"max" json:"max"`
	// MaxRetryAfter is the longest vendor retry-after the route waits for;
	// a longer one falls over instead.
	MaxRetryAfter Duration `yaml:"max_retry_after" json:"max_retry_after"`
}

// Match selects a route for a request that names none.
type Match struct {
	Tasks        []string `yaml:"tasks" json:"tasks"`
	EndpointTags []string `yaml:"endpoint_tags" json:"endpoint_tags"`
	Sensitive    *bool    `yaml:"sensitive" json:"sensitive"`
	// Tiers are tenant tiers (policy tenants' tier).
	Tiers []string `yaml:"tiers" json:"tiers"`
	// MinTokens and MaxTokens bound the request's token estimate (0: open).
	MinTokens int `yaml:"min_tokens" json:"min_tokens"`
	MaxTokens int `yaml:"max_tokens" json:"max_tokens"`
}

// Facts are what route matching looks at.
type Facts struct {
	Task, EndpointTag, Tier string
	Sensitive               bool
	Tokens                  int
}

func (m Match) empty() bool {
	return len(m.Tasks) == 0 && len(m.EndpointTags) == 0 && m.Sensitive == nil && len(m.Tiers) == 0 && m.MinTokens == 0 && m.MaxTokens == 0
}

func (m Match) fits(f Facts) bool {
	return (len(m.Tasks) == 0 || contains(m.Tasks, f.Task)) &&
		(len(m.EndpointTags) == 0 || contains(m.EndpointTags, f.EndpointTag)) &&
		(m.Sensitive == nil || *m.Sensitive == f.Sensitive) &&
		(len(m.Tiers) == 0 || contains(m.Tiers, f.Tier)) &&
		(m.MinTokens == 0 || f.Tokens >= m.MinTokens) &&
		(m.MaxTokens == 0 || f.Tokens <= m.MaxTokens)
}

// Target is one chain step.
type Target struct {
	Vendor string `yaml:"vendor" json:"vendor"`
	Model  string `yaml:"model" json:"model"`
	// Weight is the target's share of first attempts under the weighted
	// strategy (default 1).
	Weight int `yaml:"weight,omitempty" json:"weight,omitempty"`
}

// Strategies a route may use.
const (
	StrategyFallback    = "fallback"     // the chain in order
	StrategyCost        = "cost"         // cheapest first, over the quality floor
	StrategyLatency     = "latency"      // fastest first (observed latency), within max_latency_ms
	StrategyScore       = "score"        // best w_q·quality − w_c·cost − w_l·latency first
	StrategyWeighted    = "weighted"     // first target drawn by weight, the rest in order
	StrategyLeastLoaded = "least_loaded" // least busy vendor first
	StrategyCascade     = "cascade"      // cheap draft first; a failing draft escalates with the draft in the prompt
	StrategyHedged      = "hedged"       // first two targets in parallel (the second after a delay); first good answer wins
)

// Hedge configures the hedged strategy.
type Hedge struct {
	// After is how long the primary runs alone before the hedge starts
	// (0: both at once).
	After Duration `yaml:"after" json:"after"`
	// MaxRatio caps the share of a tenant's requests that are hedged
	// (default 0.2).
	MaxRatio float64 `yaml:"max_ratio" json:"max_ratio"`
}

// Weights of the score strategy.
type Weights struct {
	Quality float64 `yaml:"quality" json:"quality"`
	Cost    float64 `yaml:"cost" json:"cost"`
	Latency float64 `yaml:"latency" json:"latency"`
}

// Duration parses Go durations ("30s") in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load reads, parses and validates a policy file.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(b)
}

// Parse decodes a policy strictly (unknown keys are errors) and validates it.
func Parse(b []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

var knownKinds = map[string]bool{"openai": true, "anthropic": true, "gemini": true, "openrouter": true, "openai_compatible": true}

var knownStrategies = map[string]bool{
	StrategyFallback: true, StrategyCost: true, StrategyLatency: true, StrategyScore: true,
	StrategyWeighted: true, StrategyLeastLoaded: true, StrategyCascade: true, StrategyHedged: true,
}

// Validate reports every problem at once and indexes the policy.
func (p *Policy) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if len(p.Vendors) == 0 {
		bad("vendors: at least one vendor is required")
	}
	for _, name := range sortedKeys(p.Vendors) {
		v := p.Vendors[name]
		if !knownKinds[v.Kind] {
			bad("vendors.%s.kind: %q is not one of openai, anthropic, gemini, openrouter, openai_compatible", name, v.Kind)
		}
		if v.BaseURL == "" {
			bad("vendors.%s.base_url: required", name)
		}
		if v.Timeout.Duration < 0 {
			bad("vendors.%s.timeout: must not be negative", name)
		}
		if v.MaxConcurrency < 0 || v.RPM < 0 || v.TPM < 0 {
			bad("vendors.%s: max_concurrency, rpm and tpm must not be negative", name)
		}
		if strings.ContainsAny(name, ".*> ") {
			bad("vendors.%s: a vendor name may not contain '.', '*', '>' or spaces (it is a subject token)", name)
		}
	}
	p.models = make(map[Key]*Model, len(p.Models))
	for i := range p.Models {
		m := &p.Models[i]
		if _, ok := p.Vendors[m.Vendor]; !ok {
			bad("models[%d] (%s): vendor %q is not defined", i, m.Model, m.Vendor)
		}
		if m.Model == "" {
			bad("models[%d]: model name required", i)
		}
		pr := m.Price
		if pr.InputPerMTok < 0 || pr.OutputPerMTok < 0 || pr.CachedPerMTok < 0 || pr.CacheWritePerMTok < 0 {
			bad("models[%d] (%s): prices must not be negative", i, m.Model)
		}
		k := Key{m.Vendor, m.Model}
		if _, dup := p.models[k]; dup {
			bad("models[%d]: %s/%s is listed twice", i, m.Vendor, m.Model)
		}
		p.models[k] = m
	}
	p.routes = make(map[string]*Route, len(p.Routes))
	for i := range p.Routes {
		r := &p.Routes[i]
		if r.Name == "" {
			bad("routes[%d]: name required", i)
		}
		if _, dup := p.routes[r.Name]; dup {
			bad("routes[%d]: route %q is defined twice", i, r.Name)
		}
		p.routes[r.Name] = r
		if r.Strategy == "" {
			r.Strategy = "fallback"
		}
		if !knownStrategies[r.Strategy] {
			bad("routes.%s.strategy: %q is not one of fallback, cost, latency, score, weighted, least_loaded, cascade, hedged", r.Name, r.Strategy)
		}
		if r.Strategy == StrategyHedged {
			if len(r.Chain) < 2 {
				bad("routes.%s: the hedged strategy needs at least two targets", r.Name)
			}
			if r.Hedge.MaxRatio == 0 {
				r.Hedge.MaxRatio = 0.2
			}
			if r.Hedge.MaxRatio < 0 || r.Hedge.MaxRatio > 1 || r.Hedge.After.Duration < 0 {
				bad("routes.%s.hedge: need after >= 0 and 0 < max_ratio <= 1", r.Name)
			}
		}
		if r.Strategy == StrategyCascade && r.OnQualityFail == "" {
			r.OnQualityFail = OnQualityEscalate
		}
		if r.QualityFloor < 0 || r.QualityFloor > 1 {
			bad("routes.%s.quality_floor: %v is not between 0 and 1", r.Name, r.QualityFloor)
		}
		if r.Strategy == StrategyScore && r.Weights == (Weights{}) {
			r.Weights = Weights{Quality: 1, Cost: 1, Latency: 1}
		}
		if r.Weights.Quality < 0 || r.Weights.Cost < 0 || r.Weights.Latency < 0 {
			bad("routes.%s.weights: must not be negative", r.Name)
		}
		for s, d := range r.Depth {
			if s != "low" && s != "medium" && s != "high" {
				bad("routes.%s.depth: %q is not a stakes level (low, medium, high)", r.Name, s)
			}
			if d < 0 {
				bad("routes.%s.depth.%s: must not be negative", r.Name, s)
			}
		}
		switch r.OnQualityFail {
		case "":
			r.OnQualityFail = OnQualityEscalate
		case OnQualityEscalate, OnQualityReject, OnQualityDegrade:
		default:
			bad("routes.%s.on_quality_fail: %q is not one of escalate, reject, degrade", r.Name, r.OnQualityFail)
		}
		switch r.OnSaturated {
		case "":
			r.OnSaturated = OnSaturatedSpill
		case OnSaturatedSpill, OnSaturatedWait:
		default:
			bad("routes.%s.on_saturated: %q is not one of spill, wait", r.Name, r.OnSaturated)
		}
		if r.Cache.TTL.Duration < 0 {
			bad("routes.%s.cache.ttl: must not be negative", r.Name)
		}
		if r.Stream.FirstTokenTimeout.Duration < 0 || r.Stream.IdleTimeout.Duration < 0 {
			bad("routes.%s.stream: first_token_timeout and idle_timeout must not be negative", r.Name)
		}
		if r.Retry.Attempts < 0 || r.Retry.Attempts > 10 {
			bad("routes.%s.retry.attempts: %d is not between 0 and 10", r.Name, r.Retry.Attempts)
		}
		if r.Retry.Base.Duration == 0 {
			r.Retry.Base.Duration = 500 * time.Millisecond
		}
		if r.Retry.Max.Duration == 0 {
			r.Retry.Max.Duration = 8 * time.Second
		}
		if r.Retry.MaxRetryAfter.Duration == 0 {
			r.Retry.MaxRetryAfter.Duration = 10 * time.Second
		}
		if r.Retry.Base.Duration < 0 || r.Retry.Max.Duration < r.Retry.Base.Duration || r.Retry.MaxRetryAfter.Duration < 0 {
			bad("routes.%s.retry: need 0 < base <= max and max_retry_after >= 0", r.Name)
		}
		if len(r.Chain) == 0 {
			bad("routes.%s.chain: at least one target is required", r.Name)
		}
		for j, t := range r.Chain {
			if _, ok := p.Vendors[t.Vendor]; !ok {
				bad("routes.%s.chain[%d]: vendor %q is not defined", r.Name, j, t.Vendor)
			}
			if _, ok := p.models[Key{t.Vendor, t.Model}]; !ok {
				bad("routes.%s.chain[%d]: model %s/%s is not in the catalog", r.Name, j, t.Vendor, t.Model)
			}
		}
	}
	errs = append(errs, p.validateTenants(), p.Alerts.validate())
	if p.DefaultRoute == "" {
		bad("default_route: required")
	} else if _, ok := p.routes[p.DefaultRoute]; !ok {
		bad("default_route: route %q is not defined", p.DefaultRoute)
	}
	return errors.Join(errs...)
}

// Model looks a catalog entry up.
func (p *Policy) Model(vendor, model string) (*Model, bool) {
	m, ok := p.models[Key{vendor, model}]
	return m, ok
}

// Route looks a route up by name.
func (p *Policy) Route(name string) (*Route, bool) {
	r, ok := p.routes[name]
	return r, ok
}

// SelectRoute picks the first route (in policy order) whose match rules all
// fit, else the default route. A route without match rules is only used
// by name.
func (p *Policy) SelectRoute(f Facts) *Route {
	for i := range p.Routes {
		r := &p.Routes[i]
		if !r.Match.empty() && r.Match.fits(f) {
			return r
		}
	}
	return p.routes[p.DefaultRoute]
}

// VendorNames lists vendors in a stable order.
func (p *Policy) VendorNames() []string { return sortedKeys(p.Vendors) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Marshal writes the policy back as YAML (the format Load reads).
func Marshal(p *Policy) ([]byte, error) { return yaml.Marshal(p) }
