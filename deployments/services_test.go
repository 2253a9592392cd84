// Package deployments holds no code: its tests check the deployment
// artefacts (compose, Kubernetes, systemd, NATS configs) offline against
// the types of the tools that read them and against what the Switchyard
// binaries actually read. It is a module of its own so that no service
// links Kubernetes, KEDA or compose.
package deployments

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/edge"
	"github.com/switchyard-llm/switchyard/services/executor"
	"github.com/switchyard-llm/switchyard/services/gate"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/router"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// binaries are the service binaries a deployment runs, each with the
// configuration struct its main() loads (svc.Main(name, cfg)).
var binaries = map[string]func() envcfg.Validator{
	"intake":   func() envcfg.Validator { return &intake.ServiceConfig{} },
	"router":   func() envcfg.Validator { return &router.ServiceConfig{} },
	"gate":     func() envcfg.Validator { return &gate.ServiceConfig{} },
	"executor": func() envcfg.Validator { return &executor.ServiceConfig{} },
	"ledger":   func() envcfg.Validator { return &ledger.ServiceConfig{} },
	"edge":     func() envcfg.Validator { return &edge.ServiceConfig{} },
	// The one-shot provisioning step reads `up`'s configuration.
	provisionCmd: func() envcfg.Validator { return &app.Config{} },
}

// provisionCmd is the one-shot step before the services: `switchyard
// provision` with the operator's credentials.
const provisionCmd = "switchyard provision"

// commandBinary is what a deployment's command runs: one service binary,
// or the switchyard CLI's provision (argv[0] may be a path).
func commandBinary(argv []string) (string, bool) {
	switch {
	case len(argv) == 1:
		return filepath.Base(argv[0]), true
	case len(argv) == 2 && filepath.Base(argv[0]) == "switchyard" && argv[1] == "provision":
		return provisionCmd, true
	}
	return "", false
}

// required are the variables a clustered deployment must set for every
// binary (the defaults are loopback-only and R1), and per binary.
var (
	requiredAll = []string{"SWITCHYARD_NATS_URL", "SWITCHYARD_NATS_REPLICAS", "SWITCHYARD_POLICY"}
	// requiredServing: every binary but the one-shot provision serves
	// /healthz.
	requiredServing = []string{"SWITCHYARD_HTTP_ADDR"}
	requiredFor     = map[string][]string{
		provisionCmd: {"SWITCHYARD_NATS_CREDS"}, // the operator's: a deployment runs NATS with authentication
		"executor":   {"SWITCHYARD_VENDOR"},
		"ledger":     {"SWITCHYARD_CLICKHOUSE_ADDR"},
		"edge":       {"SWITCHYARD_EDGE_ADDR"},
	}
)

// secretValue stands for a value a deployment takes from a secret.
const secretValue = "from-a-secret"

