package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// TestCredsServerConfigRunsAServer: `creds server-config` on a fresh data
// directory writes an include a real nats-server starts from (JetStream
// on, as a cluster node) that accepts the service credentials it wrote
// beside the keys and refuses a connection without credentials; run again
// it keeps the keys (the same operator), so credentials stay valid.
func TestCredsServerConfigRunsAServer(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	auth := filepath.Join(t.TempDir(), "auth.conf")
	code, stdout, stderr := run(t, "creds", "server-config", "--data", data, "--out", auth, "--vendors", "openai,gemini")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	first, err := os.ReadFile(auth)
	if err != nil {
		t.Fatal(err)
	}
	// One command gives every file a cluster needs: the include above and
	// each service's credentials (the KEDA scalers' account key printed).
	for _, user := range []string{"intake", "router", "gate", "ledger", "edge", "executor-openai", "executor-gemini", natsauth.OperatorUser, "sys"} {
		if _, err := os.Stat(natsauth.CredsFile(data, user)); err != nil {
			t.Errorf("no credentials for %s: %v", user, err)
		}
	}
	keys, err := natsauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := natsauth.AccountSwitchyard + " account " + keys.SwitchyardAccount(); !strings.Contains(stdout, want) {
		t.Errorf("output %q does not name the account (%s)", stdout, want)
	}
	if fi, _ := os.Stat(auth); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", auth, fi.Mode().Perm())
	}
	if code, _, stderr := run(t, "creds", "server-config", "--data", data, "--out", auth); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	second, _ := os.ReadFile(auth)
	opLine := func(b []byte) string {
		return strings.SplitN(strings.SplitN(string(b), "operator: ", 2)[1], "\n", 2)[0]
	}
	if opLine(first) != opLine(second) {
		t.Error("a second run signed with another operator: the data directory's keys were not reused")
	}

	node := filepath.Join(filepath.Dir(auth), "node.conf")
	if err := os.WriteFile(node, []byte("jetstream { store_dir: \""+t.TempDir()+"\" }\ninclude ./auth.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_RESOLVER_DIR", t.TempDir())
	opts, err := server.ProcessConfigFile(node)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	for _, user := range []string{"intake", "executor-gemini", natsauth.OperatorUser} {
		copts, err := natsx.ClientAuth{Creds: natsauth.CredsFile(data, user)}.Options()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(s.ClientURL(), copts...)
		if err != nil {
			t.Errorf("%s: %v", user, err)
			continue
		}
		nc.Close()
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect()); err == nil || !natsx.IsAuthError(err) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("without credentials: %v, want an authorization error", err)
	}
}
