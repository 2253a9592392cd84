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
	if r := p.SelectRoute("summarize", "", false); r.Name != "summarize" {
		t.Fatalf("summarize task routed to %s", r.Name)
	}
	if r := p.SelectRoute("chat", "", false); r.Name != p.DefaultRoute {
		t.Fatalf("chat task routed to %s, want default", r.Name)
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
    chain: [{vendor: openai, model: missing}]
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("bad policy accepted")
	}
	for _, want := range []string{
		"vendors.openai.kind", "vendors.openai.base_url", "models[0] (m1): vendor \"ghost\"", "prices must not be negative",
		"routes.r1.strategy", "routes.r1.on_quality_fail", "routes.r1.chain[0]: model openai/missing", "default_route",
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
