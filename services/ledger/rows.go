package ledger

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
)

// Column lists of the INSERTs; ClickHouse 18.16 needs them named. The order
// matches attemptRow and requestRow.
const (
	attemptColumns = "request_id, attempt_id, attempt, ts, tenant, user_hash, endpoint_tag, prompt_version, " +
		"environment, route, strategy, vendor, model, outcome, error_class, http_status, input_tokens, " +
		"output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd, price_known, cost_source, " +
		"latency_ms, ttft_ms, hedged, cache_hit, trace_id, ingested_at"
	requestColumns = "request_id, ts, finished_at, tenant, user_hash, endpoint_tag, prompt_version, environment, " +
		"route, strategy, task, status, error_code, vendor, model, attempts, fallback, fallback_reason, " +
		"escalated, degraded, quality_passed, cached, cost_usd, latency_ms, input_tokens, output_tokens, " +
		"cached_tokens, reasoning_tokens, trace_id, ingested_at"
)

// DateTime's range. An event outside it could never be inserted and would
// block its batch forever, so it is dead-lettered instead.
var (
	minTS = time.Unix(1, 0)
	maxTS = time.Unix(math.MaxUint32, 0)
)

func validTS(t time.Time) bool { return !t.Before(minTS) && !t.After(maxTS) }

func validateAttempt(e *envelope.AttemptEvent) error {
	var errs []error
	if e.RequestID == "" {
		errs = append(errs, errors.New("request_id is empty"))
	}
	if e.AttemptID == "" {
		errs = append(errs, errors.New("attempt_id is empty"))
	}
	if !validTS(e.TS) {
		errs = append(errs, errors.New("ts is missing or out of range"))
	}
	return errors.Join(errs...)
}

func validateRequest(e *envelope.RequestEvent) error {
	var errs []error
	if e.RequestID == "" {
		errs = append(errs, errors.New("request_id is empty"))
	}
	if !validTS(e.TS) {
		errs = append(errs, errors.New("ts is missing or out of range"))
	}
	if !e.FinishedAt.IsZero() && !validTS(e.FinishedAt) {
		errs = append(errs, errors.New("finished_at is out of range"))
	}
	// The attempt rows it carries are stored with it or not at all.
	for i := range e.AttemptEvents {
		if err := validateAttempt(&e.AttemptEvents[i]); err != nil {
			errs = append(errs, fmt.Errorf("attempt_events[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// Reprice sets the attempt's cost: the ledger's figure, not the executor's,
// is what the tables hold. A vendor-reported cost (OpenRouter's usage.cost)
// is kept as the cost; otherwise the catalog prices the usage. It reports
// whether the model's price was known (or the vendor said what it charged);
// an unknown model costs 0 with price_known = 0. A started attempt has no
// usage yet: it costs 0, with price_known saying whether the catalog knows
// its model.
func Reprice(c pricing.Catalog, e *envelope.AttemptEvent) bool {
	usd, known := pricing.Cost(c, e.Vendor, e.Model, e.Usage())
	if e.Outcome == envelope.OutcomeStarted {
		_, known = pricing.Cost(c, e.Vendor, e.Model, envelope.Usage{})
		usd = 0
	}
	e.CostUSD, e.PriceKnown = usd, known
	return known
}

// CostSource is the attempts.cost_source of a priced event (see Reprice).
func CostSource(e *envelope.AttemptEvent) pricing.Source {
	switch {
	case e.Outcome == envelope.OutcomeStarted:
		return pricing.SourceNone
	case e.VendorCostReported:
		return pricing.SourceVendor
	case e.PriceKnown:
		return pricing.SourceCatalog
	}
	return pricing.SourceNone
}

// StartedVersion is the ingested_at of a started attempt's row: the lowest
// version there is, so ReplacingMergeTree(ingested_at) keeps the finished
// attempt's row (same attempt_id and ts) whichever reaches the ledger first.
var StartedVersion = time.Unix(1, 0).UTC()

func attemptRow(e *envelope.AttemptEvent, ingested time.Time) []any {
	if e.Outcome == envelope.OutcomeStarted {
		ingested = StartedVersion
	}
	// cache_hit is the vendor's prompt cache serving part of the prompt,
	// read from the tokens whatever the publisher set.
	cacheHit := e.CachedTokens > 0
	return []any{
		e.RequestID, e.AttemptID, u16(e.Attempt), e.TS.UTC(), e.Tenant, e.UserHash, e.EndpointTag,
		e.PromptVersion, e.Environment, e.Route, e.Strategy, e.Vendor, e.Model, e.Outcome, e.ErrorClass,
		u16(e.HTTPStatus), u32(int64(e.InputTokens)), u32(int64(e.OutputTokens)), u32(int64(e.CachedTokens)),
		u32(int64(e.CacheWrite)), u32(int64(e.ReasoningTokens)), finite(e.CostUSD), b8(e.PriceKnown),
		string(CostSource(e)), u32(e.LatencyMS), u32(e.TTFTMS), b8(e.Hedged), b8(cacheHit), e.TraceID, ingested,
	}
}

func requestRow(e *envelope.RequestEvent, ingested time.Time) []any {
	finished := e.FinishedAt
	if finished.IsZero() {
		finished = e.TS
	}
	return []any{
		e.RequestID, e.TS.UTC(), finished.UTC(), e.Tenant, e.UserHash, e.EndpointTag, e.PromptVersion,
		e.Environment, e.Route, e.Strategy, e.Task, e.Status, e.ErrorCode, e.Vendor, e.Model,
		u16(e.Attempts), b8(e.Fallback), e.FallbackReason, b8(e.Escalated), b8(e.Degraded),
		b8(e.QualityPassed), b8(e.Cached), finite(e.CostUSD), u32(e.LatencyMS), u32(int64(e.InputTokens)),
		u32(int64(e.OutputTokens)), u32(int64(e.CachedTokens)), u32(int64(e.ReasoningTokens)), e.TraceID, ingested,
	}
}

func u16(v int) uint16 {
	switch {
	case v < 0:
		return 0
	case v > math.MaxUint16:
		return math.MaxUint16
	}
	return uint16(v)
}

func u32(v int64) uint32 {
	switch {
	case v < 0:
		return 0
	case v > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(v)
}

func b8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
