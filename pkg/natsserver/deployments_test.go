package natsserver

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// The cluster configuration in deployments/nats parses with the server's
// own parser and describes one 3-node JetStream cluster: distinct node
// names, one cluster name, every node routing to all three, and the
// sync_interval its comment explains. (The cluster test in integration/
// runs nats-server on these files.)
func TestDeploymentClusterConfigs(t *testing.T) {
	wantRoutes := []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}
	t.Setenv("NATS_STORE_DIR", "/data/jetstream") // each node's volume
	t.Setenv("NATS_RESOLVER_DIR", t.TempDir())
	// The nodes include the auth.conf an operator generates beside them.
	dir := t.TempDir()
	auth, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.StageNodeConfs("../../deployments/nats", dir, "$NATS_RESOLVER_DIR"); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for i := 1; i <= 3; i++ {
		file := filepath.Join(dir, fmt.Sprintf("nats-%d.conf", i))
		t.Run(file, func(t *testing.T) {
			o, err := server.ProcessConfigFile(file)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			checks := []struct {
				what string
				ok   bool
			}{
				{"server_name nats-" + fmt.Sprint(i), o.ServerName == fmt.Sprintf("nats-%d", i)},
				{"jetstream enabled", o.JetStream},
				{"store_dir from NATS_STORE_DIR", o.StoreDir == "/data/jetstream"},
				{"sync_interval 10s", o.SyncInterval == 10*time.Second && !o.SyncAlways},
				{"client port 4222", o.Port == 4222},
				{"monitoring port 8222", o.HTTPPort == 8222},
				{"cluster switchyard on 6222", o.Cluster.Name == "switchyard" && o.Cluster.Port == 6222},
				{"lame duck set", o.LameDuckDuration > 0},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("want %s", c.what)
				}
			}
			var routes []string
			for _, r := range o.Routes {
				routes = append(routes, (&url.URL{Host: r.Host}).Host)
			}
			slices.Sort(routes)
			if !slices.Equal(routes, wantRoutes) {
				t.Errorf("routes %v, want %v", routes, wantRoutes)
			}
			names[o.ServerName] = true
		})
	}
	if len(names) != 3 {
		t.Errorf("node names %v: want 3 distinct", names)
	}
}
