package policy

import (
	"os"
	"strings"
	"testing"
)

func TestExamplePolicyIsValid(t *testing.T) {
	b, err := os.ReadFile("../../deployments/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		facts Facts
		want  string
	}{
		{Facts{Task: "summarize"}, "summarize"},
		{Facts{Task: "chat"}, p.DefaultRoute},
		{Facts{Task: "chat", Sensitive: true}, "private"},
		{Facts{Task: "code"}, "code"},
	}
	for _, tt := range tests {
		if r := p.SelectRoute(tt.facts); r.Name != tt.want {
			t.Errorf("%+v routed to %s, want %s", tt.facts, r.Name, tt.want)
		}
	}
}

// A bad policy reports every problem at once.
func TestValidateListsEveryProblem(t *testing.T) {
	bad := `
default_route: nowhere
vendors:
  openai: {kind: openia, base_url: ""}
models:
  - {vendor: ghost, model: m1, price: {input_per_mtok: -1}}
routes:
  - name: r1
    strategy: telepathy
    on_quality_fail: shrug
    stream: {first_token_timeout: -1s, idle_timeout: -2s}
    chain: [{vendor: openai, model: missing}]
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("bad policy accepted")
	}
	for _, want := range []string{
		"vendors.openai.kind", "vendors.openai.base_url", "models[0] (m1): vendor \"ghost\"", "prices must not be negative",
		"routes.r1.strategy", "routes.r1.on_quality_fail", "routes.r1.chain[0]: model openai/missing", "default_route",
		"routes.r1.stream: first_token_timeout and idle_timeout must not be negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestUnknownKeyRefused(t *testing.T) {
	if _, err := Parse([]byte("default_route: a\nvendorz: {}\n")); err == nil || !strings.Contains(err.Error(), "vendorz") {
		t.Fatalf("unknown key not refused: %v", err)
	}
}

func TestMatchRules(t *testing.T) {
	yes := true
	tests := []struct {
		name  string
		match Match
		facts Facts
		fits  bool
	}{
		{"tier", Match{Tiers: []string{"gold"}}, Facts{Tier: "gold"}, true},
		{"other tier", Match{Tiers: []string{"gold"}}, Facts{Tier: "free"}, false},
		{"long prompts", Match{MinTokens: 8000}, Facts{Tokens: 9000}, true},
		{"short prompt", Match{MinTokens: 8000}, Facts{Tokens: 100}, false},
		{"max tokens", Match{MaxTokens: 500}, Facts{Tokens: 501}, false},
		{"all rules", Match{Tasks: []string{"extract"}, EndpointTags: []string{"a"}, Sensitive: &yes, Tiers: []string{"gold"}, MaxTokens: 1000},
			Facts{Task: "extract", EndpointTag: "a", Sensitive: true, Tier: "gold", Tokens: 10}, true},
		{"one rule fails", Match{Tasks: []string{"extract"}, Sensitive: &yes}, Facts{Task: "extract"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.match.fits(tt.facts); got != tt.fits {
				t.Fatalf("fits = %v", got)
			}
		})
	}
}
