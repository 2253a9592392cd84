package policy

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

var alertTenantRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Alerts holds the thresholds of the operational alerts evaluated by the
// ledger's alerter (services/ledger/alerts) and published on
// llm.alerts.<kind>. Zero values take the defaults below, applied by
// validate; see docs/alerts.md.
type Alerts struct {
	// DailySpend alerts (kind daily_spend) when a UTC day's spend goes over
	// a threshold, per tenant and overall.
	DailySpend DailySpendAlert `yaml:"daily_spend" json:"daily_spend"`
	// VendorErrorRate alerts (kind vendor_error_rate) when a vendor's
	// share of failed attempts over Window is above Threshold.
	VendorErrorRate VendorErrorRateAlert `yaml:"vendor_error_rate" json:"vendor_error_rate"`
	// LatencyRegression alerts (kind latency_regression) when a
	// vendor/model's p95 latency over Window is above Factor × its p95 over
	// the Baseline before that window.
	LatencyRegression LatencyRegressionAlert `yaml:"latency_regression" json:"latency_regression"`
	// UnknownModel alerts (kind unknown_model) when attempts of a model
	// missing from the catalog (price_known = 0) were stored within Window.
	UnknownModel UnknownModelAlert `yaml:"unknown_model" json:"unknown_model"`

	// BudgetUSDPerDay and BudgetUSDPerMonth are tenants' budgets in USD per
	// UTC day and calendar month (UTC), keyed by tenant. Crossing each of
	// BudgetLevels of a budget alerts once per period (kind budget).
	BudgetUSDPerDay   map[string]float64 `yaml:"budget_usd_per_day" json:"budget_usd_per_day,omitempty"`
	BudgetUSDPerMonth map[string]float64 `yaml:"budget_usd_per_month" json:"budget_usd_per_month,omitempty"`
	// BudgetLevels are the fractions of a budget that alert when reached
	// (default 0.8 and 1.0), ascending.
	BudgetLevels []float64 `yaml:"budget_levels" json:"budget_levels"`
}

// DailySpendAlert is the daily spend threshold. A zero threshold is off.
type DailySpendAlert struct {
	// TotalUSD is the threshold of all tenants together.
	TotalUSD float64 `yaml:"total_usd" json:"total_usd"`
	// PerTenantUSD applies to every tenant not listed in TenantUSD.
	PerTenantUSD float64 `yaml:"per_tenant_usd" json:"per_tenant_usd"`
	// TenantUSD overrides PerTenantUSD for named tenants.
	TenantUSD map[string]float64 `yaml:"tenant_usd" json:"tenant_usd,omitempty"`
}

// TenantThreshold is the daily spend threshold of tenant (0: none).
func (d DailySpendAlert) TenantThreshold(tenant string) float64 {
	if v, ok := d.TenantUSD[tenant]; ok {
		return v
	}
	return d.PerTenantUSD
}

// VendorErrorRateAlert is the per-vendor error-rate threshold.
type VendorErrorRateAlert struct {
	Disabled bool `yaml:"disabled" json:"disabled"`
	// Threshold is the failed share of attempts above which it alerts
	// (default 0.05).
	Threshold float64 `yaml:"threshold" json:"threshold"`
	// Window is the sliding window (default 5m).
	Window Duration `yaml:"window" json:"window"`
	// MinAttempts is the smallest sample that can alert (default 20).
	MinAttempts int `yaml:"min_attempts" json:"min_attempts"`
}

// LatencyRegressionAlert compares a vendor/model's recent p95 latency with
// its own baseline.
type LatencyRegressionAlert struct {
	Disabled bool `yaml:"disabled" json:"disabled"`
	// Factor: it alerts when p95(window) > Factor × p95(baseline)
	// (default 2).
	Factor float64 `yaml:"factor" json:"factor"`
	// Window is the recent window (default 5m).
	Window Duration `yaml:"window" json:"window"`
	// Baseline is the span before Window the baseline p95 is taken over
	// (default 24h).
	Baseline Duration `yaml:"baseline" json:"baseline"`
	// MinSamples is the fewest successful attempts both the window and the
	// baseline need (default 20).
	MinSamples int `yaml:"min_samples" json:"min_samples"`
}

// UnknownModelAlert reports attempts of models missing from the catalog.
type UnknownModelAlert struct {
	Disabled bool `yaml:"disabled" json:"disabled"`
	// Window is how far back unpriced attempts are looked for (default
	// 1h); the alert re-arms once a window passes without any.
	Window Duration `yaml:"window" json:"window"`
}

