package deployments

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// TestComposeFile loads compose/compose.yaml with the compose-spec
// reference loader (the one docker compose uses), which validates it
// against the compose-spec JSON schema (an unknown or misspelt key fails),
// then checks each Switchyard service's environment against what its
// binary reads, the NATS nodes' configs and the published API port; and
// that the one-shot provision runs once, with the operator's credentials,
// before every service.
func TestComposeFile(t *testing.T) {
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  "compose",
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join("compose", "compose.yaml")}},
		// Interpolation from an empty shell: keys default to empty.
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("switchyard", true) })
	if err != nil {
		t.Fatal(err)
	}
	pol := loadPolicy(t, "policy.yaml") // the image's /etc/switchyard/policy.yaml
	executors := map[string]string{}
	var provision string
	var services []string
	var natsNodes []string
	for _, name := range sortedKeys(project.Services) {
		s := project.Services[name]
		where := "compose service " + name
		switch {
		case s.Image == "switchyard:dev":
			binary, ok := commandBinary(s.Command)
			if !ok {
				t.Errorf("%s: command %v, want one binary (or switchyard provision)", where, s.Command)
				continue
			}
			env := map[string]string{}
			for k, v := range s.Environment {
				if v == nil {
					t.Errorf("%s: %s has no value", where, k)
					continue
				}
				env[k] = *v
			}
			for _, v := range pol.Vendors {
				if _, ok := env[v.APIKeyEnv]; ok && env["SWITCHYARD_VENDOR"] != "" {
					env[v.APIKeyEnv] = secretValue // from the shell
				}
			}
			checkServiceEnv(t, where, binary, env, pol)
			if binary == provisionCmd {
				provision = name
				if s.Restart != "no" || env["SWITCHYARD_NATS_CREDS"] != "/etc/switchyard/creds/"+filepath.Base(natsauth.CredsFile("", natsauth.OperatorUser)) {
					t.Errorf("%s: restart %q with credentials %s, want a one-shot (restart: \"no\") with the operator's", where, s.Restart, env["SWITCHYARD_NATS_CREDS"])
				}
			} else {
				services = append(services, name)
			}
			// Least privilege: a service sees its own credentials only
			// (operator.creds only the provision one-shot), mounted where
			// SWITCHYARD_NATS_CREDS says.
			var creds []string
			for _, v := range s.Volumes {
				if strings.HasPrefix(v.Target, "/etc/switchyard/creds") {
					creds = append(creds, v.Source+" -> "+v.Target)
				}
			}
			own := env["SWITCHYARD_NATS_CREDS"]
			wantMount := filepath.Join(project.WorkingDir, "data", "creds", filepath.Base(own)) + " -> " + own
			if !slices.Equal(creds, []string{wantMount}) {
				t.Errorf("%s: credentials mounted %v, want only its own (%s)", where, creds, wantMount)
			}
			if binary == "executor" {
				executors[env["SWITCHYARD_VENDOR"]] = name
				if key := pol.Vendors[env["SWITCHYARD_VENDOR"]].APIKeyEnv; !strings.Contains(mustRead(t, "compose/compose.yaml"), key+": ${"+key) {
					t.Errorf("%s: %s is not taken from the shell", where, key)
				}
			}
			for _, u := range strings.Split(env["SWITCHYARD_NATS_URL"], ",") {
				host := strings.TrimSuffix(strings.TrimPrefix(u, "nats://"), ":4222")
				if _, ok := project.Services[host]; !ok || !strings.HasPrefix(host, "nats-") {
					t.Errorf("%s: NATS URL %s is not a NATS service of the file", where, u)
				}
			}
			if binary == "ledger" {
				host := strings.TrimSuffix(env["SWITCHYARD_CLICKHOUSE_ADDR"], ":9000")
				if _, ok := project.Services[host]; !ok {
					t.Errorf("%s: ClickHouse %s is not a service of the file", where, env["SWITCHYARD_CLICKHOUSE_ADDR"])
				}
			}
			if binary == "edge" {
				want := port(t, where, env["SWITCHYARD_EDGE_ADDR"])
				if !slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool { return p.Target == mustAtoi(t, want) }) {
					t.Errorf("%s: the API listens on %s, no published port targets it (%v)", where, want, s.Ports)
				}
			}
		case strings.HasPrefix(name, "nats-"):
			natsNodes = append(natsNodes, name)
			// -c /etc/nats/<name>.conf from ../nats mounted there.
			if !slices.Equal(s.Command, []string{"-c", "/etc/nats/" + name + ".conf"}) {
				t.Errorf("%s: command %v", where, s.Command)
			}
			mounted := false
			for _, v := range s.Volumes {
				if v.Target == "/etc/nats" {
					_, err := os.Stat(filepath.Join(v.Source, name+".conf"))
					mounted = err == nil
				}
			}
			if !mounted {
				t.Errorf("%s: deployments/nats/%s.conf is not mounted at /etc/nats", where, name)
			}
			if s.Environment["NATS_STORE_DIR"] == nil || !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Type == types.VolumeTypeVolume && strings.HasPrefix(*s.Environment["NATS_STORE_DIR"], v.Target)
			}) {
				t.Errorf("%s: the JetStream store (NATS_STORE_DIR) is not on a volume of its own", where)
			}
		}
	}
	if provision == "" {
		t.Errorf("no service runs %s: the services' users may not create the streams, buckets and consumers", provisionCmd)
	}
	for _, name := range services {
		if d, ok := project.Services[name].DependsOn[provision]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("compose service %s: does not wait for %s to complete successfully (%+v)", name, provision, d)
		}
	}
	if !slices.Equal(natsNodes, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Errorf("NATS services %v, want the three nodes of deployments/nats", natsNodes)
	}
	for vendor := range pol.Vendors {
		if executors[vendor] == "" {
			t.Errorf("vendor %s of the policy has no executor service", vendor)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
