// Package envelope holds the public request and reply envelopes (contract §3
// and §4), the internal work envelope that travels between stages, and the
// telemetry events the ledger stores. The JSON Schemas in schemas/ describe
// the same shapes; envelope_test.go keeps the two from drifting apart.
package envelope

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Request is what clients publish to llm.requests.
type Request struct {
	ID            string `json:"id"`
	Tenant        string `json:"tenant"`
	User          string `json:"user,omitempty"`
	EndpointTag   string `json:"endpoint_tag,omitempty"`
	PromptVersion string `json:"prompt_version,omitempty"`
	Environment   string `json:"environment,omitempty"`
	ReplyTo       string `json:"reply_to,omitempty"`
	Route         string `json:"route,omitempty"`
	// Model pins the request to one catalog model ("<vendor>/<model>"):
	// the router sends it there and nowhere else (the route, named or
	// matched, still gives retries, budgets and the quality handling).
	Model          string                     `json:"model,omitempty"`
	Messages       []Message                  `json:"messages"`
	MaxTokens      int                        `json:"max_tokens,omitempty"`
	Temperature    *float64                   `json:"temperature,omitempty"`
	ResponseFormat *ResponseFormat            `json:"response_format,omitempty"`
	Policy         *RequestPolicy             `json:"policy,omitempty"`
	TimeoutMS      int                        `json:"timeout_ms,omitempty"`
	Metadata       map[string]string          `json:"metadata,omitempty"`
	VendorOptions  map[string]json.RawMessage `json:"vendor_options,omitempty"`
	// Stream asks for the answer's deltas on DeltaSubject(tenant, id) as
	// the vendor produces them; the reply is published as for any request.
	Stream bool `json:"stream,omitempty"`
}

// Message is one chat turn, OpenAI-shaped.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ResponseFormat asks for plain text, any JSON object, or JSON matching a schema.
type ResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema *JSONSchemaSpec `json:"json_schema,omitempty"`
}

// JSONSchemaSpec is the OpenAI json_schema response format body.
type JSONSchemaSpec struct {
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict *bool           `json:"strict,omitempty"`
}

// RequestPolicy carries the client's routing preferences.
type RequestPolicy struct {
	Quality      string  `json:"quality,omitempty"`
	Stakes       string  `json:"stakes,omitempty"`
	MaxLatencyMS int     `json:"max_latency_ms,omitempty"`
	MaxCostUSD   float64 `json:"max_cost_usd,omitempty"`
	Residency    string  `json:"residency,omitempty"`
	Cache        *bool   `json:"cache,omitempty"`
}

// Reply statuses.
const (
	StatusOK    = "ok"
	StatusError = "error"
)

// Stable error codes (contract §4).
const (
	CodeInvalidRequest   = "invalid_request"
	CodePayloadTooLarge  = "payload_too_large"
	CodeUnknownRoute     = "unknown_route"
	CodePolicyBlocked    = "policy_blocked"
	CodeBudgetExceeded   = "budget_exceeded"
	CodeQuotaExceeded    = "quota_exceeded"
	CodeDeadlineExceeded = "deadline_exceeded"
	CodeAllVendorsFailed = "all_vendors_failed"
	CodeQualityRejected  = "quality_rejected"
	CodeInternal         = "internal"
	// CodeStreamInterrupted: a streamed answer broke after some of it had
	// been published and no later target could continue it.
	CodeStreamInterrupted = "stream_interrupted"
)

