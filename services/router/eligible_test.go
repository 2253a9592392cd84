package router

import (
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

func TestEligible(t *testing.T) {
	p, err := policy.Parse([]byte(`
default_route: r
vendors: {a: {kind: openai, base_url: http://a}}
models:
  - {vendor: a, model: eu, residency: [eu], context_window: 1000, capabilities: [json]}
  - {vendor: a, model: us, residency: [us], context_window: 100000, capabilities: [tools]}
routes: [{name: r, chain: [{vendor: a, model: eu}]}]
tenants:
  euco: {residency: [eu]}
`))
	if err != nil {
		t.Fatal(err)
	}
	json := &envelope.ResponseFormat{Type: "json_object"}
	tests := []struct {
		name   string
		model  string
		tenant string
		res    string
		tokens int
		format *envelope.ResponseFormat
		ok     bool
	}{
		{"no constraints", "us", "x", "", 10, nil, true},
		{"request residency matches", "eu", "x", "eu", 10, nil, true},
		{"request residency differs", "us", "x", "eu", 10, nil, false},
		{"tenant residency applies", "us", "euco", "", 10, nil, false},
		{"tenant residency matches", "eu", "euco", "", 10, nil, true},
		{"prompt over the context window", "eu", "x", "", 5000, nil, false},
		{"json needs the capability", "us", "x", "", 10, json, false},
		{"json capable", "eu", "x", "", 10, json, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &envelope.Work{Request: envelope.Request{Tenant: tt.tenant, ResponseFormat: tt.format}, Class: envelope.Classification{TokenEstimate: tt.tokens}}
			if tt.res != "" {
				w.Request.Policy = &envelope.RequestPolicy{Residency: tt.res}
			}
			if ok, why := eligible(p, w, envelope.Target{Vendor: "a", Model: tt.model}); ok != tt.ok {
				t.Fatalf("eligible = %v (%s), want %v", ok, why, tt.ok)
			}
		})
	}
}