// loadPolicy reads a policy file the way every stage does.
func loadPolicy(t *testing.T, path string) *policy.Policy {
	t.Helper()
	pol, err := policy.Load(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pol
}

// checkServiceEnv checks the environment a deployment gives one process
// of binary: every variable is one the binary reads (its config struct,
// or for an executor its vendor's api_key_env in pol), the required ones
// are set, the vendor's key is set, and the binary's own config loader
// accepts the values (types, ranges, every problem at once).
func checkServiceEnv(t reporter, where, binary string, env map[string]string, pol *policy.Policy) {
	t.Helper()
	newCfg, ok := binaries[binary]
	if !ok {
		t.Errorf("%s: runs %q, not a Switchyard service binary (%v)", where, binary, sortedKeys(binaries))
		return
	}
	read := envcfg.Variables(newCfg())
	keyVars := map[string]bool{}
	if binary == "executor" {
		for _, v := range pol.Vendors {
			keyVars[v.APIKeyEnv] = true
		}
	}
	for name := range env {
		if !slices.Contains(read, name) && !keyVars[name] {
			t.Errorf("%s: sets %s, which %s does not read", where, name, binary)
		}
	}
	required := append(slices.Clone(requiredAll), requiredFor[binary]...)
	if binary != provisionCmd {
		required = append(required, requiredServing...)
	}
	for _, name := range required {
		if _, ok := env[name]; !ok {
			t.Errorf("%s: %s is not set", where, name)
		}
	}
	if binary == "executor" {
		vendor := env["SWITCHYARD_VENDOR"]
		v, ok := pol.Vendors[vendor]
		switch {
		case !ok:
			t.Errorf("%s: SWITCHYARD_VENDOR=%q is not a vendor of the policy", where, vendor)
		case v.APIKeyEnv != "" && env[v.APIKeyEnv] == "" && !strings.HasPrefix(env[v.APIKeyEnv], "${"):
			t.Errorf("%s: executor of %s without its key variable %s", where, vendor, v.APIKeyEnv)
		}
	}
	cfg := newCfg()
	if err := envcfg.Process(envcfg.LookupMap(env), cfg); err != nil {
		t.Errorf("%s: %s's configuration: %v", where, binary, err)
		return
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("%s: %s's configuration: %v", where, binary, err)
	}
}

// port is the port of a host:port address.
func port(t reporter, where, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, addr, err)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// splitDocs splits a multi-document YAML file.
func splitDocs(data string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+data, "\n---\n") {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestCheckServiceEnvCatches shows the env check fails on each kind of
// mistake it exists for.
func TestCheckServiceEnvCatches(t *testing.T) {
	pol := loadPolicy(t, "policy.yaml")
	good := map[string]string{"SWITCHYARD_NATS_URL": "nats://a:4222,nats://b:4222", "SWITCHYARD_NATS_REPLICAS": "3",
		"SWITCHYARD_POLICY": "/etc/switchyard/policy.yaml", "SWITCHYARD_HTTP_ADDR": "0.0.0.0:9090", "SWITCHYARD_VENDOR": "openai", "OPENAI_API_KEY": secretValue}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	provisionEnv := map[string]string{"SWITCHYARD_NATS_URL": "nats://a:4222,nats://b:4222", "SWITCHYARD_NATS_REPLICAS": "3",
		"SWITCHYARD_POLICY": "/etc/switchyard/policy.yaml", "SWITCHYARD_NATS_CREDS": "/etc/switchyard/creds/operator.creds"}
	without := func(m map[string]string, k string) map[string]string {
		out := map[string]string{}
		for a, b := range m {
			if a != k {
				out[a] = b
			}
		}
		return out
	}
	for _, tc := range []struct {
		name, binary string
		env          map[string]string
		wantErr      bool
	}{
		{"valid executor", "executor", good, false},
		{"misspelt variable", "executor", with("SWITCHYARD_EXECUTOR_ACKWAIT", "5s"), true},
		{"another service's variable", "executor", with("SWITCHYARD_EDGE_ADDR", ":8080"), true},
		{"unprefixed name", "executor", with("NATS_URL", "nats://a:4222"), true},
		{"bad value", "executor", with("SWITCHYARD_NATS_REPLICAS", "7"), true},
		{"missing required", "executor", with("SWITCHYARD_NATS_URL", ""), true},
		{"vendor not in policy", "executor", with("SWITCHYARD_VENDOR", "acme"), true},
		{"vendor key missing", "executor", with("OPENAI_API_KEY", ""), true},
		{"unknown binary", "switchboard", good, true},
		{"provision: no /healthz needed", provisionCmd, provisionEnv, false},
		{"provision without the operator's credentials", provisionCmd, without(provisionEnv, "SWITCHYARD_NATS_CREDS"), true},
		{"provision given an executor's variable", provisionCmd, with("SWITCHYARD_NATS_CREDS", "/etc/switchyard/creds/operator.creds"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			checkServiceEnv(rec, tc.name, tc.binary, tc.env, pol)
			if got := len(rec.errs) > 0; got != tc.wantErr {
				t.Errorf("errors %v, want some: %v", rec.errs, tc.wantErr)
			}
		})
	}
}

// reporter is what the checks report to: a *testing.T, or a recorder in
// the tests of the checks themselves.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// recorder collects the errors of a check run on purpose on bad input.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
