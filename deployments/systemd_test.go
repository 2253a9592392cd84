package deployments

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// unitOptions parses a unit file with go-systemd's parser and returns
// its options by section and name.
func unitOptions(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]map[string][]string{}
	for _, o := range opts {
		if out[o.Section] == nil {
			out[o.Section] = map[string][]string{}
		}
		out[o.Section][o.Name] = append(out[o.Section][o.Name], o.Value)
	}
	return out
}

// knownDirectives are the directives these units may use, by section
// (systemd.unit(5), systemd.service(5), systemd.exec(5), systemd.kill(5)):
// a misspelt one is ignored by systemd with only a log line.
var knownDirectives = map[string][]string{
	"Unit":    {"Description", "Documentation", "Wants", "After", "Requires", "ConditionPathExists"},
	"Service": {"Type", "RemainAfterExit", "User", "Group", "EnvironmentFile", "Environment", "ExecStart", "ExecReload", "KillSignal", "TimeoutStopSec", "Restart", "RestartSec", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "StateDirectory", "LimitNOFILE"},
	"Install": {"WantedBy"},
}

// envFile reads KEY=VALUE lines as systemd's EnvironmentFile= does.
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			t.Errorf("%s: %q is not KEY=VALUE", path, line)
			continue
		}
		out[k] = v
	}
	return out
}

// TestSystemdUnits parses each unit, checks its directives, and for each
// instance a VM runs (every service, every vendor's executor) merges the
// environment files it names in order and checks the result against what
// the binary reads. Every service on one machine gets its own HTTP port.
// The oneshot provision unit runs with the operator's credentials, only
// where they are, and every service unit orders after it.
func TestSystemdUnits(t *testing.T) {
	pol := loadPolicy(t, "policy.yaml")
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) != 4 {
		t.Fatalf("units %v", units)
	}
	const provisionUnit = "switchyard-provision.service"
	instances := map[string][]string{
		"switchyard@.service":          {"intake", "router", "gate", "ledger", "edge"},
		"switchyard-executor@.service": sortedKeys(pol.Vendors),
		"nats-server.service":          {""},
		provisionUnit:                  {""},
	}
	httpPorts := map[string]string{}
	usedFiles := map[string]bool{}
	for _, path := range units {
		opts := unitOptions(t, path)
		for section, names := range opts {
			for name := range names {
				if !strings.HasPrefix(name, "X-") && !slices.Contains(knownDirectives[section], name) {
					t.Errorf("%s: [%s] %s is not a directive this test knows", path, section, name)
				}
			}
		}
		if len(opts["Service"]["ExecStart"]) != 1 || opts["Install"]["WantedBy"] == nil {
			t.Errorf("%s: want one ExecStart and an [Install] WantedBy", path)
			continue
		}
		for _, inst := range instances[filepath.Base(path)] {
			where := strings.Replace(filepath.Base(path), "@", "@"+inst, 1)
			exec := strings.Fields(strings.ReplaceAll(opts["Service"]["ExecStart"][0], "%i", inst))
			if filepath.Base(exec[0]) == "nats-server" {
				// -c /etc/nats/node.conf: one of deployments/nats's nodes.
				if len(exec) != 3 || exec[1] != "-c" || !strings.HasPrefix(exec[2], "/etc/nats/") {
					t.Errorf("%s: ExecStart %v", where, exec)
				}
				continue
			}
			binary, ok := commandBinary(exec)
			if !ok {
				t.Errorf("%s: ExecStart %v, want one binary (or switchyard provision)", where, exec)
				continue
			}
			env := map[string]string{}
			for _, ef := range opts["Service"]["EnvironmentFile"] {
				optional := strings.HasPrefix(ef, "-")
				name := filepath.Base(strings.ReplaceAll(strings.TrimPrefix(ef, "-"), "%i", inst))
				if !strings.HasPrefix(ef, "/etc/switchyard/") && !strings.HasPrefix(ef, "-/etc/switchyard/") {
					t.Errorf("%s: EnvironmentFile %s outside /etc/switchyard", where, ef)
				}
				local := filepath.Join("systemd", "env", name)
				if _, err := os.Stat(local); err != nil {
					if !optional {
						t.Errorf("%s: EnvironmentFile %s: no systemd/env/%s", where, ef, name)
					}
					continue
				}
				usedFiles[name] = true
				for k, v := range envFile(t, local) {
					env[k] = v
				}
			}
			for _, e := range opts["Service"]["Environment"] {
				k, v, _ := strings.Cut(strings.ReplaceAll(e, "%i", inst), "=")
				env[k] = v
			}
			for _, v := range pol.Vendors { // keys: replace-me in the example file
				if _, ok := env[v.APIKeyEnv]; ok {
					env[v.APIKeyEnv] = secretValue
				}
			}
			checkServiceEnv(t, where, binary, env, pol)
			if binary == provisionCmd {
				operator := "/etc/switchyard/creds/" + filepath.Base(natsauth.CredsFile("", natsauth.OperatorUser))
				if !slices.Equal(opts["Service"]["Type"], []string{"oneshot"}) || !slices.Equal(opts["Service"]["RemainAfterExit"], []string{"yes"}) ||
					env["SWITCHYARD_NATS_CREDS"] != operator || !slices.Equal(opts["Unit"]["ConditionPathExists"], []string{operator}) {
					t.Errorf("%s: Type %v, RemainAfterExit %v, credentials %s, condition %v; want a oneshot that stays active, run with %s where it exists",
						where, opts["Service"]["Type"], opts["Service"]["RemainAfterExit"], env["SWITCHYARD_NATS_CREDS"], opts["Unit"]["ConditionPathExists"], operator)
				}
				continue
			}
			for _, dep := range []string{"Wants", "After"} {
				if !slices.ContainsFunc(opts["Unit"][dep], func(v string) bool { return slices.Contains(strings.Fields(v), provisionUnit) }) {
					t.Errorf("%s: %s= does not name %s", where, dep, provisionUnit)
				}
			}
			p := port(t, where, env["SWITCHYARD_HTTP_ADDR"])
			if other, taken := httpPorts[p]; taken {
				t.Errorf("%s: HTTP port %s is also %s's", where, p, other)
			}
			httpPorts[p] = where
			if binary == "edge" {
				ep := port(t, where, env["SWITCHYARD_EDGE_ADDR"])
				if other, taken := httpPorts[ep]; taken {
					t.Errorf("%s: API port %s is also %s's", where, ep, other)
				}
				httpPorts[ep] = where + " API"
			}
		}
	}
	files, _ := filepath.Glob("systemd/env/*.env")
	for _, f := range files {
		if !usedFiles[filepath.Base(f)] {
			t.Errorf("%s is named by no unit", f)
		}
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Errorf("%q: %v", s, err)
	}
	return uint32(n)
}
