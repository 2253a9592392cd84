package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/services/switchyard/cli"
)

// runCLI runs a switchyard command beside the test's `up`: its data
// directory is where the CLI finds the operator's credentials.
func (e *env) runCLI(env map[string]string, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	e.t.Setenv("SWITCHYARD_NATS_URL", e.sys.NATSURL)
	e.t.Setenv("SWITCHYARD_DATA_DIR", filepath.Dir(e.credsDir()))
	e.t.Setenv("SWITCHYARD_NATS_CREDS", "")
	for k, v := range env {
		e.t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	code = cli.Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestTenantCredentialsLifecycle: `tenants create --out` writes a 0600
// credentials file nats.go accepts while the system runs; `tenants ls`
// lists it; `tenants revoke` makes the server refuse it at once.
func TestTenantCredentialsLifecycle(t *testing.T) {
	e := start(t, withAuth)
	// Everything `up` generated is its owner's alone.
	dataDir := filepath.Dir(e.credsDir())
	for _, dir := range []string{"auth", "creds"} {
		err := filepath.Walk(filepath.Join(dataDir, dir), func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			want := os.FileMode(0o600)
			if fi.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "acme.creds")
	if code, out, errOut := e.runCLI(nil, "tenants", "create", e.tenant, "--out", file); code != 0 || !strings.Contains(out, "wrote "+file) {
		t.Fatalf("tenants create: exit %d: %s%s", code, out, errOut)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file %v mode %v, want 0600", err, st.Mode())
	}
	nc, err := nats.Connect(e.sys.NATSURL, nats.UserCredentials(file))
	if err != nil {
		t.Fatalf("nats.UserCredentials(%s): %v", file, err)
	}
	defer nc.Close()
	if code, out, _ := e.runCLI(nil, "tenants", "ls"); code != 0 || !strings.Contains(out, e.tenant) {
		t.Fatalf("tenants ls: exit %d: %s", code, out)
	}
	if code, out, errOut := e.runCLI(nil, "tenants", "revoke", e.tenant); code != 0 || !strings.Contains(out, "refuses them now") {
		t.Fatalf("tenants revoke: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, 5*time.Second, func() bool { return nc.IsClosed() || nc.Status() != nats.CONNECTED })
	if _, err := nats.Connect(e.sys.NATSURL, nats.UserCredentials(file)); err == nil || !natsx.IsAuthError(err) {
		t.Fatalf("revoked credentials connect again: %v", err)
	}
	if code, _, errOut := e.runCLI(nil, "tenants", "create", "no/slash", "--out", file); code == 0 || !strings.Contains(errOut, "tenant") {
		t.Fatalf("bad tenant name accepted: exit %d %s", code, errOut)
	}
}

// TestPolicyAuditFromCredentials: who applied a policy version is the user
// of the credentials, whatever -by says; a tenant cannot apply one at all.
func TestPolicyAuditFromCredentials(t *testing.T) {
	e := start(t, withAuth)
	alice := filepath.Join(t.TempDir(), "alice.creds")
	if code, out, errOut := e.runCLI(nil, "operators", "create", "alice", "--out", alice); code != 0 {
		t.Fatalf("operators create: exit %d: %s%s", code, out, errOut)
	}
	tenant := e.tenantCreds(e.tenant)
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		author string // "" when nothing is applied
	}{
		{"up's operator credentials, found beside up", nil, nil, 0, "operator"},
		{"a person's own credentials", map[string]string{"SWITCHYARD_NATS_CREDS": alice}, nil, 0, "alice"},
		{"-by naming someone else", map[string]string{"SWITCHYARD_NATS_CREDS": alice}, []string{"-by", "mallory"}, 2, ""},
		{"a tenant's credentials", map[string]string{"SWITCHYARD_NATS_CREDS": tenant}, nil, 1, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := policy.OpenStore(context.Background(), e.sys.JS, "", e.sys.Log)
			if err != nil {
				t.Fatal(err)
			}
			hist, _ := before.History(context.Background())
			args := append([]string{"policy", "apply", testPolicy, "-m", "audit " + string(rune('a'+i))}, tc.args...)
			code, out, errOut := e.runCLI(tc.env, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tc.code, out, errOut)
			}
			after, _ := before.History(context.Background())
			if tc.author == "" {
				if len(after) != len(hist) {
					t.Fatalf("a version was applied: %d → %d", len(hist), len(after))
				}
				return
			}
			if len(after) != len(hist)+1 || after[len(after)-1].AppliedBy != tc.author {
				t.Fatalf("history %+v, want a new version by %s", after, tc.author)
			}
		})
	}
}

// TestServiceCredentialsRotation: `creds rotate gate` writes a new file in
// place and the server drops and refuses the old user; the new file
// connects. Restarting `up` keeps the files whose permissions are current.
func TestServiceCredentialsRotation(t *testing.T) {
	e := start(t, withAuth)
	file := filepath.Join(e.credsDir(), "gate.creds")
	oldCopy := filepath.Join(t.TempDir(), "gate-old.creds")
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldCopy, old, 0o600); err != nil {
		t.Fatal(err)
	}
	gate := e.dial("gate", oldCopy)
	if code, out, errOut := e.runCLI(nil, "creds", "rotate", "gate"); code != 0 || !strings.Contains(out, "refuses the old credentials") {
		t.Fatalf("creds rotate: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, 5*time.Second, func() bool { return gate.nc.Status() != nats.CONNECTED })
	if _, err := nats.Connect(e.sys.NATSURL, nats.UserCredentials(oldCopy)); err == nil || !natsx.IsAuthError(err) {
		t.Fatalf("the old gate credentials connect: %v", err)
	}
	nc, err := nats.Connect(e.sys.NATSURL, nats.UserCredentials(file))
	if err != nil {
		t.Fatalf("the new gate credentials: %v", err)
	}
	nc.Close()
	if code, _, _ := e.runCLI(nil, "creds", "rotate", "operator"); code == 0 {
		t.Fatal("rotating up's own operator user was accepted")
	}
}
