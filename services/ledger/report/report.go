// Package report runs the ledger's cost, fallback, error and latency
// reports on ClickHouse. Every query reads the tables with FINAL, so rows the
// ledger inserted more than once count once. User input never reaches the
// SQL text: grouping dimensions come from a fixed allow-list and the time
// range is bound as parameters. docs/ledger.md shows each query.
package report

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/switchyard-llm/switchyard/services/ledger/internal/chsql"
)

// Query selects the time range and grouping of a report. A zero Since or
// Until leaves that end open; the range is [Since, Until) on the event
// timestamp (ts). By lists grouping dimensions, see Dimensions.
type Query struct {
	Since, Until time.Time
	By           []string
}

// dimensions maps each allowed --by value to its SQL expression. Every
// dimension is a column of both tables.
var dimensions = map[string]string{
	"vendor":         "vendor",
	"model":          "model",
	"endpoint_tag":   "endpoint_tag",
	"tenant":         "tenant",
	"prompt_version": "prompt_version",
	"route":          "route",
	"day":            "toString(toDate(ts))",
}

// Dimensions lists the allowed --by values.
func Dimensions() []string {
	return []string{"vendor", "model", "endpoint_tag", "tenant", "prompt_version", "route", "day"}
}

// ParseBy splits a comma-separated --by value and checks it.
func ParseBy(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	by := strings.Split(s, ",")
	return by, validateBy(by)
}

func validateBy(by []string) error {
	var errs []error
	seen := map[string]bool{}
	for _, d := range by {
		d = strings.TrimSpace(d)
		if _, ok := dimensions[d]; !ok {
			errs = append(errs, fmt.Errorf("report: unknown --by %q (allowed: %s)", d, strings.Join(Dimensions(), ", ")))
			continue
		}
		if seen[d] {
			errs = append(errs, fmt.Errorf("report: --by %q given twice", d))
		}
		seen[d] = true
	}
	return errors.Join(errs...)
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// plan is a checked query: grouping expressions and the WHERE clause.
type plan struct {
	db    string   // backquoted database
	names []string // dimension names, in order
	exprs []string // "expr AS name"
	where string   // " WHERE …" including the time range
	args  []any
	desc  bool
}

func newPlan(db string, q Query, defaultBy []string) (*plan, error) {
	if !identRE.MatchString(db) {
		return nil, fmt.Errorf("report: invalid database name %q", db)
	}
	by := q.By
	if len(by) == 0 {
		by = defaultBy
	}
	if err := validateBy(by); err != nil {
		return nil, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return nil, fmt.Errorf("report: --until %s is not after --since %s", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
	}
	p := &plan{db: "`" + db + "`"}
	for _, d := range by {
		d = strings.TrimSpace(d)
		p.names = append(p.names, d)
		p.exprs = append(p.exprs, dimensions[d]+" AS "+d)
	}
	var conds []string
	if !q.Since.IsZero() {
		conds = append(conds, "ts >= toDateTime(?)")
		p.args = append(p.args, clampUnix(q.Since))
	}
	if !q.Until.IsZero() {
		conds = append(conds, "ts < toDateTime(?)")
		p.args = append(p.args, clampUnix(q.Until))
	}
	if len(conds) > 0 {
		p.where = " WHERE " + strings.Join(conds, " AND ")
	}
	return p, nil
}

// clampUnix keeps a bound inside DateTime's range.
func clampUnix(t time.Time) int64 {
	return min(max(t.Unix(), 0), math.MaxUint32)
}

// and adds a fixed condition to the WHERE clause.
func (p *plan) and(cond string) string {
	if p.where == "" {
		return " WHERE " + cond
	}
	return p.where + " AND " + cond
}

func (p *plan) selectDims() string {
	if len(p.exprs) == 0 {
		return ""
	}
	return strings.Join(p.exprs, ", ") + ", "
}

func (p *plan) groupBy() string {
	if len(p.names) == 0 {
		return ""
	}
	return " GROUP BY " + strings.Join(p.names, ", ")
}

// orderBy orders by the given leading terms, then the dimensions.
func (p *plan) orderBy(lead ...string) string {
	terms := append(slices.Clone(lead), p.names...)
	if len(terms) == 0 {
		return ""
	}
	return " ORDER BY " + strings.Join(terms, ", ")
}

// costSQL is the cost report's query: every vendor call (skipped targets
// are not calls).
func costSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"count() AS attempts, uniqExact(request_id) AS requests, " +
		"sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, " +
		"sum(reasoning_tokens) AS reasoning_tokens, sum(cached_tokens) AS cached_tokens, " +
		"round(sum(cost_usd), 6) AS cost_usd, countIf(price_known = 0) AS unpriced_attempts " +
		"FROM " + p.db + ".attempts FINAL" + p.and(chsql.Called()) + p.groupBy() + p.orderBy("cost_usd DESC")
}

func fallbackSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"count() AS requests, countIf(fallback = 1) AS fallbacks, " +
		"round(countIf(fallback = 1) / count(), 4) AS fallback_rate " +
		"FROM " + p.db + ".requests FINAL" + p.where + p.groupBy() + p.orderBy("requests DESC")
}

func fallbackReasonsSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"if(fallback_reason = '', 'unspecified', fallback_reason) AS reason, count() AS requests " +
		"FROM " + p.db + ".requests FINAL" + p.and("fallback = 1") +
		" GROUP BY " + strings.Join(append(slices.Clone(p.names), "reason"), ", ") +
		" ORDER BY " + strings.Join(append(slices.Clone(p.names), "requests DESC", "reason"), ", ")
}

// errorsSQL counts failed calls per error class, and calls left started
// (their executor died) as the class "abandoned". Skipped targets and
// calls cut short by Switchyard are not errors. The class is computed in a
// subquery: an alias named like the column it reads would be cyclic.
func errorsSQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"class_ AS error_class, count() AS attempts FROM (SELECT " + strings.Join(dimensionColumns, ", ") + ", " +
		"if(" + chsql.Abandoned() + ", 'abandoned', error_class) AS class_ " +
		"FROM " + p.db + ".attempts FINAL" + p.and("(("+chsql.Failed()+") OR "+chsql.Abandoned()+")") + ")" +
		" GROUP BY " + strings.Join(append(slices.Clone(p.names), "error_class"), ", ") +
		" ORDER BY " + strings.Join(append(slices.Clone(p.names), "attempts DESC", "error_class"), ", ")
}

// dimensionColumns are the columns the dimensions read.
var dimensionColumns = []string{"ts", "vendor", "model", "endpoint_tag", "tenant", "prompt_version", "route"}

func latencySQL(p *plan) string {
	return "SELECT " + p.selectDims() +
		"count() AS attempts, " +
		"quantilesExact(0.5, 0.95, 0.99)(latency_ms) AS q, q[1] AS p50_ms, q[2] AS p95_ms, q[3] AS p99_ms, " +
		"max(latency_ms) AS max_ms " +
		"FROM " + p.db + ".attempts FINAL" + p.and(chsql.Answered()) + p.groupBy() + p.orderBy()
}

// Cost sums attempts, tokens and USD from the attempts table (every vendor
// call, failed ones included, at the cost the ledger stored: the vendor's
// reported charge or the catalog price). Skipped targets (open circuit,
// saturation) are not calls and are left out. unpriced_attempts counts
// attempts whose model was not in the catalog: their cost is unknown, not
// zero. With no By it returns one total row.
func Cost(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, nil)
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, costSQL(p), p.args, nil)
}

// Fallbacks reports, per group of finished requests, how many there were,
// how many fell back to a later vendor, the fallback rate (fallbacks /
// requests) and the fallback reasons with their counts
// ("rate_limited=3; timeout=1"). vendor and model are the request's final
// ones. See FallbackReasons for the reasons as rows and Errors for the
// attempts' error classes.
func Fallbacks(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, nil)
	if err != nil {
		return nil, err
	}
	t, err := run(ctx, conn, fallbackSQL(p), p.args, nil)
	if err != nil {
		return nil, err
	}
	reasons, err := run(ctx, conn, fallbackReasonsSQL(p), p.args, nil)
	if err != nil {
		return nil, err
	}
	nd := len(p.names)
	byKey := map[string][]string{}
	for _, r := range reasons.Rows {
		k := strings.Join(r[:nd], "\x00")
		byKey[k] = append(byKey[k], r[nd]+"="+r[nd+1])
	}
	t.Columns = append(t.Columns, "fallback_reasons")
	t.numeric = append(t.numeric, false)
	for i, r := range t.Rows {
		t.Rows[i] = append(r, strings.Join(byKey[strings.Join(r[:nd], "\x00")], "; "))
	}
	return t, nil
}

// FallbackReasons counts requests that fell back, per group and reason.
func FallbackReasons(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, nil)
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, fallbackReasonsSQL(p), p.args, nil)
}

// Errors counts failed calls per group (default vendor, model) and error
// class; calls whose executor died before the vendor answered count as
// "abandoned". Skipped targets and hedge losers cut short are not errors.
func Errors(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, []string{"vendor", "model"})
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, errorsSQL(p), p.args, nil)
}

// Latency gives exact p50/p95/p99 and maximum latency (ms) of the attempts a
// vendor answered (no error class, not still started), per group (default
// vendor, model).
func Latency(ctx context.Context, conn driver.Conn, db string, q Query) (*Table, error) {
	p, err := newPlan(db, q, []string{"vendor", "model"})
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, latencySQL(p), p.args, map[string]bool{"q": true})
}

// run executes a query and formats every value; columns named in skip are
// helpers left out of the table.
func run(ctx context.Context, conn driver.Conn, sql string, args []any, skip map[string]bool) (*Table, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	t := &Table{}
	for _, ct := range types {
		if skip[ct.Name()] {
			continue
		}
		t.Columns = append(t.Columns, ct.Name())
		t.numeric = append(t.numeric, isNumber(ct.ScanType()))
	}
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("report: scan: %w", err)
		}
		row := make([]string, 0, len(t.Columns))
		for i, ct := range types {
			if skip[ct.Name()] {
				continue
			}
			row = append(row, format(reflect.ValueOf(dest[i]).Elem().Interface()))
		}
		t.Rows = append(t.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return t, nil
}

func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func format(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "0"
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	default:
		return fmt.Sprint(x)
	}
}
