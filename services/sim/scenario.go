package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Scenario is the simulator's behaviour: defaults for every vendor, then
// per vendor (openai, anthropic, gemini, openrouter, or any OpenAI-compatible
// name), then per model. A field left unset (nil) inherits from the level
// above; outages accumulate across levels.
//
//	{"vendors": {"openai": {"latency": {"base_ms": 200, "jitter_ms": 50},
//	                        "models": {"gpt-4o": {"error_rate": 0.1, "error_status": 503}}},
//	             "anthropic": {"outages": [{"start_after_ms": 5000, "duration_ms": 10000, "status": 529}]},
//	             "gemini": {"models": {"gemini-2.5-flash": {"reject_prefill": true,
//	                        "stream": {"chunk_delay_ms": 20, "cut_after_chunks": 3}}}}}}
type Scenario struct {
	Defaults Behavior                  `json:"defaults"`
	Vendors  map[string]VendorScenario `json:"vendors,omitempty"`
}

// VendorScenario is one vendor's behaviour and its per-model overrides.
type VendorScenario struct {
	Behavior
	Models map[string]Behavior `json:"models,omitempty"`
}

// Behavior is what a vendor or model does. Pointers distinguish "unset,
// inherit" from an explicit zero; Ptr builds them.
type Behavior struct {
	// Latency added to successful calls (and injected errors). Unset or zero
	// adds no delay at all.
	Latency *Latency `json:"latency,omitempty"`
	// ErrorRate is the fraction (0..1) of calls failed with ErrorStatus
	// (default 500). The failures are spread evenly and deterministically
	// over each model's call sequence.
	ErrorRate   *float64 `json:"error_rate,omitempty"`
	ErrorStatus *int     `json:"error_status,omitempty"`
	// Status, when non-zero, fails every call with that status (an outage
	// with no end). 0 clears an inherited one.
	Status *int `json:"status,omitempty"`
	// Outages are scheduled windows in which calls fail.
	Outages []Outage `json:"outages,omitempty"`
	// RPM and TPM limit requests and tokens per sliding 60 s window per
	// model; beyond them calls get 429. 0: unlimited.
	RPM *int `json:"rpm,omitempty"`
	TPM *int `json:"tpm,omitempty"`
	// RetryAfterS, when set, is the retry-after of every 429; otherwise it
	// is computed from the rate-limit window (1 s for injected 429s).
	RetryAfterS *int `json:"retry_after_s,omitempty"`
	// InvalidJSONRate is the fraction (0..1) of JSON-mode prompts answered
	// with malformed JSON, chosen deterministically by prompt hash.
	InvalidJSONRate *float64 `json:"invalid_json_rate,omitempty"`
	// SchemaMismatchRate is the fraction (0..1) of schema-mode prompts
	// answered with well-formed JSON that does not satisfy the schema.
	SchemaMismatchRate *float64 `json:"schema_mismatch_rate,omitempty"`
	// CachedRatio is the fraction (0..1) of prompt tokens reported as
	// prompt-cache reads, in each vendor's own usage semantics.
	CachedRatio *float64 `json:"cached_ratio,omitempty"`
	// ReasoningTokens is how many tokens the model reports having spent
	// thinking on each call, in each vendor's usage semantics: OpenAI and
	// OpenRouter inside completion_tokens, with
	// completion_tokens_details.reasoning_tokens; Gemini as
	// thoughtsTokenCount, outside candidatesTokenCount; Anthropic inside
	// output_tokens with no separate count.
	ReasoningTokens *int `json:"reasoning_tokens,omitempty"`
	// ContextWindow, when non-zero, refuses a prompt whose tokens plus
	// max_tokens exceed it, with the vendor's own context-length error.
	ContextWindow *int `json:"context_window,omitempty"`
	// ReportedPrice is what OpenRouter charges, reported as usage.cost to
	// calls that ask for usage accounting (usage.include); default
	// DefaultReportedPrice.
	ReportedPrice *Price `json:"reported_price,omitempty"`
	// RejectPrefill refuses a request ending with an assistant (Gemini:
	// model) turn with the vendor's 400, as models without prefill
	// support do.
	RejectPrefill *bool `json:"reject_prefill,omitempty"`
	// Stream shapes streamed answers (stream: true, Gemini's
	// streamGenerateContent) and injects stream faults. Replaced whole by
	// a lower level that sets it.
	Stream *StreamBehavior `json:"stream,omitempty"`
}

