package natsauth_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// startServer runs a nats-server from a configuration file's text.
func startServer(t *testing.T, dir, name, conf string) *server.Server {
	t.Helper()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	opts.NoLog, opts.NoSigs = os.Getenv("LEAFLOG") == "", true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("%s not ready", name)
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestLeafUserLeastPrivilege runs a central server trusting Switchyard's
// operator (the auth.conf of `creds server-config`, JetStream domain
// central) and deployments/nats/leaf.conf connected to it as the leaf user
// of openai, whose client acts as a remote openai executor (with its own
// credentials' inbox). The leaf takes openai's work and its results reach
// the center; it cannot publish a reply to a tenant, take gemini's work,
// or publish where an executor may not.
func TestLeafUserLeastPrivilege(t *testing.T) {
	data, dir := t.TempDir(), t.TempDir()
	auth, err := natsauth.LoadOrCreate(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteServiceCreds([]string{"openai", "gemini"}); err != nil {
		t.Fatal(err)
	}
	include, err := auth.ServerConfig(filepath.Join(dir, "resolver"))
	if err != nil {
		t.Fatal(err)
	}
	leafPort := freePort(t)
	hub := startServer(t, dir, "hub.conf", fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q, domain: %s }\nleafnodes { listen: \"127.0.0.1:%d\" }\n%s",
		filepath.Join(dir, "js"), natsauth.LeafDomain, leafPort, include))

	conf, err := os.ReadFile("../../deployments/nats/leaf.conf")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(conf), `"/etc/nats/leaf.creds"`, strconv.Quote(natsauth.CredsFile(data, natsauth.LeafUser("openai"))))
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		text = strings.ReplaceAll(text, "nats-leaf://"+n+":7422", fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort))
	}
	text = strings.NewReplacer("listen: 127.0.0.1:4222", "listen: 127.0.0.1:-1", "http: 127.0.0.1:8222", "").Replace(text)
	leaf := startServer(t, dir, "leaf.conf", text)
	deadline := time.Now().Add(10 * time.Second)
	for hub.NumLeafNodes() != 1 || leaf.NumLeafNodes() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the leaf did not connect to the hub")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}

	connect := func(url, user string) *nats.Conn {
		opts, err := natsx.ClientAuth{Creds: natsauth.CredsFile(data, user)}.Options()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The center, as the operator: the work stream with both vendors'
	// consumers and one job for each, and a watch on what the leaf sends.
	center := connect(hub.ClientURL(), natsauth.OperatorUser)
	cjs, err := jetstream.New(center)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cjs.CreateStream(ctx, jetstream.StreamConfig{Name: "LLM_PIPELINE", Subjects: []string{"llm.exec.>", "llm.results"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"openai", "gemini"} {
		if _, err := cjs.CreateOrUpdateConsumer(ctx, "LLM_PIPELINE", jetstream.ConsumerConfig{Durable: "exec-" + v, FilterSubject: "llm.exec." + v, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		if _, err := cjs.Publish(ctx, "llm.exec."+v, []byte("work for "+v)); err != nil {
			t.Fatal(err)
		}
	}
	seen, err := center.SubscribeSync("llm.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := center.Flush(); err != nil {
		t.Fatal(err)
	}

	// The remote executor, at the leaf.
	site := connect(leaf.ClientURL(), natsauth.ServiceUser("executor", "openai"))
	sjs, err := jetstream.New(site)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(consumer string) (string, error) {
		c, err := sjs.Consumer(ctx, "LLM_PIPELINE", consumer)
		if err != nil {
			return "", err
		}
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return "", err
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				return "", err
			}
			return string(m.Data()), nil
		}
		return "", batch.Error()
	}
	if got, err := fetch("exec-openai"); got != "work for openai" {
		t.Fatalf("the leaf's executor took %q (%v) from exec-openai, want its work", got, err)
	}
	if got, _ := fetch("exec-gemini"); got != "" {
		t.Errorf("the leaf's executor of openai took gemini's work %q", got)
	}
	// Denied publishes first, then an allowed one on the same connection:
	// once the center sees the allowed one, the others would have arrived.
	for _, subj := range []string{"llm.replies.acme.r1", "llm.requests", "llm.exec.gemini"} {
		if err := site.Publish(subj, []byte("from the leaf")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sjs.Publish(ctx, "llm.results", []byte("result")); err != nil {
		t.Fatalf("the leaf's executor could not hand its result to the center: %v", err)
	}
	for {
		m, err := seen.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("the center never saw the leaf's result: %v", err)
		}
		if m.Subject == "llm.results" {
			break
		}
		if strings.HasPrefix(m.Subject, "llm.exec.") && string(m.Data) != "from the leaf" {
			continue // the center's own work
		}
		t.Errorf("the leaf published %s into the center", m.Subject)
	}
	info, err := cjs.Consumer(ctx, "LLM_PIPELINE", "exec-gemini")
	if err != nil {
		t.Fatal(err)
	}
	if ci := info.CachedInfo(); ci.NumPending != 1 || ci.NumAckPending != 0 {
		t.Errorf("gemini's consumer: %d pending, %d awaiting ack; want its one job untouched", ci.NumPending, ci.NumAckPending)
	}
}