// Alert defaults.
const (
	DefaultErrorRateThreshold   = 0.05
	DefaultErrorRateWindow      = 5 * time.Minute
	DefaultErrorRateMinAttempts = 20
	DefaultLatencyFactor        = 2.0
	DefaultLatencyWindow        = 5 * time.Minute
	DefaultLatencyBaseline      = 24 * time.Hour
	DefaultLatencyMinSamples    = 20
	DefaultUnknownModelWindow   = time.Hour
)

// DefaultBudgetLevels are the budget fractions that alert by default.
var DefaultBudgetLevels = []float64{0.8, 1.0}

// validate applies the defaults and reports every problem at once.
func (a *Alerts) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	d := &a.DailySpend
	if d.TotalUSD < 0 || d.PerTenantUSD < 0 {
		bad("alerts.daily_spend: total_usd and per_tenant_usd must not be negative")
	}
	for _, t := range sortedKeys(d.TenantUSD) {
		if d.TenantUSD[t] < 0 {
			bad("alerts.daily_spend.tenant_usd.%s: must not be negative", t)
		}
	}

	e := &a.VendorErrorRate
	if e.Threshold == 0 {
		e.Threshold = DefaultErrorRateThreshold
	}
	if e.Window.Duration == 0 {
		e.Window.Duration = DefaultErrorRateWindow
	}
	if e.MinAttempts == 0 {
		e.MinAttempts = DefaultErrorRateMinAttempts
	}
	if e.Threshold < 0 || e.Threshold >= 1 {
		bad("alerts.vendor_error_rate.threshold: %g is not in (0, 1)", e.Threshold)
	}
	if e.Window.Duration < time.Second {
		bad("alerts.vendor_error_rate.window: %s is below 1s", e.Window.Duration)
	}
	if e.MinAttempts < 1 {
		bad("alerts.vendor_error_rate.min_attempts: %d is below 1", e.MinAttempts)
	}

	l := &a.LatencyRegression
	if l.Factor == 0 {
		l.Factor = DefaultLatencyFactor
	}
	if l.Window.Duration == 0 {
		l.Window.Duration = DefaultLatencyWindow
	}
	if l.Baseline.Duration == 0 {
		l.Baseline.Duration = DefaultLatencyBaseline
	}
	if l.MinSamples == 0 {
		l.MinSamples = DefaultLatencyMinSamples
	}
	if l.Factor <= 1 {
		bad("alerts.latency_regression.factor: %g must be above 1", l.Factor)
	}
	if l.Window.Duration < time.Second {
		bad("alerts.latency_regression.window: %s is below 1s", l.Window.Duration)
	}
	if l.Baseline.Duration < l.Window.Duration {
		bad("alerts.latency_regression.baseline: %s is shorter than the window %s", l.Baseline.Duration, l.Window.Duration)
	}
	if l.MinSamples < 1 {
		bad("alerts.latency_regression.min_samples: %d is below 1", l.MinSamples)
	}

	u := &a.UnknownModel
	if u.Window.Duration == 0 {
		u.Window.Duration = DefaultUnknownModelWindow
	}
	if u.Window.Duration < time.Second {
		bad("alerts.unknown_model.window: %s is below 1s", u.Window.Duration)
	}

	for _, b := range []struct {
		name    string
		budgets map[string]float64
	}{{"budget_usd_per_day", a.BudgetUSDPerDay}, {"budget_usd_per_month", a.BudgetUSDPerMonth}} {
		for _, t := range sortedKeys(b.budgets) {
			if !alertTenantRE.MatchString(t) {
				bad("alerts.%s: %q is not a tenant name ([A-Za-z0-9_-], at most 64)", b.name, t)
			}
			if b.budgets[t] <= 0 {
				bad("alerts.%s.%s: %g must be positive", b.name, t, b.budgets[t])
			}
		}
	}
	if len(a.BudgetLevels) == 0 {
		a.BudgetLevels = append([]float64(nil), DefaultBudgetLevels...)
	}
	for i, lv := range a.BudgetLevels {
		if lv <= 0 || lv > 10 {
			bad("alerts.budget_levels[%d]: %g is not in (0, 10]", i, lv)
		}
		if i > 0 && lv <= a.BudgetLevels[i-1] {
			bad("alerts.budget_levels: must be strictly ascending")
		}
	}
	return errors.Join(errs...)
}