// StreamBehavior is how a streamed answer is sent. The answer is the
// non-streamed one (same content and usage) cut into chunks of
// WordsPerChunk words. "After N chunks" counts content chunks: 0 is before
// the first one. Faults are off when unset.
type StreamBehavior struct {
	// ChunkDelayMS is the pause between two content chunks (the latency
	// model's per-output-token delay is added per chunk; its base and
	// jitter come before the first chunk).
	ChunkDelayMS  int `json:"chunk_delay_ms,omitempty"`
	WordsPerChunk int `json:"words_per_chunk,omitempty"` // default 1
	// StallFirstMS: after the headers, send nothing for this long before
	// the first chunk.
	StallFirstMS int `json:"stall_first_ms,omitempty"`
	// StallAfterChunks: after N content chunks, send nothing for StallMS
	// (default 60 s), then go on.
	StallAfterChunks *int `json:"stall_after_chunks,omitempty"`
	StallMS          int  `json:"stall_ms,omitempty"`
	// CutAfterChunks: after N content chunks, drop the connection.
	CutAfterChunks *int `json:"cut_after_chunks,omitempty"`
	// MalformedAfterChunks: after N content chunks, send a chunk that is
	// not valid JSON (then go on).
	MalformedAfterChunks *int `json:"malformed_after_chunks,omitempty"`
	// ErrorAfterChunks: after N content chunks, send the vendor's
	// mid-stream error (OpenAI error chunk, Anthropic error event,
	// Gemini error object) and end the body.
	ErrorAfterChunks *int `json:"error_after_chunks,omitempty"`
	// RefuseAfterChunks: after N content chunks, stop with the vendor's
	// content-policy reason (OpenAI finish_reason content_filter,
	// Anthropic stop_reason refusal, Gemini finishReason SAFETY), usage
	// and end marker included.
	RefuseAfterChunks *int `json:"refuse_after_chunks,omitempty"`
	// OmitEndMarker: finish reason and usage are sent but not the end
	// marker ([DONE], message_stop); the body then ends normally. Gemini
	// streams have no end marker.
	OmitEndMarker bool `json:"omit_end_marker,omitempty"`

	hugeLineAfter *int // marker only: a line longer than any decoder takes
}

// Price is USD per million tokens.
type Price struct {
	InputPerMTok  float64 `json:"input_per_mtok"`
	OutputPerMTok float64 `json:"output_per_mtok"`
}

// DefaultReportedPrice is the price OpenRouter reports when the scenario
// sets none: the one deployments/policy.yaml lists for its OpenRouter
// model, so a demo's vendor-reported costs match its catalog.
var DefaultReportedPrice = Price{InputPerMTok: 0.13, OutputPerMTok: 0.40}

// Cost is what p charges for in prompt and out output tokens.
func (p Price) Cost(in, out int) float64 {
	return (float64(in)*p.InputPerMTok + float64(out)*p.OutputPerMTok) / 1e6
}

// Latency is a latency model: BaseMS plus a deterministic jitter in
// [0, JitterMS) chosen by prompt hash, plus PerOutputTokenMS per output token.
type Latency struct {
	BaseMS           int     `json:"base_ms,omitempty"`
	JitterMS         int     `json:"jitter_ms,omitempty"`
	PerOutputTokenMS float64 `json:"per_output_token_ms,omitempty"`
}

// Outage is a window in which every call fails with Status (default 503).
// It starts at At (RFC 3339) or StartAfterMS after the scenario holding it
// was installed; an outage that is unchanged by a later PATCH keeps its
// original start.
type Outage struct {
	StartAfterMS int64      `json:"start_after_ms,omitempty"`
	At           *time.Time `json:"at,omitempty"`
	DurationMS   int64      `json:"duration_ms"`
	Status       int        `json:"status,omitempty"`
}