// Reply is published once per request to its reply subject.
type Reply struct {
	ID           string          `json:"id"`
	Tenant       string          `json:"tenant"`
	Status       string          `json:"status"`
	Content      string          `json:"content,omitempty"`
	FinishReason string          `json:"finish_reason,omitempty"`
	Vendor       string          `json:"vendor,omitempty"`
	Model        string          `json:"model,omitempty"`
	Route        string          `json:"route,omitempty"`
	Usage        Usage           `json:"usage"`
	CostUSD      float64         `json:"cost_usd"`
	LatencyMS    int64           `json:"latency_ms"`
	Cached       bool            `json:"cached"`
	Fallback     bool            `json:"fallback"`
	Degraded     bool            `json:"degraded"`
	Attempts     []AttemptResult `json:"attempts"`
	Quality      *Quality        `json:"quality,omitempty"`
	Error        *Error          `json:"error,omitempty"`
	// TTFTMS is the time to the first token of the answering attempt of
	// a streamed request (0: not streamed).
	TTFTMS int64 `json:"ttft_ms,omitempty"`
}

// Usage is normalised across vendors: InputTokens counts every prompt token,
// cached ones included; CachedTokens is the cached (cache-read) subset and
// CacheWriteTokens the subset written to a vendor's prompt cache.
// OutputTokens counts every billed output token, reasoning included, and
// ReasoningTokens is the subset the model spent thinking (OpenAI's
// completion_tokens_details.reasoning_tokens; Gemini's thoughtsTokenCount,
// which Gemini bills as output but leaves out of candidatesTokenCount, so
// the adapter adds it to OutputTokens; Anthropic counts thinking in
// output_tokens without a separate figure, so it stays 0 there).
type Usage struct {
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	CachedTokens     int `json:"cached_tokens"`
	CacheWriteTokens int `json:"cache_write_tokens,omitempty"`
	ReasoningTokens  int `json:"reasoning_tokens,omitempty"`
	// VendorCostUSD is what the vendor says the call cost (OpenRouter's
	// usage.cost), valid when VendorCostReported: a free model reports 0.
	// When reported it is the attempt's cost (pricing.Cost); the catalog
	// price is the fallback.
	VendorCostUSD      float64 `json:"vendor_cost_usd,omitempty"`
	VendorCostReported bool    `json:"vendor_cost_reported,omitempty"`
}

// Add adds o's token counts to u. Vendor-reported costs are per call and
// are not summed here: a reply's cost_usd is the sum of its attempts' costs.
func (u *Usage) Add(o Usage) {
	u.InputTokens += o.InputTokens
	u.OutputTokens += o.OutputTokens
	u.CachedTokens += o.CachedTokens
	u.CacheWriteTokens += o.CacheWriteTokens
	u.ReasoningTokens += o.ReasoningTokens
}

// Attempt outcomes.
const (
	OutcomeOK            = "ok"
	OutcomeError         = "error"
	OutcomeQualityFailed = "quality_failed"
	// OutcomeStarted is the attempt event an executor publishes before it
	// calls the vendor; the finished attempt's event (same attempt id)
	// replaces it. One left alone means the executor died mid-call.
	OutcomeStarted = "started"
)

// AttemptResult is one vendor attempt as reported in the reply.
type AttemptResult struct {
	Attempt    int     `json:"attempt"`
	Vendor     string  `json:"vendor"`
	Model      string  `json:"model"`
	Outcome    string  `json:"outcome"`
	ErrorClass string  `json:"error_class,omitempty"`
	HTTPStatus int     `json:"http_status,omitempty"`
	LatencyMS  int64   `json:"latency_ms"`
	Usage      Usage   `json:"usage"`
	CostUSD    float64 `json:"cost_usd"`
	// TTFTMS is the time to the first delta of a streamed attempt.
	TTFTMS int64 `json:"ttft_ms,omitempty"`
}

