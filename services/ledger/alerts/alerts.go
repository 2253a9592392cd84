// Package alerts evaluates Switchyard's operational alerts on the ledger's
// ClickHouse tables and publishes each new episode as JSON on
// llm.alerts.<kind> (stream LLM_ALERTS) and in the log. Thresholds come from
// the policy (policy.Alerts); see docs/alerts.md.
//
// An alert fires once per condition episode: the alerter remembers which
// conditions are firing and publishes only when one starts (or, for the
// daily and monthly alerts, when a new period starts while it holds). A
// condition that is no longer true re-arms. Every publish carries
// Nats-Msg-Id = kind:key:window-start, so two alerters evaluating the same
// tick, or a retried publish, store one message (within the stream's
// duplicate window).
package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/ledger/internal/chsql"
)

// Alert kinds; each is published on Subject(kind).
const (
	KindDailySpend        = "daily_spend"
	KindVendorErrorRate   = "vendor_error_rate"
	KindLatencyRegression = "latency_regression"
	KindBudget            = "budget"
	KindUnknownModel      = "unknown_model"
)

// Kinds lists every alert kind in evaluation order.
func Kinds() []string {
	return []string{KindDailySpend, KindBudget, KindVendorErrorRate, KindLatencyRegression, KindUnknownModel}
}

