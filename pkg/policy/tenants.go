package policy

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// What a route does with a request of a tenant whose budget or quota is
// spent (Tenant.OnExceeded).
const (
	// OnExceededReject refuses the request (the default).
	OnExceededReject = "reject"
	// OnExceededDowngrade serves it on Tenant.DowngradeRoute instead.
	OnExceededDowngrade = "downgrade"
)

// Tenant is one customer of the gateway. A tenant absent from the policy is
// unlimited (see Policy.Tenant).
type Tenant struct {
	Tier string `yaml:"tier,omitempty" json:"tier,omitempty"`
	// Residency lists the regions the tenant's requests may be served in
	// (matched against Model.Residency); empty means anywhere.
	Residency []string `yaml:"residency,omitempty" json:"residency,omitempty"`
	// Budget bounds spend and request counts per UTC day and month.
	Budget Budget `yaml:"budget,omitempty" json:"budget,omitzero"`
	// OnExceeded is "reject" (default) or "downgrade".
	OnExceeded string `yaml:"on_exceeded,omitempty" json:"on_exceeded,omitempty"`
	// DowngradeRoute names the cheaper route used once the budget is spent
	// when OnExceeded is "downgrade". It must be a defined route.
	DowngradeRoute string `yaml:"downgrade_route,omitempty" json:"downgrade_route,omitempty"`
}

// Budget holds a tenant's limits per UTC calendar window. A zero field is
// unlimited; the zero Budget limits nothing.
type Budget struct {
	USDPerDay        float64 `yaml:"usd_per_day,omitempty" json:"usd_per_day,omitempty"`
	USDPerMonth      float64 `yaml:"usd_per_month,omitempty" json:"usd_per_month,omitempty"`
	RequestsPerDay   int     `yaml:"requests_per_day,omitempty" json:"requests_per_day,omitempty"`
	RequestsPerMonth int     `yaml:"requests_per_month,omitempty" json:"requests_per_month,omitempty"`
}

// Unlimited reports whether b limits nothing.
func (b Budget) Unlimited() bool { return b == Budget{} }

// Tenant returns the named tenant. A tenant absent from the policy is
// returned as the zero Tenant with OnExceeded "reject": it has no budget,
// so it is unlimited. ok says whether the policy lists it.
func (p *Policy) Tenant(name string) (t Tenant, ok bool) {
	if p != nil {
		t, ok = p.Tenants[name]
	}
	if t.OnExceeded == "" {
		t.OnExceeded = OnExceededReject
	}
	return t, ok
}

// validateTenants checks the tenants and fills in defaults. It runs after
// the routes are indexed, so downgrade routes can be resolved.
func (p *Policy) validateTenants() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	for _, name := range sortedKeys(p.Tenants) {
		t := p.Tenants[name]
		if strings.TrimSpace(name) == "" {
			bad("tenants[%q]: a tenant name must not be empty", name)
		}
		seen := make(map[string]bool, len(t.Residency))
		for i, r := range t.Residency {
			switch {
			case strings.TrimSpace(r) == "":
				bad("tenants.%s.residency[%d]: must not be empty", name, i)
			case seen[r]:
				bad("tenants.%s.residency[%d]: %q is listed twice", name, i, r)
			}
			seen[r] = true
		}

		b := t.Budget
		for _, f := range []struct {
			field string
			v     float64
		}{{"usd_per_day", b.USDPerDay}, {"usd_per_month", b.USDPerMonth}} {
			if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
				bad("tenants.%s.budget.%s: %v must be a finite amount >= 0 (0 is unlimited)", name, f.field, f.v)
			}
		}
		if b.RequestsPerDay < 0 {
			bad("tenants.%s.budget.requests_per_day: %d must not be negative (0 is unlimited)", name, b.RequestsPerDay)
		}
		if b.RequestsPerMonth < 0 {
			bad("tenants.%s.budget.requests_per_month: %d must not be negative (0 is unlimited)", name, b.RequestsPerMonth)
		}

		switch t.OnExceeded {
		case "":
			t.OnExceeded = OnExceededReject
		case OnExceededReject, OnExceededDowngrade:
		default:
			bad("tenants.%s.on_exceeded: %q is not one of reject, downgrade", name, t.OnExceeded)
		}
		switch {
		case t.OnExceeded == OnExceededDowngrade && t.DowngradeRoute == "":
			bad("tenants.%s.downgrade_route: required when on_exceeded is downgrade", name)
		case t.DowngradeRoute != "" && t.OnExceeded != OnExceededDowngrade:
			bad("tenants.%s.downgrade_route: set but on_exceeded is %q (it is only used with downgrade)", name, t.OnExceeded)
		case t.DowngradeRoute != "":
			if _, ok := p.routes[t.DowngradeRoute]; !ok {
				bad("tenants.%s.downgrade_route: route %q is not defined", name, t.DowngradeRoute)
			}
		}
		if t.OnExceeded == OnExceededDowngrade && b.Unlimited() {
			bad("tenants.%s.on_exceeded: downgrade is set but the tenant has no budget, so it would never apply", name)
		}
		p.Tenants[name] = t
	}
	return errors.Join(errs...)
}
