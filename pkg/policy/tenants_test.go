package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

// tenantsBase is a valid policy without tenants; cases append a tenants
// section.
const tenantsBase = `
default_route: main
vendors:
  openai: {kind: openai, base_url: "https://api.openai.com/v1"}
models:
  - {vendor: openai, model: big, price: {input_per_mtok: 10, output_per_mtok: 30}}
  - {vendor: openai, model: small, price: {input_per_mtok: 0.1, output_per_mtok: 0.4}}
routes:
  - name: main
    chain: [{vendor: openai, model: big}]
  - name: cheap
    chain: [{vendor: openai, model: small}]
`

func TestTenants(t *testing.T) {
	tests := []struct {
		name    string
		tenants string
		want    []string // substrings of the error; none means valid
	}{
		{name: "no tenants"},
		{
			name: "full tenant",
			tenants: `
  acme:
    tier: enterprise
    residency: [eu]
    budget: {usd_per_day: 10, usd_per_month: 200.5, requests_per_day: 1000, requests_per_month: 20000}
    on_exceeded: downgrade
    downgrade_route: cheap
`,
		},
		{name: "unlimited tenant", tenants: "  free: {tier: free}\n"},
		{name: "reject with a budget", tenants: "  t: {budget: {usd_per_day: 1}, on_exceeded: reject}\n"},
		{
			name:    "negative limits",
			tenants: "  t: {budget: {usd_per_day: -1, usd_per_month: -2, requests_per_day: -3, requests_per_month: -4}}\n",
			want: []string{"tenants.t.budget.usd_per_day", "tenants.t.budget.usd_per_month",
				"tenants.t.budget.requests_per_day", "tenants.t.budget.requests_per_month"},
		},
		{name: "NaN budget", tenants: "  t: {budget: {usd_per_day: .nan}}\n", want: []string{"tenants.t.budget.usd_per_day"}},
		{name: "infinite budget", tenants: "  t: {budget: {usd_per_month: .inf}}\n", want: []string{"tenants.t.budget.usd_per_month"}},
		{name: "unknown on_exceeded", tenants: "  t: {budget: {usd_per_day: 1}, on_exceeded: shrug}\n", want: []string{`tenants.t.on_exceeded: "shrug"`}},
		{name: "downgrade without route", tenants: "  t: {budget: {usd_per_day: 1}, on_exceeded: downgrade}\n", want: []string{"tenants.t.downgrade_route: required"}},
		{
			name:    "unknown downgrade route",
			tenants: "  t: {budget: {usd_per_day: 1}, on_exceeded: downgrade, downgrade_route: nowhere}\n",
			want:    []string{`tenants.t.downgrade_route: route "nowhere" is not defined`},
		},
		{name: "route without downgrade", tenants: "  t: {budget: {usd_per_day: 1}, downgrade_route: cheap}\n", want: []string{"only used with downgrade"}},
		{name: "downgrade without budget", tenants: "  t: {on_exceeded: downgrade, downgrade_route: cheap}\n", want: []string{"never apply"}},
		{name: "bad residency", tenants: "  t: {residency: [eu, \"\", eu]}\n", want: []string{"residency[1]: must not be empty", `residency[2]: "eu" is listed twice`}},
		{name: "empty name", tenants: "  \"\": {tier: x}\n", want: []string{"tenant name must not be empty"}},
		{name: "unknown key", tenants: "  t: {budget: {usd_per_week: 1}}\n", want: []string{"usd_per_week"}},
		{
			name: "every problem of every tenant at once",
			tenants: `
  a: {budget: {usd_per_day: -1}, on_exceeded: downgrade, downgrade_route: ghost}
  b: {budget: {requests_per_month: -5}, on_exceeded: nope}
`,
			want: []string{"tenants.a.budget.usd_per_day", `route "ghost"`, "tenants.b.budget.requests_per_month", "tenants.b.on_exceeded"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tenantsBase
			if tt.tenants != "" {
				src += "tenants:\n" + tt.tenants
			}
			p, err := Parse([]byte(src))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				for name, ten := range p.Tenants {
					if ten.OnExceeded == "" {
						t.Errorf("tenant %s: on_exceeded default not applied", name)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("Parse accepted the policy")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestTenantLookup(t *testing.T) {
	p, err := Parse([]byte(tenantsBase + `tenants:
  acme:
    tier: enterprise
    residency: [eu, uk]
    budget: {usd_per_day: 10, requests_per_month: 5000}
    on_exceeded: downgrade
    downgrade_route: cheap
  beta: {budget: {usd_per_month: 50}}
`))
	if err != nil {
		t.Fatal(err)
	}
	acme, ok := p.Tenant("acme")
	want := Budget{USDPerDay: 10, RequestsPerMonth: 5000}
	if !ok || acme.Tier != "enterprise" || acme.Budget != want || acme.OnExceeded != OnExceededDowngrade ||
		acme.DowngradeRoute != "cheap" || len(acme.Residency) != 2 || acme.Budget.Unlimited() {
		t.Fatalf("acme = %+v, %v", acme, ok)
	}
	if beta, _ := p.Tenant("beta"); beta.OnExceeded != OnExceededReject {
		t.Fatalf("beta on_exceeded = %q, want the reject default", beta.OnExceeded)
	}
	// A tenant absent from the policy is unlimited.
	ghost, ok := p.Tenant("ghost")
	if ok || !ghost.Budget.Unlimited() || ghost.OnExceeded != OnExceededReject {
		t.Fatalf("absent tenant = %+v, %v", ghost, ok)
	}
	var nilPolicy *Policy
	if tn, ok := nilPolicy.Tenant("x"); ok || !tn.Budget.Unlimited() {
		t.Fatalf("nil policy tenant = %+v, %v", tn, ok)
	}

	// The tenants survive Marshal and JSON.
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of marshalled policy: %v\n%s", err, out)
	}
	if a2, _ := p2.Tenant("acme"); a2.Budget != want || a2.DowngradeRoute != "cheap" {
		t.Fatalf("after YAML round trip: %+v", a2)
	}
	js, err := json.Marshal(p.Tenants["acme"])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"usd_per_day":10`, `"requests_per_month":5000`, `"on_exceeded":"downgrade"`, `"downgrade_route":"cheap"`, `"residency":["eu","uk"]`} {
		if !strings.Contains(string(js), k) {
			t.Errorf("JSON %s lacks %s", js, k)
		}
	}
}
