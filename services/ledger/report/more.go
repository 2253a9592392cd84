package report

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/pricing"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chsql"
)

// modelsSQL: attempts are vendor calls (skipped targets left out); the
// error rate is failed calls over calls with a known outcome; abandoned
// counts calls left started; p50 is over answered calls.
func modelsSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"count() AS attempts, countIf(" + chsql.Failed() + ") AS failed_attempts, " +
		"round(countIf(" + chsql.Failed() + ") / countIf(" + chsql.Concluded() + "), 4) AS error_rate, " +
		"countIf(" + chsql.Abandoned() + ") AS abandoned, " +
		"sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens, " +
		"round(sum(cost_usd), 6) AS cost_usd, countIf(price_known = 0) AS unpriced_attempts, " +
		"round(countIf(price_known = 0) / count(), 4) AS unpriced_ratio, " +
		"quantileExactIf(0.5)(latency_ms, " + chsql.Answered() + ") AS p50_ms " +
		"FROM " + p.db + ".attempts FINAL" + p.and(chsql.Called()) + p.groupBy() + p.orderBy("cost_usd DESC")
}

// tenantsSQL counts requests from the requests table (every request,
// those that made no vendor call included) and attempts, tokens and cost
// from the attempts table, joined by the grouping dimensions with UNION
// ALL (which ClickHouse 18.16 runs, unlike most JOINs).
func tenantsSQL(p *plan) string {
	dims, group := p.selectDims(), p.groupBy()
	// The outer query reads the inner queries' dimension columns by name.
	names := ""
	if len(p.names) > 0 {
		names = strings.Join(p.names, ", ") + ", "
	}
	return "SELECT " + names +
		"sum(requests_n) AS requests, sum(attempts_n) AS attempts, " +
		"sum(input_n) AS input_tokens, sum(output_n) AS output_tokens, sum(reasoning_n) AS reasoning_tokens, " +
		"round(sum(cost_n), 6) AS cost_usd, sum(unpriced_n) AS unpriced_attempts FROM (" +
		"SELECT " + dims + "toUInt64(0) AS requests_n, toUInt64(count()) AS attempts_n, " +
		"toUInt64(sum(input_tokens)) AS input_n, toUInt64(sum(output_tokens)) AS output_n, " +
		"toUInt64(sum(reasoning_tokens)) AS reasoning_n, toFloat64(sum(cost_usd)) AS cost_n, " +
		"toUInt64(countIf(price_known = 0)) AS unpriced_n " +
		"FROM " + p.db + ".attempts FINAL" + p.and(chsql.Called()) + group +
		" UNION ALL SELECT " + dims + "toUInt64(count()), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toFloat64(0), toUInt64(0) " +
		"FROM " + p.db + ".requests FINAL" + p.where + group +
		")" + group + p.orderBy("cost_usd DESC")
}

// savingsSQL groups attempts by the dimensions, the route, whether the
// attempt succeeded and whether its price was known, with the token classes
// clamped exactly as pricing.Price clamps them, so a price list applied to
// the sums equals the sum of the per-attempt prices.
func savingsSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"route AS route_, toUInt8(" + chsql.Answered() + ") AS ok_, price_known AS known_, " +
		"count() AS attempts, sum(cost_usd) AS cost, " +
		"sum(toInt64(input_tokens) - least(toInt64(cached_tokens), toInt64(input_tokens)) - " +
		"least(toInt64(cache_write_tokens), toInt64(input_tokens) - least(toInt64(cached_tokens), toInt64(input_tokens)))) AS fresh, " +
		"sum(least(toInt64(cached_tokens), toInt64(input_tokens))) AS cached, " +
		"sum(least(toInt64(cache_write_tokens), toInt64(input_tokens) - least(toInt64(cached_tokens), toInt64(input_tokens)))) AS written, " +
		"sum(toInt64(output_tokens)) AS output " +
		"FROM " + p.db + ".attempts FINAL" + p.and(chsql.Called()) +
		" GROUP BY " + strings.Join(append(append([]string{}, p.names...), "route_", "ok_", "known_"), ", ") +
		" ORDER BY " + strings.Join(append(append([]string{}, p.names...), "route_", "ok_", "known_"), ", ")
}

// Models compares models (default by vendor, model): attempts, failed
// attempts and error rate, tokens, cost, unpriced attempts and the median
// latency of the attempts the vendor answered.
func Models(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, []string{"vendor", "model"})
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, modelsSQL(p), p.args, nil)
}

