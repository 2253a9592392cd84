package cli

import (
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// TestProvisionExitCodes: `switchyard provision` exits 0 with its listing
// against a server (twice: the second run changes nothing), 2 on a
// command-line mistake and 1 with a message on a setting it cannot use.
func TestProvisionExitCodes(t *testing.T) {
	url := testkit.Server(t)
	t.Setenv("SWITCHYARD_POLICY", "../../../deployments/policy.yaml")
	t.Setenv("SWITCHYARD_LOG_LEVEL", "warn")
	for _, tc := range []struct {
		name, natsURL string
		args          []string
		code          int
		want          string // in stdout for 0, in stderr otherwise
	}{
		{"provisions", url, nil, 0, "LLM_PIPELINE/exec-openai"},
		{"again: create or update", url, nil, 0, "provisioned: "},
		{"only some vendors", url, []string{"-vendors", "openai"}, 0, "LLM_REQUESTS/intake"},
		{"no NATS URL", "", nil, 1, "SWITCHYARD_NATS_URL: required"},
		{"unknown vendor", url, []string{"-vendors", "acme"}, 1, `vendor "acme" is not in the policy`},
		{"stray argument", url, []string{"now"}, 2, `unexpected argument "now"`},
		{"unknown flag", url, []string{"-replicas", "3"}, 2, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SWITCHYARD_NATS_URL", tc.natsURL)
			code, stdout, stderr := run(t, append([]string{"provision"}, tc.args...)...)
			got := stderr
			if tc.code == 0 {
				got = stdout
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Errorf("exit %d, want %d with %q; stdout:\n%s\nstderr:\n%s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
}
