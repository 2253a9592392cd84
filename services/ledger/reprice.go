package ledger

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
)

// RepriceResult says what RepriceRange changed.
type RepriceResult struct {
	AttemptsScanned  int     // attempts in the range (read with FINAL)
	AttemptsChanged  int     // attempts written again with a new cost or price_known
	RequestsChanged  int     // requests whose cost_usd was re-summed to a new value
	AttemptCostDelta float64 // new minus old cost over the changed attempts, USD
	RequestCostDelta float64 // new minus old cost_usd over the changed requests, USD
}

// attemptRecord is a full attempts row, in attemptColumns order.
type attemptRecord struct {
	RequestID        string    `ch:"request_id"`
	AttemptID        string    `ch:"attempt_id"`
	Attempt          uint16    `ch:"attempt"`
	TS               time.Time `ch:"ts"`
	Tenant           string    `ch:"tenant"`
	UserHash         string    `ch:"user_hash"`
	EndpointTag      string    `ch:"endpoint_tag"`
	PromptVersion    string    `ch:"prompt_version"`
	Environment      string    `ch:"environment"`
	Route            string    `ch:"route"`
	Strategy         string    `ch:"strategy"`
	Vendor           string    `ch:"vendor"`
	Model            string    `ch:"model"`
	Outcome          string    `ch:"outcome"`
	ErrorClass       string    `ch:"error_class"`
	HTTPStatus       uint16    `ch:"http_status"`
	InputTokens      uint32    `ch:"input_tokens"`
	OutputTokens     uint32    `ch:"output_tokens"`
	CachedTokens     uint32    `ch:"cached_tokens"`
	CacheWriteTokens uint32    `ch:"cache_write_tokens"`
	ReasoningTokens  uint32    `ch:"reasoning_tokens"`
	CostUSD          float64   `ch:"cost_usd"`
	PriceKnown       uint8     `ch:"price_known"`
	CostSource       string    `ch:"cost_source"`
	LatencyMS        uint32    `ch:"latency_ms"`
	TTFTMS           uint32    `ch:"ttft_ms"`
	Hedged           uint8     `ch:"hedged"`
	CacheHit         uint8     `ch:"cache_hit"`
	TraceID          string    `ch:"trace_id"`
	IngestedAt       time.Time `ch:"ingested_at"`
}

func (a *attemptRecord) values() []any {
	return []any{a.RequestID, a.AttemptID, a.Attempt, a.TS, a.Tenant, a.UserHash, a.EndpointTag, a.PromptVersion,
		a.Environment, a.Route, a.Strategy, a.Vendor, a.Model, a.Outcome, a.ErrorClass, a.HTTPStatus, a.InputTokens,
		a.OutputTokens, a.CachedTokens, a.CacheWriteTokens, a.ReasoningTokens, a.CostUSD, a.PriceKnown, a.CostSource,
		a.LatencyMS, a.TTFTMS, a.Hedged, a.CacheHit, a.TraceID, a.IngestedAt}
}

// requestRecord is a full requests row, in requestColumns order.
type requestRecord struct {
	RequestID       string    `ch:"request_id"`
	TS              time.Time `ch:"ts"`
	FinishedAt      time.Time `ch:"finished_at"`
	Tenant          string    `ch:"tenant"`
	UserHash        string    `ch:"user_hash"`
	EndpointTag     string    `ch:"endpoint_tag"`
	PromptVersion   string    `ch:"prompt_version"`
	Environment     string    `ch:"environment"`
	Route           string    `ch:"route"`
	Strategy        string    `ch:"strategy"`
	Task            string    `ch:"task"`
	Status          string    `ch:"status"`
	ErrorCode       string    `ch:"error_code"`
	Vendor          string    `ch:"vendor"`
	Model           string    `ch:"model"`
	Attempts        uint16    `ch:"attempts"`
	Fallback        uint8     `ch:"fallback"`
	FallbackReason  string    `ch:"fallback_reason"`
	Escalated       uint8     `ch:"escalated"`
	Degraded        uint8     `ch:"degraded"`
	QualityPassed   uint8     `ch:"quality_passed"`
	Cached          uint8     `ch:"cached"`
	CostUSD         float64   `ch:"cost_usd"`
	LatencyMS       uint32    `ch:"latency_ms"`
	InputTokens     uint32    `ch:"input_tokens"`
	OutputTokens    uint32    `ch:"output_tokens"`
	CachedTokens    uint32    `ch:"cached_tokens"`
	ReasoningTokens uint32    `ch:"reasoning_tokens"`
	TraceID         string    `ch:"trace_id"`
	IngestedAt      time.Time `ch:"ingested_at"`
}

