package deployments

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// natsConfWithAuth copies deployments/nats's files into a temp directory
// beside an auth.conf generated from fresh keys, as an operator would
// (`switchyard creds server-config`), and gives the nodes their store and
// resolver directories through the environment the files read.
func natsConfWithAuth(t *testing.T) (string, *natsauth.Authority) {
	t.Helper()
	dir := t.TempDir()
	auth, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.StageNodeConfs("nats", dir, "$NATS_RESOLVER_DIR"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_STORE_DIR", t.TempDir())
	t.Setenv("NATS_RESOLVER_DIR", t.TempDir())
	return dir, auth
}

// TestNodeConfsTrustSwitchyardOperator: every node includes the generated
// auth.conf (it does not start without one) and so trusts Switchyard's
// operator, names its system account, keeps account JWTs in a full
// directory resolver (nodes replicate pushed accounts) and accepts the
// CONNECT line of a user JWT (max_control_line).
func TestNodeConfsTrustSwitchyardOperator(t *testing.T) {
	dir, auth := natsConfWithAuth(t)
	op, err := auth.OperatorClaims()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("nats-%d.conf", i)
		t.Run(node, func(t *testing.T) {
			if _, err := server.ProcessConfigFile(filepath.Join("nats", node)); err == nil || !strings.Contains(err.Error(), "auth.conf") {
				t.Errorf("%s parses without an auth.conf beside it (err %v): authentication must be on by default", node, err)
			}
			o, err := server.ProcessConfigFile(filepath.Join(dir, node))
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				what string
				ok   bool
			}{
				{"trusts the operator", len(o.TrustedOperators) == 1 && o.TrustedOperators[0].Subject == op.Subject},
				{"system account SYS", o.SystemAccount == auth.SystemAccount()},
				{"full directory resolver", fmt.Sprintf("%T", o.AccountResolver) == "*server.DirAccResolver"},
				{"max_control_line 32KB", o.MaxControlLine == 32*1024},
				{"still the cluster node", o.ServerName == fmt.Sprintf("nats-%d", i) && o.JetStream && o.Cluster.Name == "switchyard"},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("want %s", c.what)
				}
			}
		})
	}
}

// TestLeafNodeConf parses nats/leaf.conf with the server's own parser: a
// leaf of every central node on the port cluster.conf opens for leaf
// nodes, with no JetStream of its own (so JetStream requests reach the
// central cluster), listening on loopback for the site's executors.
func TestLeafNodeConf(t *testing.T) {
	dir, _ := natsConfWithAuth(t)
	hub, err := server.ProcessConfigFile(filepath.Join(dir, "nats-1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := server.ProcessConfigFile("nats/leaf.conf")
	if err != nil {
		t.Fatal(err)
	}
	if hub.LeafNode.Port == 0 {
		t.Fatal("cluster.conf opens no leaf node port")
	}
	if leaf.JetStream || leaf.Host != "127.0.0.1" || len(leaf.LeafNode.Remotes) != 1 {
		t.Fatalf("leaf: JetStream %v, host %s, %d remotes", leaf.JetStream, leaf.Host, len(leaf.LeafNode.Remotes))
	}
	var hosts []string
	for _, u := range leaf.LeafNode.Remotes[0].URLs {
		if u.Port() != strconv.Itoa(hub.LeafNode.Port) {
			t.Errorf("leaf remote %s: the central nodes accept leaf nodes on %d", u, hub.LeafNode.Port)
		}
		hosts = append(hosts, u.Hostname())
	}
	if !slices.Equal(hosts, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Errorf("leaf remotes %v, want every central node", hosts)
	}
	// The central nodes authenticate leaf connections.
	if leaf.LeafNode.Remotes[0].Credentials == "" {
		t.Error("leaf remote names no credentials: the central cluster refuses it")
	}
	// A leaf without JetStream answers $JS.API itself: its clients' API
	// requests must be mapped to the central cluster's domain.
	if hub.JetStreamDomain != natsauth.LeafDomain {
		t.Fatalf("cluster.conf names JetStream domain %q, the leaf user's permissions (natsauth.LeafPermissions) are for %q", hub.JetStreamDomain, natsauth.LeafDomain)
	}
	// The site's executors present their own credentials to the leaf.
	if leaf.MaxControlLine < 32*1024 {
		t.Errorf("leaf max_control_line %d: a user JWT in the CONNECT line is longer", leaf.MaxControlLine)
	}
	raw, err := os.ReadFile("nats/leaf.conf")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"$JS.API.>": "$JS.%s.API.>"`, hub.JetStreamDomain); !strings.Contains(string(raw), want) {
		t.Errorf("leaf.conf does not map the JetStream API to the central domain (%s)", want)
	}
}