// Tenants reports spend per tenant (default by tenant): requests (from the
// requests table: every finished request, those answered from the cache or
// refused before any vendor call included), attempts (vendor calls),
// tokens, cost, cost per request and unpriced attempts. Grouped by vendor
// or model, requests count by their final vendor/model.
func Tenants(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, []string{"tenant"})
	if err != nil {
		return nil, err
	}
	// The time range binds twice: once per table.
	t, err := run(ctx, conn, tenantsSQL(p), append(slices.Clone(p.args), p.args...), nil)
	if err != nil {
		return nil, err
	}
	// cost_per_request = cost_usd / requests, inserted after cost_usd. (In
	// SQL the alias cost_usd would shadow the column inside a second sum.)
	ci, ri := t.col("cost_usd"), t.col("requests")
	t.Columns = slices.Insert(t.Columns, ci+1, "cost_per_request")
	t.numeric = slices.Insert(t.numeric, ci+1, true)
	for i, r := range t.Rows {
		per := 0.0
		if n := num(r[ri]); n > 0 {
			per = round(num(r[ci])/n, 6)
		}
		t.Rows[i] = slices.Insert(r, ci+1, format(per))
	}
	return t, nil
}

// RoutePolicy is what Savings needs from the policy: the catalog's prices
// and the routes' chains. *policy.Policy implements it.
type RoutePolicy interface {
	pricing.Catalog
	Route(name string) (*policy.Route, bool)
}

// CeilingModel returns the most expensive model of a route's chain: the
// target whose catalog price for one million input plus one million output
// tokens is highest (the earlier target wins a tie). ok is false when the
// route is unknown or none of its targets is in the catalog.
func CeilingModel(pol RoutePolicy, route string) (m *policy.Model, ok bool) {
	r, found := pol.Route(route)
	if !found {
		return nil, false
	}
	best := math.Inf(-1)
	for _, t := range r.Chain {
		c, found := pol.Model(t.Vendor, t.Model)
		if !found {
			continue
		}
		if v := c.Price.InputPerMTok + c.Price.OutputPerMTok; v > best {
			best, m = v, c
		}
	}
	return m, m != nil
}

// Savings compares what the traffic cost with what it would have cost
// without routing: every attempt the vendor answered (no error class),
// with the same input, cached, cache-write and output tokens, priced at the
// most expensive model of its route's chain (CeilingModel). actual_usd is
// the stored cost of every attempt, failed ones included, since that is what
// was spent. Attempts whose own price is unknown, or whose route has no
// priced model in pol, are left out of both sides and counted in
// unpriced_attempts. With no By it returns one total row.
func Savings(ctx context.Context, conn driver.Conn, db string, q Query, pol RoutePolicy) (*Table, error) {
	p, err := newPlan(db, q, nil)
	if err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, fmt.Errorf("report: savings needs a policy")
	}
	rows, err := conn.Query(ctx, savingsSQL(p), p.args...)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer rows.Close()
	type acc struct {
		dims                           []string
		attempts, okAttempts, unpriced uint64
		actual, baseline               float64
	}
	var order []string
	groups := map[string]*acc{}
	nd := len(p.names)
	for rows.Next() {
		dims := make([]string, nd)
		var (
			route                          string
			okFlag, known                  uint8
			n                              uint64
			cost                           float64
			fresh, cached, written, output int64
		)
		dest := make([]any, 0, nd+9)
		for i := range dims {
			dest = append(dest, &dims[i])
		}
		dest = append(dest, &route, &okFlag, &known, &n, &cost, &fresh, &cached, &written, &output)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("report: scan: %w", err)
		}
		key := strings.Join(dims, "\x00")
		g := groups[key]
		if g == nil {
			g = &acc{dims: dims}
			groups[key] = g
			order = append(order, key)
		}
		g.attempts += n
		if okFlag == 1 {
			g.okAttempts += n
		}
		ceil, hasCeil := CeilingModel(pol, route)
		if known == 0 || !hasCeil {
			g.unpriced += n
			continue
		}
		g.actual += cost
		if okFlag == 1 {
			g.baseline += pricing.Price(ceil.Price, envelope.Usage{
				InputTokens:      int(fresh + cached + written),
				CachedTokens:     int(cached),
				CacheWriteTokens: int(written),
				OutputTokens:     int(output),
			})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if nd == 0 && len(order) == 0 {
		groups[""] = &acc{}
		order = append(order, "")
	}
	t := &Table{Columns: append(append([]string{}, p.names...),
		"attempts", "ok_attempts", "actual_usd", "baseline_usd", "savings_usd", "savings_pct", "unpriced_attempts")}
	for range p.names {
		t.numeric = append(t.numeric, false)
	}
	t.numeric = append(t.numeric, true, true, true, true, true, true, true)
	for _, k := range order {
		g := groups[k]
		pct := 0.0
		if g.baseline > 0 {
			pct = round((g.baseline-g.actual)/g.baseline*100, 2)
		}
		row := append(append([]string{}, g.dims...),
			strconv.FormatUint(g.attempts, 10), strconv.FormatUint(g.okAttempts, 10),
			format(round(g.actual, 6)), format(round(g.baseline, 6)), format(round(g.baseline-g.actual, 6)),
			format(pct), strconv.FormatUint(g.unpriced, 10))
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

func round(v float64, places int) float64 {
	s := math.Pow10(places)
	r := math.Round(v*s) / s
	if r == 0 {
		return 0 // no "-0"
	}
	return r
}