// Quality is the gate's verdict.
type Quality struct {
	Passed bool     `json:"passed"`
	Checks []string `json:"checks"`
	Failed []string `json:"failed,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

// Error is the error body of a failed reply.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// DeltaSubject is where the deltas of a streamed request are published
// (core NATS): llm.deltas.<tenant>.<id>, built like the reply subject.
func DeltaSubject(tenant, id string) string {
	return "llm.deltas." + tenant + "." + id
}

// Delta event types.
const (
	DeltaContent = "delta"
	DeltaDone    = "done"
	DeltaError   = "error"
)

// DeltaEvent is one message on a streamed request's delta subject: a piece
// of content (Type delta) in Seq order, then one terminal event, done or
// error. The reply on the reply subject stays the source of truth.
type DeltaEvent struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
	// Attempt is the attempt that produced the delta; Seq numbers the
	// deltas of the request from 0, continuing across attempts when a
	// later target continues a cut answer.
	Attempt int    `json:"attempt,omitempty"`
	Seq     int    `json:"seq"`
	Content string `json:"content,omitempty"`
	// Vendor and Model: the model that wrote the delta, or (done) that
	// served the answer. done also carries the finish reason, the usage of
	// every attempt and the answering attempt's time to first token.
	Vendor       string `json:"vendor,omitempty"`
	Model        string `json:"model,omitempty"`
	FinishReason string `json:"finish_reason,omitempty"`
	Usage        *Usage `json:"usage,omitempty"`
	TTFTMS       int64  `json:"ttft_ms,omitempty"`
	// error: the reply's error.
	Error *Error `json:"error,omitempty"`
}

// DefaultReplySubject is where a reply goes when the request names none.
func DefaultReplySubject(tenant, id string) string {
	return "llm.replies." + tenant + "." + id
}

// PinnedTarget is the catalog model the request names in Model, split at
// the first "/" (a model id may itself hold slashes).
func (r *Request) PinnedTarget() (Target, bool) {
	vendor, model, ok := strings.Cut(r.Model, "/")
	if !ok || vendor == "" || model == "" {
		return Target{}, false
	}
	return Target{Vendor: vendor, Model: model}, true
}

// ReplySubject returns the request's reply subject or the default one.
func (r *Request) ReplySubject() string {
	if r.ReplyTo != "" {
		return r.ReplyTo
	}
	return DefaultReplySubject(r.Tenant, r.ID)
}

// WorkKey is a request's delivery key: its id (or a replay-specific key)
// scoped by its tenant, because ids are unique per tenant only. Every
// Nats-Msg-Id the request causes downstream starts with it, so two tenants'
// requests never deduplicate against each other.
func WorkKey(tenant, base string) string { return tenant + "." + base }

// MsgID is the Nats-Msg-Id a client sets when it publishes the request to
// llm.requests: <tenant>.<id>.
func (r *Request) MsgID() string { return WorkKey(r.Tenant, r.ID) }

// Classification is what intake learned about a request.
type Classification struct {
	Task          string   `json:"task"`
	Sensitive     bool     `json:"sensitive"`
	PII           []string `json:"pii,omitempty"`
	TokenEstimate int      `json:"token_estimate"`
}

// Target is one step of a route's chain.
type Target struct {
	Vendor string `json:"vendor"`
	Model  string `json:"model"`
}

// Result is what an executor learned from one vendor call.
type Result struct {
	Content      string  `json:"content,omitempty"`
	FinishReason string  `json:"finish_reason,omitempty"`
	Usage        Usage   `json:"usage"`
	CostUSD      float64 `json:"cost_usd"`
	PriceKnown   bool    `json:"price_known"`
	HTTPStatus   int     `json:"http_status,omitempty"`
	ErrorClass   string  `json:"error_class,omitempty"`
	ErrorMessage string  `json:"error_message,omitempty"`
	Retryable    bool    `json:"retryable"`
	RetryAfterMS int64   `json:"retry_after_ms,omitempty"`
	LatencyMS    int64   `json:"latency_ms"`
	// StartedAt is when the call began: the attempt row's timestamp, fixed
	// here so a redelivered result produces an identical row.
	StartedAt time.Time `json:"started_at"`
	// Skipped marks a target that was not called (open circuit, rpm/tpm
	// saturation, deadline passed before the call, hedge already won): not a
	// vendor failure, so no attempt row, no breaker count, no error rate.
	Skipped bool `json:"skipped,omitempty"`
	// AttemptID is the id the executor gave this call (see AttemptID); a
	// call repeated after an executor died gets its own id, so both calls
	// are visible in the ledger.
	AttemptID string `json:"attempt_id,omitempty"`
	// Streamed calls: TTFTMS is the time to the first delta; Deltas and
	// Partial are the deltas this attempt published and their text (kept
	// on a failure, so the router knows what the client already has).
	TTFTMS  int64  `json:"ttft_ms,omitempty"`
	Deltas  int    `json:"deltas,omitempty"`
	Partial string `json:"partial,omitempty"`
}

// OK reports whether the vendor returned an answer.
func (r *Result) OK() bool { return r != nil && r.ErrorClass == "" && !r.Skipped }

// Why a target was skipped (Result.ErrorClass of a Skipped result).
const (
	SkipCircuitOpen = "circuit_open" // the vendor's or model's breaker is open
	SkipSaturated   = "saturated"    // the vendor is at its rpm/tpm limit
	SkipDeadline    = "deadline"     // the request's deadline passed before the call
	SkipStale       = "stale"        // the attempt's deadline passed while it queued
	SkipHedgeWon    = "hedge_won"    // another branch of a hedged request answered
)

// StageFailure marks work a stage dead-lettered: the stage hands it to the
// router on llm.verdicts, and the router replies and settles the budget.
type StageFailure struct {
	Stage   string `json:"stage"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Work is the internal envelope passed between stages. The routing state
// travels with the message, so routers, executors and gates keep none.
type Work struct {
	// Key is the delivery key, WorkKey(tenant, id or a replay-specific key).
	// It prefixes every Nats-Msg-Id the request's messages carry downstream.
	Key        string         `json:"key"`
	Request    Request        `json:"request"`
	Class      Classification `json:"class"`
	Route      string         `json:"route"`
	Strategy   string         `json:"strategy"`
	ReceivedAt time.Time      `json:"received_at"`
	Deadline   time.Time      `json:"deadline"`
	Chain      []Target       `json:"chain,omitempty"`
	Step       int            `json:"step"`
	// StepAttempts counts the attempts made on the current step.
	StepAttempts int `json:"step_attempts,omitempty"`
	// StaleDispatches counts how often the last target was offered again
	// because its work went stale in the queue before any call.
	StaleDispatches int `json:"stale_dispatches,omitempty"`
	// Budget is the tenant's budget reservation (pkg/budget), settled with
	// the real cost when the request finishes.
	Budget json.RawMessage `json:"budget,omitempty"`
	// Hedged marks a request sent to two targets in parallel; Branch is this
	// copy (0 the primary, 1 the hedge) and AttemptBase its attempt
	// numbering offset.
	Hedged      bool `json:"hedged,omitempty"`
	Branch      int  `json:"branch,omitempty"`
	AttemptBase int  `json:"attempt_base,omitempty"`
	// CacheKey is set when the answer may be stored in the response cache;
	// CacheTTLMS is how long.
	CacheKey   string `json:"cache_key,omitempty"`
	CacheTTLMS int64  `json:"cache_ttl_ms,omitempty"`
	// NotBefore delays a retry: the executor hands the work back until then.
	NotBefore time.Time `json:"not_before,omitzero"`
	// AttemptDeadline bounds the attempt in flight. The router sets it so a
	// silent vendor leaves time for the rest of the chain; the executor never
	// waits past it (nor past Deadline).
	AttemptDeadline time.Time `json:"attempt_deadline,omitzero"`
	// Dispatch counts the router's hand-offs to executors (per branch): it
	// keeps the message ids of successive dispatches distinct even when a
	// skipped target added no attempt.
	Dispatch int `json:"dispatch,omitempty"`
	// Degraded is set by the gate for an answer it accepts with a flag (a
	// truncated one).
	Degraded bool `json:"degraded,omitempty"`
	// Failed is set by a stage that dead-lettered the work.
	Failed         *StageFailure   `json:"failed,omitempty"`
	Attempts       []AttemptResult `json:"attempts,omitempty"`
	Current        *Result         `json:"current,omitempty"`
	Quality        *Quality        `json:"quality,omitempty"`
	FallbackReason string          `json:"fallback_reason,omitempty"`
	Escalated      bool            `json:"escalated,omitempty"`
	TraceParent    string          `json:"traceparent,omitempty"`
	// StreamSeq is the number of deltas of a streamed request published by
	// earlier attempts, StreamText their text: a target continuing a cut
	// answer (an assistant prefill) numbers its deltas from StreamSeq and
	// its answer is StreamText + what it adds.
	StreamSeq  int    `json:"stream_seq,omitempty"`
	StreamText string `json:"stream_text,omitempty"`
	// Calls are the vendor calls behind Attempts, one each in the same
	// order (the executor appends both): what an attempt's row needs and
	// the reply does not show. The router sends the finished rows with the
	// request's event.
	Calls []Call `json:"calls,omitempty"`
}

// Call identifies one vendor call: its attempt id (see Result.AttemptID)
// and its start, the attempt row's ts (the started row it replaces has the
// same).
type Call struct {
	AttemptID string    `json:"attempt_id"`
	StartedAt time.Time `json:"started_at"`
}

// Target returns the chain step being attempted.
func (w *Work) Target() Target {
	if w.Step < 0 || w.Step >= len(w.Chain) {
		return Target{}
	}
	return w.Chain[w.Step]
}

// AttemptNumber is the 1-based number of the attempt in flight. Hedge
// branches number their attempts from their own base, so attempt ids of
// parallel branches never collide.
func (w *Work) AttemptNumber() int { return w.AttemptBase + len(w.Attempts) + 1 }

// AttemptID identifies an attempt deterministically, so redelivered work
// produces the same id and the ledger stores it once.
func AttemptID(requestID string, attempt int) string {
	return requestID + "#" + strconv.Itoa(attempt)
}

// AttemptEvent is one row of the attempts table (llm.telemetry.attempt).
//
// An executor publishes one with Outcome "started" (no usage, no cost)
// before it calls the vendor, and the finished attempt's event, with the
// same AttemptID and the same TS (the call's start, Result.StartedAt),
// replaces it in the ledger whichever arrives first. TS must be equal:
// the attempts table is partitioned by month of ts, and rows only replace
// each other within a partition.
type AttemptEvent struct {
	RequestID     string    `json:"request_id"`
	AttemptID     string    `json:"attempt_id"`
	Attempt       int       `json:"attempt"`
	TS            time.Time `json:"ts"`
	Tenant        string    `json:"tenant"`
	UserHash      string    `json:"user_hash"`
	EndpointTag   string    `json:"endpoint_tag"`
	PromptVersion string    `json:"prompt_version"`
	Environment   string    `json:"environment"`
	Route         string    `json:"route"`
	Strategy      string    `json:"strategy"`
	Vendor        string    `json:"vendor"`
	Model         string    `json:"model"`
	Outcome       string    `json:"outcome"`
	ErrorClass    string    `json:"error_class"`
	HTTPStatus    int       `json:"http_status"`
	InputTokens   int       `json:"input_tokens"`
	OutputTokens  int       `json:"output_tokens"`
	CachedTokens  int       `json:"cached_tokens"`
	CacheWrite    int       `json:"cache_write_tokens"`
	// ReasoningTokens is the subset of OutputTokens spent thinking.
	ReasoningTokens int `json:"reasoning_tokens"`
	// VendorCostUSD is the vendor-reported cost (see Usage), valid when
	// VendorCostReported; the ledger then stores it as the attempt's cost.
	VendorCostUSD      float64 `json:"vendor_cost_usd"`
	VendorCostReported bool    `json:"vendor_cost_reported"`
	CostUSD            float64 `json:"cost_usd"`
	PriceKnown         bool    `json:"price_known"`
	LatencyMS          int64   `json:"latency_ms"`
	Hedged             bool    `json:"hedged"`
	// CacheHit: the vendor served part of the prompt from its prompt cache
	// (CachedTokens > 0). The ledger derives it from the tokens itself.
	CacheHit bool   `json:"cache_hit"`
	TraceID  string `json:"trace_id"`
	// TTFTMS is the time to the first delta of a streamed attempt (0: not
	// streamed, or no delta).
	TTFTMS int64 `json:"ttft_ms"`
}

// SetUsage copies a call's usage into the event: every token count and the
// vendor-reported cost.
func (e *AttemptEvent) SetUsage(u Usage) {
	e.InputTokens, e.OutputTokens, e.CachedTokens, e.CacheWrite = u.InputTokens, u.OutputTokens, u.CachedTokens, u.CacheWriteTokens
	e.ReasoningTokens = u.ReasoningTokens
	e.VendorCostUSD, e.VendorCostReported = u.VendorCostUSD, u.VendorCostReported
}

// Usage is the event's usage, as SetUsage stored it.
func (e *AttemptEvent) Usage() Usage {
	return Usage{InputTokens: e.InputTokens, OutputTokens: e.OutputTokens, CachedTokens: e.CachedTokens,
		CacheWriteTokens: e.CacheWrite, ReasoningTokens: e.ReasoningTokens,
		VendorCostUSD: e.VendorCostUSD, VendorCostReported: e.VendorCostReported}
}

// RequestEvent is one row of the requests table (llm.telemetry.request).
type RequestEvent struct {
	RequestID      string    `json:"request_id"`
	TS             time.Time `json:"ts"`
	FinishedAt     time.Time `json:"finished_at"`
	Tenant         string    `json:"tenant"`
	UserHash       string    `json:"user_hash"`
	EndpointTag    string    `json:"endpoint_tag"`
	PromptVersion  string    `json:"prompt_version"`
	Environment    string    `json:"environment"`
	Route          string    `json:"route"`
	Strategy       string    `json:"strategy"`
	Task           string    `json:"task"`
	Status         string    `json:"status"`
	ErrorCode      string    `json:"error_code"`
	Vendor         string    `json:"vendor"`
	Model          string    `json:"model"`
	Attempts       int       `json:"attempts"`
	Fallback       bool      `json:"fallback"`
	FallbackReason string    `json:"fallback_reason"`
	Escalated      bool      `json:"escalated"`
	Degraded       bool      `json:"degraded"`
	QualityPassed  bool      `json:"quality_passed"`
	Cached         bool      `json:"cached"`
	CostUSD        float64   `json:"cost_usd"`
	LatencyMS      int64     `json:"latency_ms"`
	InputTokens    int       `json:"input_tokens"`
	OutputTokens   int       `json:"output_tokens"`
	CachedTokens   int       `json:"cached_tokens"`
	// ReasoningTokens is the subset of OutputTokens spent thinking.
	ReasoningTokens int    `json:"reasoning_tokens"`
	TraceID         string `json:"trace_id"`
	// AttemptEvents are the finished rows of the request's vendor calls
	// (attempts table), carried here rather than as messages of their own:
	// one stream write and one ledger ack per request fewer. A hedged
	// request's rows still come on llm.telemetry.attempt (see
	// pipeline.FinishOuts).
	AttemptEvents []AttemptEvent `json:"attempt_events,omitempty"`
}

// AddUsage adds one attempt's token counts to the request's totals.
func (e *RequestEvent) AddUsage(u Usage) {
	e.InputTokens += u.InputTokens
	e.OutputTokens += u.OutputTokens
	e.CachedTokens += u.CachedTokens
	e.ReasoningTokens += u.ReasoningTokens
}