func (r *requestRecord) values() []any {
	return []any{r.RequestID, r.TS, r.FinishedAt, r.Tenant, r.UserHash, r.EndpointTag, r.PromptVersion, r.Environment,
		r.Route, r.Strategy, r.Task, r.Status, r.ErrorCode, r.Vendor, r.Model, r.Attempts, r.Fallback, r.FallbackReason,
		r.Escalated, r.Degraded, r.QualityPassed, r.Cached, r.CostUSD, r.LatencyMS, r.InputTokens, r.OutputTokens,
		r.CachedTokens, r.ReasoningTokens, r.TraceID, r.IngestedAt}
}

// costEpsilon is the smallest cost change RepriceRange writes.
const costEpsilon = 1e-12

// newVersion is the ingested_at of a re-written row: now, but always at
// least a second after the row it replaces, so ReplacingMergeTree keeps it.
func newVersion(now, old time.Time) time.Time {
	now = now.UTC().Truncate(time.Second)
	if next := old.UTC().Add(time.Second); now.Before(next) {
		return next
	}
	return now
}

// RepriceRange recomputes cost_usd and price_known of the attempts with ts
// in [since, until) (a zero until is open) from their stored usage and
// catalog c, the way the ledger prices new attempts. An attempt whose price
// changes is inserted again, unchanged otherwise, with a newer ingested_at:
// ReplacingMergeTree(ingested_at) then keeps the new version (reads use
// FINAL). The requests those attempts belong to get their cost_usd re-summed
// from all their attempts and are written again the same way when it
// changes. With dryRun nothing is written. Running it twice with the same
// catalog changes nothing the second time.
func RepriceRange(ctx context.Context, conn driver.Conn, database string, c pricing.Catalog, since, until time.Time, now time.Time, dryRun bool) (RepriceResult, error) {
	var res RepriceResult
	if !ValidDatabaseName(database) {
		return res, fmt.Errorf("reprice: invalid database name %q", database)
	}
	if since.IsZero() {
		return res, fmt.Errorf("reprice: since is required")
	}
	if !until.IsZero() && !until.After(since) {
		return res, fmt.Errorf("reprice: until %s is not after since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	db := quoteIdent(database)
	where := " WHERE ts >= toDateTime(?)"
	args := []any{clampUnix(since)}
	if !until.IsZero() {
		where += " AND ts < toDateTime(?)"
		args = append(args, clampUnix(until))
	}
	rows, err := conn.Query(ctx, "SELECT "+attemptColumns+" FROM "+db+".attempts FINAL"+where+" ORDER BY request_id, attempt_id", args...)
	if err != nil {
		return res, fmt.Errorf("reprice: read attempts: %w", err)
	}
	var changed []attemptRecord
	for rows.Next() {
		var a attemptRecord
		if err := rows.ScanStruct(&a); err != nil {
			rows.Close()
			return res, fmt.Errorf("reprice: scan attempt: %w", err)
		}
		res.AttemptsScanned++
		// A vendor-reported cost is what was charged, and a started
		// attempt has no usage to price: both stay as they are.
		if a.CostSource == string(pricing.SourceVendor) || a.Outcome == envelope.OutcomeStarted {
			continue
		}
		usd, src := pricing.Quote(c, a.Vendor, a.Model, envelope.Usage{
			InputTokens:      int(a.InputTokens),
			OutputTokens:     int(a.OutputTokens),
			CachedTokens:     int(a.CachedTokens),
			CacheWriteTokens: int(a.CacheWriteTokens),
			ReasoningTokens:  int(a.ReasoningTokens),
		})
		usd, known := finite(usd), src != pricing.SourceNone
		if math.Abs(usd-a.CostUSD) <= costEpsilon && b8(known) == a.PriceKnown && string(src) == a.CostSource {
			continue
		}
		res.AttemptCostDelta += usd - a.CostUSD
		a.CostUSD, a.PriceKnown, a.CostSource = usd, b8(known), string(src)
		a.IngestedAt = newVersion(now, a.IngestedAt)
		changed = append(changed, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("reprice: read attempts: %w", err)
	}
	res.AttemptsChanged = len(changed)
	if len(changed) == 0 {
		return res, nil
	}

	// New cost of every affected attempt, by request, to re-sum requests.
	newCost := map[string]map[string]float64{}
	var ids []string
	for _, a := range changed {
		if newCost[a.RequestID] == nil {
			newCost[a.RequestID] = map[string]float64{}
			ids = append(ids, a.RequestID)
		}
		newCost[a.RequestID][a.AttemptID] = a.CostUSD
	}
	if !dryRun {
		const chunk = 5000
		for i := 0; i < len(changed); i += chunk {
			b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".attempts ("+attemptColumns+")")
			if err != nil {
				return res, fmt.Errorf("reprice: insert attempts: %w", err)
			}
			for _, a := range changed[i:min(i+chunk, len(changed))] {
				if err := b.Append(a.values()...); err != nil {
					_ = b.Abort()
					return res, fmt.Errorf("reprice: insert attempts: %w", err)
				}
			}
			if err := b.Send(); err != nil {
				return res, fmt.Errorf("reprice: insert attempts: %w", err)
			}
		}
	}

	// Re-sum the affected requests from all their attempts (any ts), with
	// the new costs of the changed ones (read from memory, so a dry run
	// reports the same figures).
	const idChunk = 1000
	for i := 0; i < len(ids); i += idChunk {
		part := ids[i:min(i+idChunk, len(ids))]
		sums := map[string]float64{}
		arows, err := conn.Query(ctx, "SELECT request_id, attempt_id, cost_usd FROM "+db+".attempts FINAL WHERE request_id IN (SELECT arrayJoin(?))", part)
		if err != nil {
			return res, fmt.Errorf("reprice: read attempts: %w", err)
		}
		for arows.Next() {
			var rid, aid string
			var cost float64
			if err := arows.Scan(&rid, &aid, &cost); err != nil {
				arows.Close()
				return res, fmt.Errorf("reprice: scan: %w", err)
			}
			if v, ok := newCost[rid][aid]; ok {
				cost = v
			}
			sums[rid] += cost
		}
		arows.Close()
		if err := arows.Err(); err != nil {
			return res, fmt.Errorf("reprice: read attempts: %w", err)
		}
		rrows, err := conn.Query(ctx, "SELECT "+requestColumns+" FROM "+db+".requests FINAL WHERE request_id IN (SELECT arrayJoin(?))", part)
		if err != nil {
			return res, fmt.Errorf("reprice: read requests: %w", err)
		}
		var reqs []requestRecord
		for rrows.Next() {
			var r requestRecord
			if err := rrows.ScanStruct(&r); err != nil {
				rrows.Close()
				return res, fmt.Errorf("reprice: scan request: %w", err)
			}
			sum := sums[r.RequestID]
			if math.Abs(sum-r.CostUSD) <= costEpsilon {
				continue
			}
			res.RequestCostDelta += sum - r.CostUSD
			r.CostUSD = sum
			r.IngestedAt = newVersion(now, r.IngestedAt)
			reqs = append(reqs, r)
		}
		rrows.Close()
		if err := rrows.Err(); err != nil {
			return res, fmt.Errorf("reprice: read requests: %w", err)
		}
		res.RequestsChanged += len(reqs)
		if dryRun || len(reqs) == 0 {
			continue
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".requests ("+requestColumns+")")
		if err != nil {
			return res, fmt.Errorf("reprice: insert requests: %w", err)
		}
		for _, r := range reqs {
			if err := b.Append(r.values()...); err != nil {
				_ = b.Abort()
				return res, fmt.Errorf("reprice: insert requests: %w", err)
			}
		}
		if err := b.Send(); err != nil {
			return res, fmt.Errorf("reprice: insert requests: %w", err)
		}
	}
	return res, nil
}

func clampUnix(t time.Time) int64 {
	return min(max(t.Unix(), 0), math.MaxUint32)
}
