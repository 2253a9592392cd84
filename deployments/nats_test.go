package deployments

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestLeafNodeConf parses nats/leaf.conf with the server's own parser: a
// leaf of every central node on the port cluster.conf opens for leaf
// nodes, with no JetStream of its own (so JetStream requests reach the
// central cluster), listening on loopback for the site's executors.
func TestLeafNodeConf(t *testing.T) {
	t.Setenv("NATS_STORE_DIR", t.TempDir())
	hub, err := server.ProcessConfigFile("nats/nats-1.conf")
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
	// A leaf without JetStream answers $JS.API itself: its clients' API
	// requests must be mapped to the central cluster's domain.
	if hub.JetStreamDomain == "" {
		t.Fatal("cluster.conf names no JetStream domain for leaf nodes to reach")
	}
	raw, err := os.ReadFile("nats/leaf.conf")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"$JS.API.>": "$JS.%s.API.>"`, hub.JetStreamDomain); !strings.Contains(string(raw), want) {
		t.Errorf("leaf.conf does not map the JetStream API to the central domain (%s)", want)
	}
}