// Severities.
const (
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Subject is the subject of alerts of one kind: llm.alerts.<kind>.
func Subject(kind string) string { return "llm.alerts." + kind }

// Alert is the JSON published on llm.alerts.<kind>.
type Alert struct {
	Kind string `json:"kind"`
	// Key names what the alert is about within its kind: "total" or
	// "tenant/<tenant>" (daily_spend), "<vendor>" (vendor_error_rate),
	// "<vendor>/<model>" (latency_regression, unknown_model),
	// "<tenant>/day|month/<percent>" (budget).
	Key       string  `json:"key"`
	Severity  string  `json:"severity"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// The window the value was computed over, [WindowStart, WindowEnd).
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Message     string    `json:"message"`
	// At is when the alerter evaluated the condition.
	At time.Time `json:"at"`
}

// MsgID is the alert's JetStream de-duplication id: kind:key:window-start
// (RFC 3339, UTC).
func (a Alert) MsgID() string {
	return a.Kind + ":" + a.Key + ":" + a.WindowStart.UTC().Format(time.RFC3339)
}

// Config tunes the evaluation loop. Zero durations take the defaults.
// Nested in a service's configuration as a field Alerts with the tag
// envconfig:"ALERTS", the variables are SWITCHYARD_ALERTS_ENABLED, _INTERVAL,
// _QUERY_TIMEOUT and _PUBLISH_TIMEOUT.
type Config struct {
	// Enabled is for the caller: whether to run an Alerter at all
	// (default true). New and Run ignore it.
	Enabled bool `envconfig:"ENABLED" default:"true"`
	// Interval between evaluations (default 30s). Sliding windows end at
	// the evaluation time truncated to Interval, so replicas evaluating
	// the same tick compute the same windows and message ids.
	Interval time.Duration `envconfig:"INTERVAL" default:"30s"`
	// QueryTimeout bounds one alert's ClickHouse queries (default 20s).
	QueryTimeout time.Duration `envconfig:"QUERY_TIMEOUT" default:"20s"`
	// PublishTimeout bounds one alert's publish (default 5s).
	PublishTimeout time.Duration `envconfig:"PUBLISH_TIMEOUT" default:"5s"`
}

// DefaultConfig is the configuration with every default applied.
func DefaultConfig() Config {
	return Config{Enabled: true, Interval: 30 * time.Second, QueryTimeout: 20 * time.Second, PublishTimeout: 5 * time.Second}
}

// Validate reports every problem with the configuration at once (zero
// durations are allowed: they take the defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("ALERTS_INTERVAL: must be positive, got %s", c.Interval))
	}
	if c.QueryTimeout < 0 {
		errs = append(errs, fmt.Errorf("ALERTS_QUERY_TIMEOUT: must be positive, got %s", c.QueryTimeout))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("ALERTS_PUBLISH_TIMEOUT: must be positive, got %s", c.PublishTimeout))
	}
	return errors.Join(errs...)
}

// Deps are the alerter's collaborators.
type Deps struct {
	Log zerolog.Logger
	JS  jetstream.JetStream
	CH  driver.Conn
	// Database holds the ledger's tables (a plain identifier).
	Database string
	// Policy supplies the thresholds (policy.Alerts) in force.
	Policy policy.Source
	// Now defaults to time.Now.
	Now func() time.Time
}

// Alerter evaluates the alerts and publishes new episodes.
type Alerter struct {
	cfg  Config
	d    Deps
	db   string
	log  zerolog.Logger
	mu   sync.Mutex
	live map[string]string // kind\x00key → episode (period start, or "" for sliding windows)
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// New checks the configuration and dependencies.
func New(cfg Config, d Deps) (*Alerter, error) {
	def := DefaultConfig()
	if cfg.Interval == 0 {
		cfg.Interval = def.Interval
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = def.QueryTimeout
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = def.PublishTimeout
	}
	errs := []error{cfg.Validate()}
	if d.JS == nil {
		errs = append(errs, errors.New("alerts: JetStream is required"))
	}
	if d.CH == nil {
		errs = append(errs, errors.New("alerts: ClickHouse connection is required"))
	}
	if d.Policy == nil {
		errs = append(errs, errors.New("alerts: policy source is required"))
	}
	if !identRE.MatchString(d.Database) || len(d.Database) > 128 {
		errs = append(errs, fmt.Errorf("alerts: invalid database name %q", d.Database))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Alerter{
		cfg: cfg, d: d, db: "`" + d.Database + "`",
		log:  d.Log.With().Str("component", "alerts").Logger(),
		live: map[string]string{},
	}, nil
}

// Run evaluates at once and then every Interval until ctx is done. A
// failed evaluation is logged and retried at the next tick; Run returns
// nil when ctx is cancelled.
func (a *Alerter) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := a.Evaluate(ctx); err != nil && ctx.Err() == nil {
			a.log.Error().Err(err).Msg("alert evaluation failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// finding is a condition found true in one evaluation.
type finding struct {
	Alert
	// episode identifies the period of a periodic alert (its start); ""
	// for sliding windows, whose episode lasts while the condition holds.
	episode string
	tenant  string
	vendor  string
	model   string
	period  string
	level   float64
}

// Evaluate runs every alert once at Now, publishes the episodes that
// started and returns them. Errors of single alerts are joined; the other
// alerts are still evaluated.
func (a *Alerter) Evaluate(ctx context.Context) ([]Alert, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.d.Policy.Current()
	if p == nil {
		return nil, errors.New("alerts: no policy in force")
	}
	cfg := p.Alerts
	now := a.d.Now().UTC()
	end := now.Truncate(a.cfg.Interval)
	e := &eval{a: a, cfg: &cfg, now: now, end: end}

	var published []Alert
	var errs []error
	for _, kind := range Kinds() {
		found, err := e.run(ctx, kind)
		if err != nil {
			a.log.Error().Err(err).Str("kind", kind).Msg("alert evaluation failed")
			errs = append(errs, fmt.Errorf("%s: %w", kind, err))
			continue // state kept: an outage neither clears nor re-fires
		}
		firing := make(map[string]bool, len(found))
		for _, f := range found {
			id := f.Kind + "\x00" + f.Key
			firing[id] = true
			if ep, ok := a.live[id]; ok && ep == f.episode {
				continue
			}
			if err := a.publish(ctx, f.Alert); err != nil {
				a.log.Error().Err(err).Str("kind", f.Kind).Str("key", f.Key).Msg("alert publish failed")
				errs = append(errs, err)
				continue // not marked: retried at the next tick
			}
			a.live[id] = f.episode
			a.logAlert(f)
			published = append(published, f.Alert)
		}
		for id := range a.live {
			k, key, _ := cut(id)
			if k == kind && !firing[id] {
				delete(a.live, id)
				a.log.Info().Str("kind", k).Str("key", key).Msg("alert cleared")
			}
		}
	}
	return published, errors.Join(errs...)
}

func cut(id string) (kind, key string, ok bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == 0 {
			return id[:i], id[i+1:], true
		}
	}
	return id, "", false
}

func (a *Alerter) publish(ctx context.Context, al Alert) error {
	data, err := json.Marshal(al)
	if err != nil {
		return fmt.Errorf("alert %s: %w", al.MsgID(), err)
	}
	msg := &nats.Msg{Subject: Subject(al.Kind), Data: data, Header: nats.Header{}}
	msg.Header.Set(natsx.HeaderMsgID, al.MsgID())
	ctx, cancel := context.WithTimeout(ctx, a.cfg.PublishTimeout)
	defer cancel()
	if _, err := a.d.JS.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("alert %s: %w", al.MsgID(), err)
	}
	return nil
}

func (a *Alerter) logAlert(f finding) {
	ev := a.log.Warn()
	if f.Severity == SeverityCritical {
		ev = a.log.Error()
	}
	ev = ev.Str("kind", f.Kind).Str("key", f.Key).Str("severity", f.Severity).
		Float64("value", f.Value).Float64("threshold", f.Threshold).
		Time("window_start", f.WindowStart).Time("window_end", f.WindowEnd).
		Str("msg_id", f.MsgID()).Str("alert", f.Message)
	if f.tenant != "" {
		ev = ev.Str("tenant", f.tenant)
	}
	if f.vendor != "" {
		ev = ev.Str("vendor", f.vendor)
	}
	if f.model != "" {
		ev = ev.Str("model", f.model)
	}
	if f.period != "" {
		// Not "level": that key is the log line's own level.
		ev = ev.Str("period", f.period).Float64("budget_level", f.level)
	}
	ev.Msg("alert")
}

// eval is one evaluation at one instant.
type eval struct {
	a   *Alerter
	cfg *policy.Alerts
	now time.Time // evaluation time
	end time.Time // now truncated to the interval: end of sliding windows

	daySpend map[string]float64 // tenant → USD today, read once
}

func (e *eval) run(ctx context.Context, kind string) ([]finding, error) {
	ctx, cancel := context.WithTimeout(ctx, e.a.cfg.QueryTimeout)
	defer cancel()
	switch kind {
	case KindDailySpend:
		return e.dailySpend(ctx)
	case KindBudget:
		return e.budget(ctx)
	case KindVendorErrorRate:
		return e.vendorErrorRate(ctx)
	case KindLatencyRegression:
		return e.latencyRegression(ctx)
	case KindUnknownModel:
		return e.unknownModel(ctx)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

func (e *eval) finding(kind, key, severity string, value, threshold float64, from, to time.Time, periodic bool, msg string) finding {
	f := finding{Alert: Alert{
		Kind: kind, Key: key, Severity: severity, Value: value, Threshold: threshold,
		WindowStart: from.UTC(), WindowEnd: to.UTC(), Message: msg, At: e.now,
	}}
	if periodic {
		f.episode = from.UTC().Format(time.RFC3339)
	}
	return f
}

func unix(t time.Time) int64 { return t.Unix() }

func dayStart(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func monthStart(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}

// SpendSQL is the spend per tenant over [?, ?) (daily_spend, budget).
const SpendSQL = "SELECT tenant, toFloat64(sum(cost_usd)) AS usd FROM %s.attempts FINAL " +
	"WHERE ts >= toDateTime(?) AND ts < toDateTime(?) GROUP BY tenant"

func (e *eval) spend(ctx context.Context, from, to time.Time) (map[string]float64, error) {
	rows, err := e.a.d.CH.Query(ctx, fmt.Sprintf(SpendSQL, e.a.db), unix(from), unix(to))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var tenant string
		var usd float64
		if err := rows.Scan(&tenant, &usd); err != nil {
			return nil, err
		}
		out[tenant] += usd
	}
	return out, rows.Err()
}

func (e *eval) todaySpend(ctx context.Context) (map[string]float64, error) {
	if e.daySpend != nil {
		return e.daySpend, nil
	}
	from := dayStart(e.now)
	s, err := e.spend(ctx, from, from.AddDate(0, 0, 1))
	if err == nil {
		e.daySpend = s
	}
	return s, err
}

func (e *eval) dailySpend(ctx context.Context) ([]finding, error) {
	d := e.cfg.DailySpend
	if d.TotalUSD <= 0 && d.PerTenantUSD <= 0 && len(d.TenantUSD) == 0 {
		return nil, nil
	}
	spend, err := e.todaySpend(ctx)
	if err != nil {
		return nil, err
	}
	from := dayStart(e.now)
	to := from.AddDate(0, 0, 1)
	day := from.Format(time.DateOnly)
	var out []finding
	var total float64
	for _, tenant := range sortedKeys(spend) {
		usd := spend[tenant]
		total += usd
		if th := d.TenantThreshold(tenant); th > 0 && usd > th {
			f := e.finding(KindDailySpend, "tenant/"+tenant, SeverityWarning, usd, th, from, to, true,
				fmt.Sprintf("tenant %s spent %.4f USD on %s, over the daily threshold of %.4f USD", tenant, usd, day, th))
			f.tenant = tenant
			out = append(out, f)
		}
	}
	if d.TotalUSD > 0 && total > d.TotalUSD {
		out = append(out, e.finding(KindDailySpend, "total", SeverityWarning, total, d.TotalUSD, from, to, true,
			fmt.Sprintf("all tenants spent %.4f USD on %s, over the daily threshold of %.4f USD", total, day, d.TotalUSD)))
	}
	return out, nil
}

func (e *eval) budget(ctx context.Context) ([]finding, error) {
	var out []finding
	for _, b := range []struct {
		period   string
		budgets  map[string]float64
		from, to time.Time
	}{
		{"day", e.cfg.BudgetUSDPerDay, dayStart(e.now), dayStart(e.now).AddDate(0, 0, 1)},
		{"month", e.cfg.BudgetUSDPerMonth, monthStart(e.now), monthStart(e.now).AddDate(0, 1, 0)},
	} {
		if len(b.budgets) == 0 {
			continue
		}
		var spend map[string]float64
		var err error
		if b.period == "day" {
			spend, err = e.todaySpend(ctx)
		} else {
			spend, err = e.spend(ctx, b.from, b.to)
		}
		if err != nil {
			return nil, err
		}
		for _, tenant := range sortedKeys(b.budgets) {
			budget, usd := b.budgets[tenant], spend[tenant]
			for _, level := range e.cfg.BudgetLevels {
				th := level * budget
				if usd < th {
					continue
				}
				pct := strconv.FormatFloat(level*100, 'f', -1, 64)
				sev := SeverityWarning
				if level >= 1 {
					sev = SeverityCritical
				}
				f := e.finding(KindBudget, tenant+"/"+b.period+"/"+pct, sev, usd, th, b.from, b.to, true,
					fmt.Sprintf("tenant %s spent %.4f USD this %s, %s%% of its %.4f USD budget reached", tenant, usd, b.period, pct, budget))
				f.tenant, f.period, f.level = tenant, b.period, level
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// ErrorRateSQL is, per vendor over [?, ?), its concluded calls (n) and
// those that failed by its fault (failed). Skipped targets (saturated,
// circuit_open), hedge losers cut short (cancelled), calls still started
// and requests the vendor refused (4xx) are not the vendor failing; see
// chsql and provider.Class.
var ErrorRateSQL = "SELECT vendor, toUInt64(countIf(" + chsql.Concluded() + ")) AS n, " +
	"toUInt64(countIf(" + chsql.VendorFailed() + ")) AS failed " +
	"FROM %s.attempts FINAL WHERE ts >= toDateTime(?) AND ts < toDateTime(?) GROUP BY vendor"

func (e *eval) vendorErrorRate(ctx context.Context) ([]finding, error) {
	c := e.cfg.VendorErrorRate
	if c.Disabled {
		return nil, nil
	}
	from := e.end.Add(-c.Window.Duration)
	rows, err := e.a.d.CH.Query(ctx, fmt.Sprintf(ErrorRateSQL, e.a.db), unix(from), unix(e.end))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []finding
	for rows.Next() {
		var vendor string
		var n, failed uint64
		if err := rows.Scan(&vendor, &n, &failed); err != nil {
			return nil, err
		}
		if n == 0 || n < uint64(c.MinAttempts) {
			continue
		}
		rate := float64(failed) / float64(n)
		if rate <= c.Threshold {
			continue
		}
		f := e.finding(KindVendorErrorRate, vendor, SeverityCritical, rate, c.Threshold, from, e.end, false,
			fmt.Sprintf("vendor %s failed %d of %d calls (%.2f%%) in the last %s, above %.2f%%",
				vendor, failed, n, rate*100, c.Window.Duration, c.Threshold*100))
		f.vendor = vendor
		out = append(out, f)
	}
	return out, rows.Err()
}

// LatencySQL is, per vendor/model over the answered attempts (no error
// class, not still started), the count and exact p95 latency of the recent window [w, end) and
// of the baseline [b, w). Arguments: w, w, w, w, b, end.
var LatencySQL = "SELECT vendor, model, " +
	"toUInt64(countIf(ts >= toDateTime(?))) AS n_recent, " +
	"toUInt64(countIf(ts < toDateTime(?))) AS n_base, " +
	"toFloat64(quantileExactIf(0.95)(latency_ms, ts >= toDateTime(?))) AS p95_recent, " +
	"toFloat64(quantileExactIf(0.95)(latency_ms, ts < toDateTime(?))) AS p95_base " +
	"FROM %s.attempts FINAL WHERE ts >= toDateTime(?) AND ts < toDateTime(?) AND " + chsql.Answered() + " " +
	"GROUP BY vendor, model"

func (e *eval) latencyRegression(ctx context.Context) ([]finding, error) {
	c := e.cfg.LatencyRegression
	if c.Disabled {
		return nil, nil
	}
	w := e.end.Add(-c.Window.Duration)
	b := w.Add(-c.Baseline.Duration)
	rows, err := e.a.d.CH.Query(ctx, fmt.Sprintf(LatencySQL, e.a.db), unix(w), unix(w), unix(w), unix(w), unix(b), unix(e.end))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []finding
	for rows.Next() {
		var vendor, model string
		var nRecent, nBase uint64
		var p95Recent, p95Base float64
		if err := rows.Scan(&vendor, &model, &nRecent, &nBase, &p95Recent, &p95Base); err != nil {
			return nil, err
		}
		minN := uint64(c.MinSamples)
		if nRecent < minN || nBase < minN || !(p95Base > 0) {
			continue
		}
		th := c.Factor * p95Base
		if !(p95Recent > th) {
			continue
		}
		f := e.finding(KindLatencyRegression, vendor+"/"+model, SeverityWarning, p95Recent, th, w, e.end, false,
			fmt.Sprintf("%s/%s p95 latency %.0f ms over the last %s is above %g× its baseline p95 of %.0f ms (previous %s)",
				vendor, model, p95Recent, c.Window.Duration, c.Factor, p95Base, c.Baseline.Duration))
		f.vendor, f.model = vendor, model
		out = append(out, f)
	}
	return out, rows.Err()
}

// UnknownModelSQL is the unpriced attempts per vendor/model over [?, ?).
const UnknownModelSQL = "SELECT vendor, model, toUInt64(count()) AS n FROM %s.attempts FINAL " +
	"WHERE ts >= toDateTime(?) AND ts < toDateTime(?) AND price_known = 0 GROUP BY vendor, model"

func (e *eval) unknownModel(ctx context.Context) ([]finding, error) {
	c := e.cfg.UnknownModel
	if c.Disabled {
		return nil, nil
	}
	from := e.end.Add(-c.Window.Duration)
	rows, err := e.a.d.CH.Query(ctx, fmt.Sprintf(UnknownModelSQL, e.a.db), unix(from), unix(e.end))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []finding
	for rows.Next() {
		var vendor, model string
		var n uint64
		if err := rows.Scan(&vendor, &model, &n); err != nil {
			return nil, err
		}
		if n == 0 {
			continue
		}
		f := e.finding(KindUnknownModel, vendor+"/"+model, SeverityWarning, float64(n), 0, from, e.end, false,
			fmt.Sprintf("%d attempt(s) of %s/%s in the last %s have no catalog price: their cost is unknown; add the model to the policy catalog",
				n, vendor, model, c.Window.Duration))
		f.vendor, f.model = vendor, model
		out = append(out, f)
	}
	return out, rows.Err()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