// Ptr returns a pointer to v, for Behavior fields.
func Ptr[T any](v T) *T { return &v }

// ParseScenario decodes a scenario, rejecting unknown fields, and validates it.
func ParseScenario(data []byte) (Scenario, error) {
	var sc Scenario
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return Scenario{}, fmt.Errorf("scenario: %w", err)
	}
	if dec.More() {
		return Scenario{}, errors.New("scenario: trailing data after the JSON object")
	}
	return sc, sc.Validate()
}

// LoadScenario reads a scenario file.
func LoadScenario(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, err
	}
	return ParseScenario(data)
}

// Validate reports the first invalid setting.
func (sc Scenario) Validate() error {
	if err := sc.Defaults.validate("defaults"); err != nil {
		return err
	}
	for v, vs := range sc.Vendors {
		if v == "" || v[0] == '_' {
			return fmt.Errorf("scenario: invalid vendor name %q", v)
		}
		if err := vs.Behavior.validate("vendors." + v); err != nil {
			return err
		}
		for m, b := range vs.Models {
			if err := b.validate("vendors." + v + ".models." + m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *Behavior) validate(at string) error {
	rate := func(name string, p *float64) error {
		if p != nil && (*p < 0 || *p > 1 || *p != *p) {
			return fmt.Errorf("scenario: %s.%s must be within 0..1", at, name)
		}
		return nil
	}
	for _, r := range []struct {
		n string
		p *float64
	}{{"error_rate", b.ErrorRate}, {"invalid_json_rate", b.InvalidJSONRate},
		{"schema_mismatch_rate", b.SchemaMismatchRate}, {"cached_ratio", b.CachedRatio}} {
		if err := rate(r.n, r.p); err != nil {
			return err
		}
	}
	errStatus := func(name string, s int, zeroOK bool) error {
		if (s == 0 && zeroOK) || (s >= 400 && s <= 599) {
			return nil
		}
		return fmt.Errorf("scenario: %s.%s must be an HTTP error status (400..599), got %d", at, name, s)
	}
	if b.ErrorStatus != nil {
		if err := errStatus("error_status", *b.ErrorStatus, true); err != nil {
			return err
		}
	}
	if b.Status != nil {
		if err := errStatus("status", *b.Status, true); err != nil {
			return err
		}
	}
	if p := b.ReportedPrice; p != nil && (p.InputPerMTok < 0 || p.OutputPerMTok < 0 || p.InputPerMTok != p.InputPerMTok || p.OutputPerMTok != p.OutputPerMTok) {
		return fmt.Errorf("scenario: %s.reported_price must not be negative", at)
	}
	if st := b.Stream; st != nil {
		for name, v := range map[string]int{"chunk_delay_ms": st.ChunkDelayMS, "words_per_chunk": st.WordsPerChunk,
			"stall_first_ms": st.StallFirstMS, "stall_ms": st.StallMS} {
			if v < 0 {
				return fmt.Errorf("scenario: %s.stream.%s must not be negative", at, name)
			}
		}
		for name, p := range map[string]*int{"stall_after_chunks": st.StallAfterChunks, "cut_after_chunks": st.CutAfterChunks,
			"malformed_after_chunks": st.MalformedAfterChunks, "error_after_chunks": st.ErrorAfterChunks,
			"refuse_after_chunks": st.RefuseAfterChunks} {
			if p != nil && *p < 0 {
				return fmt.Errorf("scenario: %s.stream.%s must not be negative", at, name)
			}
		}
	}
	for name, p := range map[string]*int{"rpm": b.RPM, "tpm": b.TPM, "retry_after_s": b.RetryAfterS,
		"reasoning_tokens": b.ReasoningTokens, "context_window": b.ContextWindow} {
		if p != nil && *p < 0 {
			return fmt.Errorf("scenario: %s.%s must not be negative", at, name)
		}
	}
	if l := b.Latency; l != nil && (l.BaseMS < 0 || l.JitterMS < 0 || l.PerOutputTokenMS < 0) {
		return fmt.Errorf("scenario: %s.latency must not be negative", at)
	}
	for i, o := range b.Outages {
		if o.DurationMS <= 0 || o.StartAfterMS < 0 {
			return fmt.Errorf("scenario: %s.outages[%d] needs duration_ms > 0 and start_after_ms >= 0", at, i)
		}
		if err := errStatus(fmt.Sprintf("outages[%d].status", i), o.Status, true); err != nil {
			return err
		}
	}
	return nil
}

// clone deep-copies a scenario through JSON (scenarios are small).
func (sc Scenario) clone() Scenario {
	data, _ := json.Marshal(sc)
	var out Scenario
	_ = json.Unmarshal(data, &out)
	return out
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

// PatchScenario returns sc with an RFC 7386 merge patch applied: objects
// merge key by key (so a patch naming one vendor's model leaves everything
// else alone), null deletes, arrays (outages) are replaced.
func PatchScenario(sc Scenario, patch []byte) (Scenario, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return Scenario{}, fmt.Errorf("scenario patch: %w", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return Scenario{}, errors.New("scenario patch: must be a JSON object")
	}
	cur, err := json.Marshal(sc)
	if err != nil {
		return Scenario{}, err
	}
	var t any
	if err := json.Unmarshal(cur, &t); err != nil {
		return Scenario{}, err
	}
	merged, err := json.Marshal(mergePatch(t, p))
	if err != nil {
		return Scenario{}, err
	}
	return ParseScenario(merged)
}

// resolved is the effective behaviour of one vendor/model, ready for the
// hot path.
type resolved struct {
	latencyBase     time.Duration
	jitter          time.Duration
	perToken        time.Duration
	errorRate       float64
	errorStatus     int
	status          int
	outages         []window
	rpm, tpm        int
	retryAfterS     int // -1: computed
	invalidJSONRate float64
	mismatchRate    float64
	cachedRatio     float64
	reasoning       int
	contextWindow   int
	price           Price
	rejectPrefill   bool
	stream          StreamBehavior
}

type window struct {
	start, end time.Time
	status     int
}

type compiled struct {
	scenario Scenario
	def      *resolved
	vendors  map[string]*compiledVendor
	epochs   map[string]epoch // scope -> outage list and the time its relative starts count from
}

type compiledVendor struct {
	base   *resolved
	models map[string]*resolved
}

type epoch struct {
	outages string
	at      time.Time
}

func (c *compiled) lookup(vendor, model string) *resolved {
	v, ok := c.vendors[vendor]
	if !ok {
		return c.def
	}
	if m, ok := v.models[model]; ok {
		return m
	}
	return v.base
}

// compile resolves inheritance once per scenario change. prev supplies the
// epochs of outage lists that did not change.
func compile(sc Scenario, prev *compiled, now time.Time) *compiled {
	c := &compiled{scenario: sc, vendors: map[string]*compiledVendor{}, epochs: map[string]epoch{}}
	epochOf := func(scope string, outages []Outage) time.Time {
		key, _ := json.Marshal(outages)
		if prev != nil {
			if e, ok := prev.epochs[scope]; ok && e.outages == string(key) {
				c.epochs[scope] = e
				return e.at
			}
		}
		c.epochs[scope] = epoch{outages: string(key), at: now}
		return now
	}
	base := Behavior{}
	var baseOutages []window
	apply := func(dst Behavior, src Behavior, outages []window, scope string) (Behavior, []window) {
		overlay(&dst, src)
		if len(src.Outages) > 0 {
			at := epochOf(scope, src.Outages)
			outages = append(append([]window(nil), outages...), windows(src.Outages, at)...)
		}
		return dst, outages
	}
	defB, defW := apply(base, sc.Defaults, baseOutages, "defaults")
	c.def = resolve(defB, defW)
	for vn, vs := range sc.Vendors {
		vb, vw := apply(defB, vs.Behavior, defW, "v:"+vn)
		cv := &compiledVendor{base: resolve(vb, vw), models: map[string]*resolved{}}
		for mn, mb := range vs.Models {
			b, w := apply(vb, mb, vw, "m:"+vn+"/"+mn)
			cv.models[mn] = resolve(b, w)
		}
		c.vendors[vn] = cv
	}
	return c
}

func windows(outages []Outage, epoch time.Time) []window {
	out := make([]window, 0, len(outages))
	for _, o := range outages {
		start := epoch.Add(time.Duration(o.StartAfterMS) * time.Millisecond)
		if o.At != nil {
			start = *o.At
		}
		st := o.Status
		if st == 0 {
			st = 503
		}
		out = append(out, window{start: start, end: start.Add(time.Duration(o.DurationMS) * time.Millisecond), status: st})
	}
	return out
}

func overlay(dst *Behavior, src Behavior) {
	if src.Latency != nil {
		dst.Latency = src.Latency
	}
	if src.ErrorRate != nil {
		dst.ErrorRate = src.ErrorRate
	}
	if src.ErrorStatus != nil {
		dst.ErrorStatus = src.ErrorStatus
	}
	if src.Status != nil {
		dst.Status = src.Status
	}
	if src.RPM != nil {
		dst.RPM = src.RPM
	}
	if src.TPM != nil {
		dst.TPM = src.TPM
	}
	if src.RetryAfterS != nil {
		dst.RetryAfterS = src.RetryAfterS
	}
	if src.InvalidJSONRate != nil {
		dst.InvalidJSONRate = src.InvalidJSONRate
	}
	if src.SchemaMismatchRate != nil {
		dst.SchemaMismatchRate = src.SchemaMismatchRate
	}
	if src.CachedRatio != nil {
		dst.CachedRatio = src.CachedRatio
	}
	if src.ReasoningTokens != nil {
		dst.ReasoningTokens = src.ReasoningTokens
	}
	if src.ContextWindow != nil {
		dst.ContextWindow = src.ContextWindow
	}
	if src.ReportedPrice != nil {
		dst.ReportedPrice = src.ReportedPrice
	}
	if src.RejectPrefill != nil {
		dst.RejectPrefill = src.RejectPrefill
	}
	if src.Stream != nil {
		dst.Stream = src.Stream
	}
	dst.Outages = nil
}

func resolve(b Behavior, outages []window) *resolved {
	r := &resolved{errorStatus: 500, retryAfterS: -1, outages: outages, price: DefaultReportedPrice}
	if l := b.Latency; l != nil {
		r.latencyBase = time.Duration(l.BaseMS) * time.Millisecond
		r.jitter = time.Duration(l.JitterMS) * time.Millisecond
		r.perToken = time.Duration(l.PerOutputTokenMS * float64(time.Millisecond))
	}
	if b.ErrorRate != nil {
		r.errorRate = *b.ErrorRate
	}
	if b.ErrorStatus != nil && *b.ErrorStatus != 0 {
		r.errorStatus = *b.ErrorStatus
	}
	if b.Status != nil {
		r.status = *b.Status
	}
	if b.RPM != nil {
		r.rpm = *b.RPM
	}
	if b.TPM != nil {
		r.tpm = *b.TPM
	}
	if b.RetryAfterS != nil {
		r.retryAfterS = *b.RetryAfterS
	}
	if b.InvalidJSONRate != nil {
		r.invalidJSONRate = *b.InvalidJSONRate
	}
	if b.SchemaMismatchRate != nil {
		r.mismatchRate = *b.SchemaMismatchRate
	}
	if b.CachedRatio != nil {
		r.cachedRatio = *b.CachedRatio
	}
	if b.ReasoningTokens != nil {
		r.reasoning = *b.ReasoningTokens
	}
	if b.ContextWindow != nil {
		r.contextWindow = *b.ContextWindow
	}
	if b.ReportedPrice != nil {
		r.price = *b.ReportedPrice
	}
	if b.RejectPrefill != nil {
		r.rejectPrefill = *b.RejectPrefill
	}
	if b.Stream != nil {
		r.stream = *b.Stream
	}
	return r
}

// outageStatus returns the status of an outage active at now, or 0.
func (r *resolved) outageStatus(now time.Time) int {
	for _, w := range r.outages {
		if !now.Before(w.start) && now.Before(w.end) {
			return w.status
		}
	}
	return 0
}
